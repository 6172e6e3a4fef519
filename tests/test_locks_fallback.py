"""FallbackLocks across two hosts (two SQLite files, one Redis) and SqliteLocks edge cases."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.lock_support import (
    REDIS_URL,
    FakeClock,
    PrivateRedis,
    delete_prefix,
    new_prefix,
    require_redis,
)
from warmupd.errors import ServiceUnavailable
from warmupd.locks.fallback import FallbackLocks
from warmupd.locks.redis import RedisLocks
from warmupd.locks.sqlite import SqliteLocks
from warmupd.models import Acquired, Held, Unavailable
from warmupd.state.sqlite import SqliteDatabase

KEY = "warmup:forecasts:lock"


@pytest.fixture
async def two_hosts(tmp_path: Path) -> AsyncIterator[tuple[FallbackLocks, FallbackLocks]]:
    """Two hosts: each its own SQLite file, both on the machine's Redis under a private prefix."""
    require_redis()
    prefix = new_prefix()
    clock = FakeClock()
    async with SqliteDatabase(tmp_path / "a.db") as db_a, SqliteDatabase(tmp_path / "b.db") as db_b:
        redis_a = RedisLocks(REDIS_URL, prefix, 2.0, clock, "host-a")
        redis_b = RedisLocks(REDIS_URL, prefix, 2.0, clock, "host-b")
        try:
            yield (
                FallbackLocks(redis_a, SqliteLocks(db_a, clock, "host-a"), "database"),
                FallbackLocks(redis_b, SqliteLocks(db_b, clock, "host-b"), "database"),
            )
        finally:
            await redis_a.close()
            await redis_b.close()
            await asyncio.to_thread(delete_prefix, prefix)


async def test_redis_excludes_across_hosts_and_frees_the_local_row(
    two_hosts: tuple[FallbackLocks, FallbackLocks],
) -> None:
    host_a, host_b = two_hosts
    got = await host_a.acquire(KEY, 5_000)
    assert isinstance(got, Acquired)
    assert got.lease.backend == "redis"
    assert isinstance(await host_b.acquire(KEY, 5_000), Held)
    # Host B's own SQLite lock was given back after Redis said held.
    local = await host_b._database.acquire(KEY, 5_000)
    assert isinstance(local, Acquired)
    await host_b._database.release(local.lease)

    assert await host_a.claim_fire("warmup-forecasts", 60_000, 3_600_000) is True
    assert await host_b.claim_fire("warmup-forecasts", 60_000, 3_600_000) is False
    assert await host_a.release(got.lease) is True
    assert isinstance(await host_b.acquire(KEY, 5_000), Acquired)


def test_unknown_policy_is_rejected(tmp_path: Path) -> None:
    clock = FakeClock()
    redis = RedisLocks(REDIS_URL, "x:", 1.0, clock, "n")
    with pytest.raises(ValueError, match="policy"):
        FallbackLocks(redis, SqliteLocks(SqliteDatabase(tmp_path / "x.db"), clock, "n"), "open")


async def test_redis_lease_needs_redis_to_renew_and_release(
    tmp_path: Path, db: SqliteDatabase
) -> None:
    server = PrivateRedis(tmp_path)
    server.start()
    clock = FakeClock()
    redis = RedisLocks(server.url, "t:", 0.3, clock, "n", command_timeout_s=0.3)
    fallback = FallbackLocks(redis, SqliteLocks(db, clock, "n"), "database")
    try:
        got = await fallback.acquire(KEY, 5_000)
        assert isinstance(got, Acquired)
        server.kill()
        with pytest.raises(ServiceUnavailable):
            await fallback.renew(got.lease)
        assert fallback.degraded
        with pytest.raises(ServiceUnavailable):
            await fallback.release(got.lease)
        # The SQLite side was released all the same: this host can take the lock degraded.
        again = await fallback.acquire(KEY, 5_000)
        assert isinstance(again, Acquired)
        assert again.lease.backend == "sqlite"
        assert await fallback.ping() is False
        server.start()
        assert await fallback.ping() is True
        assert not fallback.degraded
    finally:
        server.kill()
        await redis.close()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    async with SqliteDatabase(tmp_path / "warmupd.db") as database:
        yield database


async def test_sqlite_busy_is_unavailable_not_held(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    clock = FakeClock()
    async with SqliteDatabase(path, busy_timeout_ms=50) as db:
        locks = SqliteLocks(db, clock, "n")
        got = await locks.acquire(KEY, 5_000)
        assert isinstance(got, Acquired)
        # Another process sits on the write lock longer than busy_timeout.
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            assert await locks.acquire("warmup:other:lock", 5_000) == Unavailable("sqlite_busy")
            with pytest.raises(ServiceUnavailable):
                await locks.renew(got.lease)
            with pytest.raises(ServiceUnavailable):
                await locks.release(got.lease)
            with pytest.raises(ServiceUnavailable):
                await locks.claim_fire("job", 1, 1_000)
            with pytest.raises(ServiceUnavailable):
                await locks.purge_expired(clock.wall_ms())
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert await locks.renew(got.lease) is True


async def test_held_names_the_holder_and_purge_keeps_fences_rising(db: SqliteDatabase) -> None:
    clock = FakeClock()
    a, b = SqliteLocks(db, clock, "host-a:1:abc"), SqliteLocks(db, clock, "host-b:2:def")
    first = await a.acquire(KEY, 1_000)
    assert isinstance(first, Acquired)
    assert await b.acquire(KEY, 1_000) == Held("host-a:1:abc")
    assert await a.claim_fire("job", 1, 1_000) is True

    await clock.advance(2.0)  # lease and claim expired
    assert await a.purge_expired(clock.wall_ms()) == (1, 0)  # the greatest fence's row stays
    other = await a.acquire("warmup:other:lock", 1_000)
    assert isinstance(other, Acquired)
    await a.release(other.lease)
    assert await a.purge_expired(clock.wall_ms()) == (0, 1)
    again = await b.acquire(KEY, 1_000)
    assert isinstance(again, Acquired)
    assert again.lease.fence > other.lease.fence > first.lease.fence
