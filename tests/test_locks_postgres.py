"""PostgresLocks beyond the contract suite: skewed host clocks, a server that drops connections,
housekeeping on the server's clock (SPEC §14 "Locks without Redis")."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.fakes import FakeClock
from tests.lock_support import wait_for_condition
from tests.pg_support import fresh_database
from warmupd.errors import ServiceUnavailable
from warmupd.locks import Locks
from warmupd.locks.postgres import SERVER_NOW_MS, PostgresLocks
from warmupd.locks.sqlite import SqliteLocks
from warmupd.models import Acquired, AcquireResult, Held, Lease, Unavailable
from warmupd.state.postgres import PostgresDatabase
from warmupd.state.sqlite import SqliteDatabase

pytestmark = pytest.mark.postgres

KEY = "warmup:forecasts:lock"
LEASE_MS = 60_000
SKEW_MS = 120_000  # two minutes


def lease_of(result: AcquireResult) -> Lease:
    assert isinstance(result, Acquired), result
    return result.lease


def skewed(offset_ms: int) -> FakeClock:
    """A host clock ``offset_ms`` off the real time (the server here runs on this machine)."""
    return FakeClock(wall_ms=int(time.time() * 1000) + offset_ms)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with fresh_database("locks_") as url:
        yield url


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[tuple[PostgresDatabase, PostgresDatabase]]:
    """Two daemons' pools on one database, its lock tables empty."""
    async with PostgresDatabase(pg_url) as a, PostgresDatabase(pg_url) as b:
        await a.execute("TRUNCATE locks, fire_claims")
        yield a, b


# The pairs where expiry on the hosts' clocks goes wrong in one direction or the other: a taker
# whose clock is ahead of the holder's sees the lease end early (holder correct / taker fast,
# holder slow / taker correct), and a taker behind sees it last longer than it does.
SKEWS = [(+SKEW_MS, 0), (0, +SKEW_MS), (-SKEW_MS, 0), (0, -SKEW_MS), (-SKEW_MS, +SKEW_MS)]


async def skew_scenario(holder: Locks, taker: Locks, expire: Lease | None = None) -> None:
    """The holder's live lease and fire claim are refused to the taker, whatever their clocks."""
    lease = lease_of(await holder.acquire(KEY, LEASE_MS))
    assert isinstance(await taker.acquire(KEY, LEASE_MS), Held)
    assert await holder.renew(lease) is True
    assert isinstance(await taker.acquire(KEY, LEASE_MS), Held)
    assert await holder.claim_fire("warmup-forecasts", 1_700_000_000_000, LEASE_MS) is True
    assert await taker.claim_fire("warmup-forecasts", 1_700_000_000_000, LEASE_MS) is False


@pytest.mark.parametrize(("holder_skew_ms", "taker_skew_ms"), SKEWS)
async def test_skewed_host_clocks_agree_on_expiry(
    pg: tuple[PostgresDatabase, PostgresDatabase], holder_skew_ms: int, taker_skew_ms: int
) -> None:
    db_a, db_b = pg
    holder = PostgresLocks(db_a, skewed(holder_skew_ms), "holder")
    taker = PostgresLocks(db_b, skewed(taker_skew_ms), "taker")
    await skew_scenario(holder, taker)
    # Housekeeping on the fastest host deletes nothing live either.
    assert await taker.purge_expired(skewed(+SKEW_MS).wall_ms()) == (0, 0)
    await skew_scenario_after_server_expiry(db_a, holder, taker)


async def skew_scenario_after_server_expiry(
    db: PostgresDatabase, holder: PostgresLocks, taker: PostgresLocks
) -> None:
    """Once the server's clock passes the expiry, the taker gets the lock, and the holder's
    renewal says lost — whatever the hosts' clocks say."""
    row = await db.fetchone("SELECT owner FROM locks WHERE key = ?", (KEY,))
    assert row is not None
    stale = Lease(key=KEY, token=str(row[0]), fence=0, backend="postgresql", lease_ms=LEASE_MS)
    await db.execute(f"UPDATE locks SET expires_at = {SERVER_NOW_MS} WHERE key = ?", (KEY,))
    taken = lease_of(await taker.acquire(KEY, LEASE_MS))
    assert await holder.renew(stale) is False
    assert isinstance(await holder.acquire(KEY, LEASE_MS), Held)
    assert await taker.release(taken) is True


@pytest.mark.parametrize(("holder_skew_ms", "taker_skew_ms"), [(0, +SKEW_MS), (-SKEW_MS, 0)])
async def test_host_clock_expiry_would_be_taken_over_early(
    tmp_path: Path, holder_skew_ms: int, taker_skew_ms: int
) -> None:
    """The negative control: the same scenario with expiry on the hosts' clocks (SqliteLocks,
    whose one-host design compares wall clocks) lets the taker in two minutes early — so
    :func:`skew_scenario` does fail for a backend that trusts the host's clock."""
    path = tmp_path / "w.db"
    async with SqliteDatabase(path) as db_a, SqliteDatabase(path) as db_b:
        holder = SqliteLocks(db_a, skewed(holder_skew_ms), "holder")
        taker = SqliteLocks(db_b, skewed(taker_skew_ms), "taker")
        with pytest.raises(AssertionError):
            await skew_scenario(holder, taker)
        # The taker holds the lock the holder's lease still covered.
        assert await holder.acquire(KEY, LEASE_MS) == Held("taker")


async def test_dropped_connections_are_unavailable_then_recover(
    pg: tuple[PostgresDatabase, PostgresDatabase], pg_url: str
) -> None:
    db_a, db_b = pg
    clock = FakeClock()
    locks = PostgresLocks(db_a, clock, "a")
    lease = lease_of(await locks.acquire(KEY, LEASE_MS))
    # The server ends every session of this database but B's (a restart, a failover, a pooler).
    terminated = await db_b.fetchone(
        """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
           WHERE datname = current_database() AND pid <> pg_backend_pid()"""
    )
    assert terminated is not None
    assert int(terminated[0]) >= 1
    # The pool's connection is dead: each answer is "unavailable" or, once the pool has replaced
    # the connection, "acquired" — never "held" and never an exception (asyncpg fails the first
    # statement on such a connection in more than one way; which one depends on timing).
    answers = [await locks.acquire(f"warmup:other:{i}", LEASE_MS) for i in range(5)]
    assert all(
        a == Unavailable("postgresql_unavailable") or isinstance(a, Acquired) for a in answers
    ), answers
    assert isinstance(answers[-1], Acquired), answers
    # The lease lived on the server all along.
    assert await locks.renew(lease) is True
    assert await locks.release(lease) is True
    lease_of(await locks.acquire(KEY, LEASE_MS))


async def test_closed_database_raises_service_unavailable(pg_url: str) -> None:
    db = PostgresDatabase(pg_url)
    await db.open()
    locks = PostgresLocks(db, FakeClock(), "a")
    lease = lease_of(await locks.acquire("warmup:closed:lock", LEASE_MS))
    await db.close()
    assert await locks.acquire(KEY, LEASE_MS) == Unavailable("postgresql_unavailable")
    with pytest.raises(ServiceUnavailable):
        await locks.tag_run(lease, 1)
    with pytest.raises(ServiceUnavailable):
        await locks.release_fire("job", 1)
    with pytest.raises(ServiceUnavailable):
        await locks.purge_expired(0)


async def test_purge_keeps_the_greatest_fence_and_new_keys_start_above_it(
    pg: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    db_a, db_b = pg
    a, b = PostgresLocks(db_a, FakeClock(), "a"), PostgresLocks(db_b, FakeClock(), "b")
    first = lease_of(await a.acquire(KEY, LEASE_MS))
    await a.release(first)
    other = lease_of(await b.acquire("warmup:other:lock", LEASE_MS))
    await b.release(other)
    assert await a.claim_fire("job", 1, 1) is True
    await db_a.execute(f"UPDATE fire_claims SET expires_at = {SERVER_NOW_MS}")
    assert await a.purge_expired(0) == (1, 1)  # KEY's row; the greatest fence's row stays
    assert await a.purge_expired(0) == (0, 0)
    again = lease_of(await b.acquire(KEY, LEASE_MS))
    assert again.fence > other.fence > first.fence


async def test_purge_waits_for_an_acquire_in_flight(
    pg: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    """Purge and acquire are ordered as wholes (the purge's table lock), so no acquire can see a
    key's row and then find it deleted — which would let it start the key's fence over."""
    db_a, db_b = pg
    a = PostgresLocks(db_a, FakeClock(), "a")
    async with db_b.transaction() as tx:
        # An acquire that has read its snapshot and not yet committed (held open here).
        await tx.fetchone("INSERT INTO locks VALUES ('k', '', 7, 0, 0, '') RETURNING fence")
        purge = asyncio.create_task(a.purge_expired(0))

        async def purge_waits_on_the_table_lock() -> bool:
            row = await db_a.fetchone(
                """SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND wait_event_type = 'Lock'
                     AND query LIKE 'LOCK TABLE locks%'"""
            )
            return row is not None and int(row[0]) == 1

        await wait_for_condition(purge_waits_on_the_table_lock)
        assert not purge.done()
    assert await purge == (0, 0)  # 'k' is the greatest fence: kept


async def test_a_release_that_missed_the_server_is_retried_until_it_lands(
    pg: tuple[PostgresDatabase, PostgresDatabase], pg_url: str
) -> None:
    """A run that ends while the database is away frees its key once the database is back, not
    a whole lease later."""
    _, db_b = pg
    clock = FakeClock()
    db = PostgresDatabase(pg_url)
    await db.open()
    locks = PostgresLocks(db, clock, "a")
    try:
        lease = lease_of(await locks.acquire(KEY, LEASE_MS))
        await db.close()  # the server is out of reach
        with pytest.raises(ServiceUnavailable):
            await locks.release(lease)
        await db.open(migrate=False)  # ... and back
        other = PostgresLocks(db_b, clock, "b")
        assert isinstance(await other.acquire(KEY, LEASE_MS), Held)
        await clock.advance(0.25)  # the first retry
        await wait_for_condition(lambda: not locks._retries)
        lease_of(await other.acquire(KEY, LEASE_MS))
    finally:
        await locks.close()
        await db.close()
