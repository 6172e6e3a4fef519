"""Shared fixtures: fake clocks, real SQLite files, daemons started as subprocesses."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from tests.daemon_support import DaemonProcess
from tests.fakes import FakeClock
from tests.lock_support import REDIS_URL, delete_prefix, new_prefix, require_redis
from tests.pg_private import PrivatePostgres
from warmupd.state.sqlite import SqliteDatabase

# Property tests: in CI the same examples every run (derandomized, no example database), so a
# failure is reproducible from the log alone; locally random, with hypothesis's example database
# (.hypothesis/, not committed) replaying past failures first. No deadline: the machine is shared.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    async with SqliteDatabase(tmp_path / "warmupd.db") as database:
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


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL the test may stop and start (never the machine's); always removed."""
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_lock_config() -> Iterator[dict[str, Any]]:
    """The lock setup of daemons on PostgreSQL: the one switch for every such test.

    Redis under a fresh key prefix (deleted afterwards), so these daemons run FallbackLocks: the
    PostgreSQL lease first, then Redis. ``{}`` would leave the locks to PostgreSQL alone (the fleet
    test runs both).
    """
    require_redis()
    prefix = new_prefix()
    try:
        yield {"redis": {"url": REDIS_URL, "key_prefix": prefix}}
    finally:
        delete_prefix(prefix)
