"""Shared fixtures: real SQLite files, the machine's Redis under a private key prefix."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.daemon_support import DaemonProcess
from tests.fakes import FakeClock
from warmupd.db import Database

REDIS_URL = os.environ.get("WARMUPD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with Database(tmp_path / "warmupd.db") as database:
        yield database


def redis_available() -> bool:
    """Whether the machine's Redis answers; under CI its absence is a failure, not a skip."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} is required under CI and did not answer")
        return False
    finally:
        client.close()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A private key prefix on the machine's Redis; its keys are deleted afterwards."""
    import redis

    if not redis_available():
        pytest.skip("no Redis on 127.0.0.1:6379")
    prefix = f"warmupd-test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


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
