"""SPEC §17: a ``locked_elsewhere`` answer names the holder's node and its runId when the backend
knows them (was: "running in another process (unknown)")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.fakes import FakeClock
from tests.lock_support import REDIS_URL, delete_prefix, new_prefix, require_redis
from tests.pg_support import fresh_database
from warmupd.errors import LockedElsewhere
from warmupd.locks import Locks, hold
from warmupd.locks.holder import describe_holder, holder_text, parse_holder
from warmupd.locks.postgres import PostgresLocks
from warmupd.locks.redis import RedisLocks
from warmupd.locks.sqlite import SqliteLocks
from warmupd.models import Acquired, Held
from warmupd.state.postgres import PostgresDatabase
from warmupd.state.sqlite import SqliteDatabase

KEY = "warmup:forecasts:lock"
NODE_A, NODE_B = "host-a:101:aaaaaa", "host-b:202:bbbbbb"


@pytest.fixture(params=["sqlite", "redis", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def pair(request: Any, tmp_path: Path) -> AsyncIterator[tuple[Locks, Locks, str]]:
    """Two holders on one backend: (A, B, backend)."""
    clock = FakeClock()
    if request.param == "postgresql":
        with fresh_database("holder_") as url:
            async with PostgresDatabase(url) as pg_a, PostgresDatabase(url) as pg_b:
                a, b = PostgresLocks(pg_a, clock, NODE_A), PostgresLocks(pg_b, clock, NODE_B)
                yield a, b, "postgresql"
        return
    if request.param == "sqlite":
        async with SqliteDatabase(tmp_path / "w.db") as db:
            yield SqliteLocks(db, clock, NODE_A), SqliteLocks(db, clock, NODE_B), "sqlite"
        return
    require_redis()
    prefix = new_prefix()
    a = RedisLocks(REDIS_URL, prefix, 2.0, clock, NODE_A)
    b = RedisLocks(REDIS_URL, prefix, 2.0, clock, NODE_B)
    try:
        yield a, b, "redis"
    finally:
        await a.close()
        await b.close()
        await asyncio.to_thread(delete_prefix, prefix)


async def test_held_names_the_node_then_the_run_and_only_the_owner_can_tag(
    pair: tuple[Locks, Locks, str],
) -> None:
    a, b, backend = pair
    got = await a.acquire(KEY, 60_000)
    assert isinstance(got, Acquired)
    assert await b.acquire(KEY, 60_000) == Held(NODE_A)  # stored by the acquire itself
    assert await a.tag_run(got.lease, 17) is True
    assert await b.acquire(KEY, 60_000) == Held(NODE_A, 17)
    assert await a.renew(got.lease) is True
    assert await b.acquire(KEY, 60_000) == Held(NODE_A, 17)  # the renewal keeps the description

    # A stale lease (same key, another token) can neither tag nor overwrite the description.
    forged = type(got.lease)(key=KEY, token="0" * 32, fence=1, backend=backend, lease_ms=60_000)
    assert await b.tag_run(forged, 99) is False
    assert await b.acquire(KEY, 60_000) == Held(NODE_A, 17)

    assert await a.release(got.lease) is True
    again = await b.acquire(KEY, 60_000)
    assert isinstance(again, Acquired)
    assert await a.acquire(KEY, 60_000) == Held(NODE_B)  # the new owner, without A's run
    await b.release(again.lease)
    if isinstance(b, RedisLocks):
        raw = aioredis.Redis.from_url(REDIS_URL)
        try:
            # One key per lease: the holder lives in the lock value, gone with the lock.
            assert await raw.exists(b.lock_key(KEY)) == 0
            # This test's prefix only: other processes share the server and the key names.
            own = b.lock_key(KEY).removesuffix(":lock")
            assert await raw.keys(f"{own}*") == [b.fence_counter_key(KEY).encode()]
        finally:
            await raw.aclose()


async def test_hold_raises_locked_elsewhere_naming_the_holder(
    pair: tuple[Locks, Locks, str],
) -> None:
    a, b, _ = pair
    got = await a.acquire(KEY, 60_000)
    assert isinstance(got, Acquired)
    await a.tag_run(got.lease, 5)
    with pytest.raises(LockedElsewhere) as caught:
        async with hold(b, KEY, 60_000, FakeClock()):
            pytest.fail("acquired a held lock")
    assert (caught.value.node, caught.value.run_id) == (NODE_A, 5)
    assert f"node {NODE_A}, run 5" in caught.value.message
    await a.release(got.lease)


def test_holder_text_round_trips() -> None:
    assert parse_holder(holder_text(NODE_A, 42)) == Held(NODE_A, 42)
    assert parse_holder(holder_text(NODE_A).encode()) == Held(NODE_A)
    assert parse_holder("") == parse_holder(None) == Held(None)
    assert parse_holder("odd run text") == Held("odd run text")
    assert describe_holder(Held(None)) == "holder unknown"
    assert describe_holder(Held(NODE_A)) == f"node {NODE_A}"
