"""Shared fixtures: fake clocks, real SQLite files, daemons started as subprocesses."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.daemon_support import DaemonProcess
from tests.fakes import FakeClock
from warmupd.db import Database


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with Database(tmp_path / "warmupd.db") as database:
        yield database


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """Daemons a test started; any still running at the end are SIGKILLed by pid."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.kill()


@pytest.fixture
def blackhole() -> Iterator[str]:
    """An "AI server" that accepts connections and never answers: items hang until cancelled."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    sock.close()
