"""PostgresDatabase keeps a connection checked out between statements (no pool round trip per
statement): it must never starve a caller, and a failed or cancelled statement hands its connection
back to the pool, which cleans it up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.lock_support import wait_for_condition
from tests.pg_support import fresh_database
from warmupd.state.postgres import DRIVER_ERRORS, PostgresDatabase

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with fresh_database("conns_") as url:
        yield url


@pytest.fixture
async def one_connection(pg_url: str) -> AsyncIterator[PostgresDatabase]:
    """A pool of exactly one connection: any connection kept back from it would starve a caller."""
    async with PostgresDatabase(pg_url, pool_min=1, pool_max=1) as db:
        yield db


async def test_callers_beyond_the_pool_size_are_all_served(
    one_connection: PostgresDatabase,
) -> None:
    db = one_connection
    assert await db.schema_version() > 0
    async with db.transaction() as tx:
        await tx.execute("SELECT 1")

    async def statement(i: int) -> int:
        row = await db.fetchone("SELECT ?::int", (i,))
        assert row is not None
        return int(row[0])

    # 20 callers on one connection: each waits its turn, none waits forever (a bound, not a time).
    got = await asyncio.wait_for(asyncio.gather(*(statement(i) for i in range(20))), 30)
    assert got == list(range(20))
    assert await db.fetchall("SELECT 1 UNION ALL SELECT 2") == [(1,), (2,)]


async def test_a_cancelled_statement_does_not_poison_the_next(
    one_connection: PostgresDatabase,
) -> None:
    db = one_connection
    slow = asyncio.create_task(db.fetchone("SELECT pg_sleep(30)"))

    async def sleeping() -> bool:
        # Asked on an admin connection of its own: the pool's only one is busy sleeping.
        async with PostgresDatabase(db.url, pool_min=1, pool_max=1) as other:
            row = await other.fetchone(
                """SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND query = 'SELECT pg_sleep(30)'
                     AND state = 'active'"""
            )
        return row is not None and int(row[0]) == 1

    await wait_for_condition(sleeping)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    # The pool waited out the cancellation on the server; the connection answers again.
    assert await db.fetchone("SELECT 42") == (42,)


async def test_a_failed_statement_does_not_poison_the_next(
    one_connection: PostgresDatabase,
) -> None:
    db = one_connection
    with pytest.raises(DRIVER_ERRORS):
        await db.fetchone("SELECT 1 / 0")
    with pytest.raises(DRIVER_ERRORS):
        async with db.transaction() as tx:
            await tx.execute("SELECT 1 / 0")
    assert await db.fetchone("SELECT 7") == (7,)
    await db.close()
    await db.close()  # idempotent, with nothing kept
