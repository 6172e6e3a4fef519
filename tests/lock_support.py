"""Test support for the lock suites: a fake clock, Redis access rules and private redis-server."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis as redis_sync

from tests.fakes import FakeClock

__all__ = ["FakeClock"]

REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
ROOT = Path(__file__).resolve().parent.parent


async def wait_for_condition(
    predicate: Callable[[], bool | Awaitable[bool]], *, timeout_s: float = 10.0
) -> None:
    """Poll ``predicate`` until true; fail after ``timeout_s`` (a bound, not a timed assertion)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.01)


def require_redis(url: str = REDIS_URL) -> None:
    """Skip when the machine's Redis is unreachable — or fail, when env CI is set."""
    try:
        redis_sync.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
    except (redis_sync.RedisError, OSError) as exc:
        message = f"Redis at {url} unreachable: {type(exc).__name__}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def new_prefix() -> str:
    """A key prefix owned by one test."""
    return f"warmupd-test-{uuid.uuid4().hex[:12]}:"


def delete_prefix(prefix: str, url: str = REDIS_URL) -> None:
    """Delete only the keys under ``prefix``."""
    client = redis_sync.Redis.from_url(url, socket_timeout=2)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port_url() -> str:
    """A Redis URL on a loopback port nobody listens on (connection refused at once)."""
    return f"redis://127.0.0.1:{free_port()}/0"


class PrivateRedis:
    """A throw-away ``redis-server`` on a free loopback port, no persistence, killed by pid."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.dir = tmp_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.dir),
                "--maxmemory-policy", "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis_sync.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except (redis_sync.RedisError, OSError):
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL the server (by its pid) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


def worker_env() -> dict[str, str]:
    """Environment for spawned worker processes: this worktree first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env
