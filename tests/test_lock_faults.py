"""Faults (SPEC §5, §12): a killed holder, Redis dying or restarting empty, Redis down at acquire.

These use real time on purpose — a SIGKILLed process and a killed ``redis-server`` cannot be
driven by a fake clock — with short leases, and wait on conditions with generous bounds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.lock_support import (
    REDIS_URL,
    ROOT,
    PrivateRedis,
    delete_prefix,
    new_prefix,
    require_redis,
    worker_env,
)
from tests.pg_support import fresh_database
from warmupd.clock import SystemClock
from warmupd.errors import LockLost
from warmupd.locks import hold
from warmupd.locks.fallback import DatabaseLocks, FallbackLocks
from warmupd.locks.postgres import SERVER_NOW_MS, PostgresLocks
from warmupd.locks.redis import RedisLocks
from warmupd.locks.sqlite import SqliteLocks
from warmupd.models import Acquired, Held, Unavailable
from warmupd.state.postgres import PostgresDatabase
from warmupd.state.sqlite import SqliteDatabase

pytestmark = pytest.mark.slow

KEY = "warmup:forecasts:lock"
CLOCK = SystemClock()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server this test may kill and restart (not the machine's shared one)."""
    server = PrivateRedis(tmp_path)
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    async with SqliteDatabase(tmp_path / "warmupd.db") as database:
        yield database


def fast_redis_locks(url: str, prefix: str = "warmupd-test:") -> RedisLocks:
    # Short timeouts: a dead server is noticed in well under a second.
    return RedisLocks(url, prefix, 0.3, CLOCK, "node-test", command_timeout_s=0.3)


# ------------------------------------------------------------------ killed holder


@pytest.mark.parametrize(
    "backend", ["sqlite", "redis", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def test_sigkilled_holder_is_taken_over_within_one_lease(
    backend: str, db: SqliteDatabase, tmp_path: Path
) -> None:
    if backend != "postgresql":
        await _sigkilled_holder_is_taken_over(backend, db, None)
        return
    with fresh_database("kill_") as url:
        async with PostgresDatabase(url, pool_min=1, pool_max=2) as pg:
            await _sigkilled_holder_is_taken_over(backend, db, pg)


async def _sigkilled_holder_is_taken_over(
    backend: str, db: SqliteDatabase, pg: PostgresDatabase | None
) -> None:
    lease_ms = 1_000
    prefix = new_prefix()
    locks: SqliteLocks | RedisLocks | PostgresLocks
    if backend == "redis":
        require_redis()
        target = prefix
        locks = RedisLocks(REDIS_URL, prefix, 2.0, CLOCK, "taker")
        raw = aioredis.Redis.from_url(REDIS_URL)
    elif pg is not None:
        target = pg.url
        locks = PostgresLocks(pg, CLOCK, "taker")
    else:
        target = str(db.path)
        locks = SqliteLocks(db, CLOCK, "taker")
    holder = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "lock_worker.py"), "hold", backend, target,
         "--lease-ms", str(lease_ms), "--key", KEY],
        stdout=subprocess.PIPE, env=worker_env(), text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        line = await asyncio.to_thread(holder.stdout.readline)
        assert line.startswith("acquired "), line
        held_fence = int(line.split()[1])
        assert isinstance(await locks.acquire(KEY, lease_ms), Held)

        os.kill(holder.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        await asyncio.to_thread(holder.wait, 10)

        attempts_before_expiry = 0
        while True:
            # Read the stored expiry first: while it is clearly ahead, acquire must say held.
            if backend == "sqlite":
                row = await db.fetchone("SELECT expires_at FROM locks WHERE key = ?", (KEY,))
                assert row is not None
                live = int(row[0]) - CLOCK.wall_ms() > 20
            elif pg is not None:  # the server's clock decides there
                sql = f"SELECT expires_at - {SERVER_NOW_MS} FROM locks WHERE key = ?"
                row = await pg.fetchone(sql, (KEY,))
                assert row is not None
                live = int(row[0]) > 20
            else:
                live = int(await raw.pttl(locks.lock_key(KEY))) > 20  # type: ignore[union-attr]
            result = await locks.acquire(KEY, lease_ms)
            if live:
                assert isinstance(result, Held), "acquired before the dead holder's lease expired"
                attempts_before_expiry += 1
            if isinstance(result, Acquired):
                break
            assert time.monotonic() - killed_at < 5, "lock not free long after one lease"
            await asyncio.sleep(0.02)
        took_over_after_s = time.monotonic() - killed_at
        assert attempts_before_expiry > 0
        assert took_over_after_s <= lease_ms / 1000 + 0.5, took_over_after_s
        assert result.lease.fence > held_fence
        await locks.release(result.lease)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
        await locks.close()
        if backend == "redis":
            await raw.aclose()
            await asyncio.to_thread(delete_prefix, prefix)


# ------------------------------------------------------------------ Redis faults mid-hold


async def test_redis_killed_mid_hold_signals_lock_lost(private_redis: PrivateRedis) -> None:
    private_redis.start()
    locks = fast_redis_locks(private_redis.url)
    reasons: list[str] = []
    try:
        async with hold(locks, KEY, 1_500, CLOCK, on_lost=reasons.append) as handle:
            handle.check()
            private_redis.kill()
            await asyncio.wait_for(handle.lost.wait(), 10)
            # Renewals kept failing (unreachable) until the local deadline ended the hold.
            assert reasons == ["deadline"]
            with pytest.raises(LockLost):
                handle.check()
    finally:
        await locks.close()


async def test_redis_restarted_empty_mid_hold_renewal_says_lost(
    private_redis: PrivateRedis,
) -> None:
    private_redis.start()
    locks = fast_redis_locks(private_redis.url)
    try:
        async with hold(locks, KEY, 4_000, CLOCK) as handle:
            private_redis.kill()
            private_redis.start()  # same port, empty: the lock key is gone
            await asyncio.wait_for(handle.lost.wait(), 10)
            assert handle.lost_reason == "lost"  # an answer, not a timeout
            with pytest.raises(LockLost):
                handle.check()
        # The restarted server serves new locks at once.
        assert isinstance(await locks.acquire(KEY, 4_000), Acquired)
    finally:
        await locks.close()


# ------------------------------------------------------------------ Redis down at acquire


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def two_processes(
    request: pytest.FixtureRequest, db: SqliteDatabase
) -> AsyncIterator[tuple[DatabaseLocks, DatabaseLocks]]:
    """Two processes' lease backends on one state database: two connections to this host's
    SQLite file, or two daemons' pools on one PostgreSQL database."""
    if request.param == "sqlite":
        async with SqliteDatabase(db.path) as db_b:
            yield SqliteLocks(db, CLOCK, "node-a"), SqliteLocks(db_b, CLOCK, "node-b")
        return
    with fresh_database("fallback_") as url:
        async with PostgresDatabase(url) as pg_a, PostgresDatabase(url) as pg_b:
            yield PostgresLocks(pg_a, CLOCK, "node-a"), PostgresLocks(pg_b, CLOCK, "node-b")


async def test_redis_down_at_acquire_then_policy_then_recovery(
    private_redis: PrivateRedis, two_processes: tuple[DatabaseLocks, DatabaseLocks]
) -> None:
    redis_locks = fast_redis_locks(private_redis.url)  # server not started yet: refused
    db_locks, db_locks_b = two_processes
    name = db_locks.name
    observed: list[tuple[str, str]] = []
    fallback = FallbackLocks(
        redis_locks, db_locks, "database", on_acquire=lambda b, r: observed.append((b, r))
    )
    skip = FallbackLocks(redis_locks, db_locks, "skip")
    # Another process on the same state database, same policy.
    other = FallbackLocks(redis_locks, db_locks_b, "database")
    try:
        down = await redis_locks.acquire(KEY, 5_000)
        assert down == Unavailable("redis_unavailable")
        assert await redis_locks.ping() is False

        degraded = await fallback.acquire(KEY, 5_000)
        assert isinstance(degraded, Acquired)
        assert degraded.lease.backend == name
        assert fallback.degraded
        assert not fallback.redis_up
        assert fallback.backend == name
        assert observed == [(name, "acquired")]
        # Exclusion on the database still holds while degraded (fleet-wide on PostgreSQL).
        assert isinstance(await other.acquire(KEY, 5_000), Held)
        assert await fallback.renew(degraded.lease) is True

        skipped = await skip.acquire("warmup:ai-explanations:lock", 5_000)
        assert skipped == Unavailable("redis_unavailable")
        # ... and skip left no database lease behind.
        freed = await db_locks.acquire("warmup:ai-explanations:lock", 5_000)
        assert isinstance(freed, Acquired)
        await db_locks.release(freed.lease)

        # Fire claims fall back to the database's claim.
        assert await fallback.claim_fire("warmup-forecasts", 1_000, 3_600_000) is True
        assert await other.claim_fire("warmup-forecasts", 1_000, 3_600_000) is False

        assert await fallback.release(degraded.lease) is True

        private_redis.start()
        back = await fallback.acquire(KEY, 5_000)
        assert isinstance(back, Acquired)
        assert back.lease.backend == "redis"
        assert not fallback.degraded
        assert fallback.backend == "redis"
        assert back.lease.fence > degraded.lease.fence  # one fence lineage across modes
        assert fallback.fence_key(back.lease) == fallback.fence_key(degraded.lease)
        raw = aioredis.Redis.from_url(private_redis.url)
        try:
            stored = await raw.get(redis_locks.lock_key(KEY))
            assert stored.split(b" ", 1)[0] == back.lease.token.encode()
        finally:
            await raw.aclose()
        # Held in Redis by this lease → the other process is refused, whichever side it meets.
        assert isinstance(await other.acquire(KEY, 5_000), Held)
        assert await fallback.renew(back.lease) is True
        assert await fallback.release(back.lease) is True
        assert isinstance(await other.acquire(KEY, 5_000), Acquired)
    finally:
        await redis_locks.close()


async def test_check_server_warns_unless_noeviction(private_redis: PrivateRedis) -> None:
    private_redis.start()
    locks = fast_redis_locks(private_redis.url)
    raw = aioredis.Redis.from_url(private_redis.url)
    try:
        assert await locks.check_server() == []
        await raw.config_set("maxmemory-policy", "allkeys-lru")
        warnings = await locks.check_server()
        assert len(warnings) == 1
        assert "noeviction" in warnings[0]
    finally:
        await raw.aclose()
        await locks.close()
