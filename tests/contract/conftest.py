"""The backends the contract suites run against: lock backends behind a harness, state databases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.lock_support import (
    REDIS_URL,
    FakeClock,
    closed_port_url,
    delete_prefix,
    new_prefix,
    require_redis,
    wait_for_condition,
)
from tests.pg_support import (
    fresh_database,
)
from warmupd.locks import Locks
from warmupd.locks.postgres import SERVER_NOW_MS, PostgresLocks
from warmupd.locks.redis import RedisLocks
from warmupd.locks.sqlite import SqliteLocks
from warmupd.state import Database
from warmupd.state.postgres import PostgresDatabase
from warmupd.state.sqlite import SqliteDatabase


class Harness:
    """Two independent clients ("processes") of one backend plus the time controls a test needs."""

    name: str
    a: Locks
    b: Locks
    clock: FakeClock

    async def expire(self, key: str) -> None:
        """Make the current lease of ``key`` expire (without anyone releasing it)."""
        raise NotImplementedError

    async def to_just_before_expiry(self, key: str) -> None:
        """Bring time to 1 ms before the lease of ``key`` expires (or check it is still live)."""
        raise NotImplementedError

    async def to_expiry(self, key: str) -> None:
        """Bring time exactly to the expiry of ``key``'s lease."""
        raise NotImplementedError

    async def forget(self, key: str) -> None:
        """Delete the stored lock entry of a free ``key`` as housekeeping or TTL would."""
        raise NotImplementedError

    async def expire_claim(self, job: str, due_ms: int) -> None:
        """Let a fire claim's TTL run out."""
        raise NotImplementedError

    def unavailable(self) -> Locks:
        """A client of this backend that cannot reach it."""
        raise NotImplementedError


class SqliteHarness(Harness):
    name = "sqlite"

    def __init__(
        self, path: Path, db_a: SqliteDatabase, db_b: SqliteDatabase, clock: FakeClock
    ) -> None:
        self.path = path
        self.db_a = db_a
        self.clock = clock
        self.a = SqliteLocks(db_a, clock, "node-a")
        self.b = SqliteLocks(db_b, clock, "node-b")
        self._closed_db = SqliteDatabase(path)

    async def _expires_at(self, key: str) -> int:
        row = await self.db_a.fetchone("SELECT expires_at FROM locks WHERE key = ?", (key,))
        assert row is not None
        return int(row[0])

    async def expire(self, key: str) -> None:
        await self.to_expiry(key)

    async def to_just_before_expiry(self, key: str) -> None:
        self.clock.set_wall_ms(await self._expires_at(key) - 1)

    async def to_expiry(self, key: str) -> None:
        self.clock.set_wall_ms(await self._expires_at(key))

    async def forget(self, key: str) -> None:
        assert isinstance(self.a, SqliteLocks)
        await self.a.purge_expired(self.clock.wall_ms())
        gone = await self.db_a.fetchone("SELECT 1 FROM locks WHERE key = ?", (key,))
        assert gone is None, "purge must delete a free row that is not the greatest fence"

    async def expire_claim(self, job: str, due_ms: int) -> None:
        row = await self.db_a.fetchone(
            "SELECT expires_at FROM fire_claims WHERE job = ? AND due_at = ?", (job, due_ms)
        )
        assert row is not None
        self.clock.set_wall_ms(int(row[0]))

    def unavailable(self) -> Locks:
        # Never opened: every statement finds no connection.
        return SqliteLocks(self._closed_db, self.clock, "node-c")


class RedisHarness(Harness):
    name = "redis"

    def __init__(self, prefix: str, clock: FakeClock) -> None:
        self.prefix = prefix
        self.clock = clock
        self.a = RedisLocks(REDIS_URL, prefix, 2.0, clock, "node-a")
        self.b = RedisLocks(REDIS_URL, prefix, 2.0, clock, "node-b")
        self.raw = aioredis.Redis.from_url(REDIS_URL)

    def _key(self, key: str) -> str:
        assert isinstance(self.a, RedisLocks)
        return self.a.lock_key(key)

    async def _gone(self, name: str) -> None:
        async def check() -> bool:
            return int(await self.raw.exists(name)) == 0

        await wait_for_condition(check)

    async def expire(self, key: str) -> None:
        # Server-side expiry is the server's clock: shorten it instead of waiting a lease.
        await self.raw.pexpire(self._key(key), 1)
        await self._gone(self._key(key))

    async def to_just_before_expiry(self, key: str) -> None:
        assert int(await self.raw.pttl(self._key(key))) > 0

    async def to_expiry(self, key: str) -> None:
        await self._gone(self._key(key))

    async def forget(self, key: str) -> None:
        await self.raw.delete(self._key(key))

    async def expire_claim(self, job: str, due_ms: int) -> None:
        assert isinstance(self.a, RedisLocks)
        name = self.a.claim_key(job, due_ms)
        await self.raw.pexpire(name, 1)
        await self._gone(name)

    def unavailable(self) -> Locks:
        return RedisLocks(closed_port_url(), self.prefix, 0.5, self.clock, "node-c")

    async def aclose(self) -> None:
        await self.a.close()
        await self.b.close()
        await self.raw.aclose()


class PostgresHarness(Harness):
    """Two daemons' pools on the session's PostgreSQL database.

    Expiry is the server's clock (``clock_timestamp()``), which a test cannot stop or move. The
    time controls therefore move the *row* instead of the clock, relative to the server's now in
    the same statement: :meth:`expire` and :meth:`to_expiry` set ``expires_at`` to the server's
    now, so the next statement's now is at or past it (the boundary ``now == expires_at`` when it
    runs within the same millisecond, just past it otherwise: acquirable either way);
    :meth:`to_just_before_expiry` sets it a minute ahead of the server's now, so the lease is
    certainly live when the next statement compares (a live lease must be refused). The exact
    millisecond of the boundary is the same SQL comparison as SQLite's, where the fake clock tests
    it to the millisecond.
    """

    name = "postgresql"

    def __init__(self, db_a: PostgresDatabase, db_b: PostgresDatabase, clock: FakeClock) -> None:
        self.db_a = db_a
        self.clock = clock
        self.a = PostgresLocks(db_a, clock, "node-a")
        self.b = PostgresLocks(db_b, clock, "node-b")
        # Never opened: every statement finds no pool.
        self._closed_db = PostgresDatabase(db_a.url)

    async def _set_expiry(self, key: str, offset_ms: int) -> None:
        changed = await self.db_a.execute(
            f"UPDATE locks SET expires_at = {SERVER_NOW_MS} + ? WHERE key = ? AND owner <> ''",
            (offset_ms, key),
        )
        assert changed == 1, f"no live lease of {key!r} to move"

    async def expire(self, key: str) -> None:
        await self._set_expiry(key, 0)

    async def to_just_before_expiry(self, key: str) -> None:
        await self._set_expiry(key, 60_000)

    async def to_expiry(self, key: str) -> None:
        await self._set_expiry(key, 0)

    async def forget(self, key: str) -> None:
        assert isinstance(self.a, PostgresLocks)
        await self.a.purge_expired(self.clock.wall_ms())
        gone = await self.db_a.fetchone("SELECT 1 FROM locks WHERE key = ?", (key,))
        assert gone is None, "purge must delete a free row that is not the greatest fence"

    async def expire_claim(self, job: str, due_ms: int) -> None:
        changed = await self.db_a.execute(
            f"UPDATE fire_claims SET expires_at = {SERVER_NOW_MS} WHERE job = ? AND due_at = ?",
            (job, due_ms),
        )
        assert changed == 1

    def unavailable(self) -> Locks:
        return PostgresLocks(self._closed_db, self.clock, "node-c")


@pytest.fixture(params=["sqlite", "redis", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    """Each contract test runs once per backend."""
    clock = FakeClock()
    if request.param == "sqlite":
        path = tmp_path / "warmupd.db"
        async with SqliteDatabase(path) as db_a, SqliteDatabase(path) as db_b:
            yield SqliteHarness(path, db_a, db_b, clock)
        return
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
        async with (
            PostgresDatabase(url, pool_min=1, pool_max=4) as pg_a,
            # B as behind a transaction-mode pooler: no prepared statements kept.
            PostgresDatabase(url, pool_min=1, pool_max=4, statement_cache=False) as pg_b,
        ):
            await pg_a.execute("TRUNCATE locks, fire_claims")
            yield PostgresHarness(pg_a, pg_b, clock)
        return
    require_redis()
    prefix = new_prefix()
    harness = RedisHarness(prefix, clock)
    try:
        yield harness
    finally:
        await harness.aclose()
        await asyncio.to_thread(delete_prefix, prefix)


# --------------------------------------------------------------------------- state backends

STATE_TABLES = (
    "comparisons, cache_entries, job_runs, locks, fire_claims, schedule_state, warmups, nodes, "
    "job_pauses"
)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database created for this test session and dropped after it (SPEC §14)."""
    with fresh_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def state(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """Each repository contract test runs once per backend, on an empty, migrated state.

    SQLite: a real file in ``tmp_path``. PostgreSQL: the session's database, emptied before the
    test (the schema stays; ``state_version`` keeps counting, as tests only compare it with itself).
    """
    if request.param == "sqlite":
        async with SqliteDatabase(tmp_path / "warmupd.db") as sqlite_db:
            yield sqlite_db
        return
    url = request.getfixturevalue("pg_url")
    async with PostgresDatabase(url, pool_min=1, pool_max=4) as pg_db:
        await pg_db.execute(f"TRUNCATE {STATE_TABLES} RESTART IDENTITY")
        yield pg_db
