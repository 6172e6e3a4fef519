"""On-demand warmups are single-flight for the whole fleet (SPEC §14): two "daemons" on one state.

Each daemon is the real on-demand stack (OnDemand, Warmer, stores) on its own connection to one
state — a SQLite file, or a fresh PostgreSQL database — with its own lock client. One computation
and one run record per warmup: a daemon that finds the warmup held elsewhere answers ``running``
and records nothing, and a holder that finds the parts already warmed computes and records nothing.
Time is a FakeClock: a follower's polls run when the test advances it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.daemon_support import JOB_SECRET, WARMUP_SECRET, DaemonProcess, wait_until
from tests.fakes import FakeClock
from tests.lock_support import REDIS_URL, delete_prefix, new_prefix, require_redis
from tests.pg_support import (
    fresh_database,
)
from tests.test_daemon_postgres import SERIES
from tests.test_jobs_warmups import RecordingCpu, comparison
from warmupd.config import JOB_ON_DEMAND, parse_config
from warmupd.errors import ProducerError
from warmupd.jobs.ondemand import FOLLOW_POLL_S, OnDemand
from warmupd.jobs.parts import Warmer
from warmupd.locks import Locks
from warmupd.locks.postgres import SERVER_NOW_MS, PostgresLocks
from warmupd.locks.redis import RedisLocks
from warmupd.locks.sqlite import SqliteLocks
from warmupd.models import Acquired, RunStatus, WarmupState
from warmupd.producers.insights_builtin import BuiltinInsights
from warmupd.state import Database
from warmupd.state.cache import CacheStore
from warmupd.state.postgres import PostgresDatabase
from warmupd.state.runs import RunStore
from warmupd.state.sqlite import SqliteDatabase
from warmupd.state.store import ComparisonStore, WarmupStore

LEASE_MS = 60_000
T = TypeVar("T")


class FailingCpu(RecordingCpu):
    """Every call waits for the gate, then fails (a producer error)."""

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self.calls.append(fn.__name__)
        assert self.gate is not None
        await self.gate.wait()
        raise ProducerError("the model server is down")


@dataclass
class Daemon:
    """One process's on-demand stack."""

    db: Database
    locks: Locks
    cpu: RecordingCpu
    on_demand: OnDemand
    runs: RunStore


@dataclass
class Fleet:
    a: Daemon
    b: Daemon
    clock: FakeClock
    expire: Callable[[str], object]
    """Make the lease of a lock key run out without anyone releasing it (a holder that died)."""


@pytest.fixture(scope="module")
def pg_module_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this module, dropped afterwards."""
    with fresh_database("ondemand_") as url:
        yield url


def daemon(db: Database, locks: Locks, clock: FakeClock, node: str) -> Daemon:
    cfg = parse_config({"on_demand": {"concurrency": 2}}, env={})
    cpu = RecordingCpu()
    cache, runs = CacheStore(db), RunStore(db)
    warmer = Warmer(
        cache=cache,
        cpu=cpu,
        insights=BuiltinInsights(prompt_version="1"),
        cache_config=cfg.cache,
        forecast_config=cfg.forecast,
        clock=clock,
    )
    on_demand = OnDemand(
        config=lambda: cfg,
        comparisons=ComparisonStore(db),
        warmups=WarmupStore(db),
        runs=runs,
        warmer=warmer,
        locks=locks,
        clock=clock,
        node=node,
    )
    return Daemon(db, locks, cpu, on_demand, runs)


# The lock set-up is one parameter.
@pytest.fixture(
    params=[
        "sqlite-file+sqlite-rows",
        pytest.param("postgres+redis", marks=pytest.mark.postgres),
        pytest.param("postgres+postgres-rows", marks=pytest.mark.postgres),
    ]
)
async def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Fleet]:
    clock = FakeClock(wall_ms=1_767_225_600_000)
    async with AsyncExitStack() as stack:
        if request.param.startswith("sqlite"):
            db_a = await stack.enter_async_context(SqliteDatabase(tmp_path / "shared.db"))
            db_b = await stack.enter_async_context(SqliteDatabase(tmp_path / "shared.db"))
            locks_a: Locks = SqliteLocks(db_a, clock, "a")
            locks_b: Locks = SqliteLocks(db_b, clock, "b")

            async def expire(key: str) -> None:
                row = await db_a.fetchone("SELECT expires_at FROM locks WHERE key = ?", (key,))
                assert row is not None
                clock.set_wall_ms(int(row[0]))

        elif request.param == "postgres+postgres-rows":
            url = request.getfixturevalue("pg_module_url")
            db_a = await stack.enter_async_context(PostgresDatabase(url, pool_max=4))
            db_b = await stack.enter_async_context(PostgresDatabase(url, pool_max=4))
            await db_a.execute(
                "TRUNCATE comparisons, cache_entries, job_runs, warmups, locks, fire_claims"
            )
            locks_a = PostgresLocks(db_a, clock, "a")
            locks_b = PostgresLocks(db_b, clock, "b")

            async def expire(key: str) -> None:
                # Expiry is the server's clock: move the row's expiry to the server's now.
                await db_a.execute(
                    f"UPDATE locks SET expires_at = {SERVER_NOW_MS} WHERE key = ?", (key,)
                )

        else:
            require_redis()
            url = request.getfixturevalue("pg_module_url")
            db_a = await stack.enter_async_context(PostgresDatabase(url, pool_max=4))
            db_b = await stack.enter_async_context(PostgresDatabase(url, pool_max=4))
            await db_a.execute("TRUNCATE comparisons, cache_entries, job_runs, warmups")
            prefix = new_prefix()
            stack.push_async_callback(asyncio.to_thread, delete_prefix, prefix)
            locks_a = RedisLocks(REDIS_URL, prefix, 2.0, clock, "a")
            locks_b = RedisLocks(REDIS_URL, prefix, 2.0, clock, "b")
            raw = aioredis.Redis.from_url(REDIS_URL)
            stack.push_async_callback(raw.aclose)

            async def expire(key: str) -> None:
                assert isinstance(locks_a, RedisLocks)
                await raw.delete(locks_a.lock_key(key))  # as its TTL would

        stack.push_async_callback(locks_a.close)
        stack.push_async_callback(locks_b.close)
        a, b = daemon(db_a, locks_a, clock, "a"), daemon(db_b, locks_b, clock, "b")
        stack.push_async_callback(a.on_demand.shutdown, 0)
        stack.push_async_callback(b.on_demand.shutdown, 0)
        yield Fleet(a, b, clock, expire)


async def until(predicate: Callable[[], bool]) -> None:
    """Let the loop run until ``predicate`` holds (bounded by the test timeout, no clock involved)."""
    while not predicate():
        await asyncio.sleep(0.005)


def task_of(d: Daemon, slug: str, data_hash: str) -> asyncio.Task[None]:
    flight = d.on_demand._flights[(slug, data_hash)]
    assert flight.task is not None
    return flight.task


async def on_demand_runs(d: Daemon) -> list[tuple[str, RunStatus]]:
    return [(r.node, r.status) for r in await d.runs.list_runs(job=JOB_ON_DEMAND)]


async def test_a_warmup_running_elsewhere_is_followed_and_recorded_once(fleet: Fleet) -> None:
    a, b = fleet.a, fleet.b
    c = comparison("tea-vs-coffee")
    await ComparisonStore(a.db).upsert(c, fleet.clock.wall_ms())
    a.cpu.gate = asyncio.Event()
    assert (await a.on_demand.request(c.slug, None))["status"] == "queued"
    await until(lambda: bool(a.cpu.calls))  # A holds the lock and computes
    assert (await b.on_demand.request(c.slug, None))["status"] == "queued"
    await until(lambda: a.on_demand._flights[(c.slug, c.data_hash)].state is WarmupState.RUNNING)
    b_flight = b.on_demand._flights[(c.slug, c.data_hash)]
    await until(lambda: b_flight.elsewhere)
    # B answers the state of the warmup it follows, computes nothing, records nothing.
    assert (await b.on_demand.request(c.slug, c.data_hash))["status"] == "running"
    assert (b.on_demand.in_flight(), a.on_demand.in_flight()) == (0, 1)
    assert await on_demand_runs(b) == [("a", RunStatus.RUNNING)]
    row = await WarmupStore(b.db).get(c.slug, c.data_hash)
    assert row is not None
    assert row.status is WarmupState.RUNNING  # B's "queued" did not hide A's running warmup

    a.cpu.gate.set()
    await task_of(a, c.slug, c.data_hash)
    b_task = task_of(b, c.slug, c.data_hash)
    await fleet.clock.advance(FOLLOW_POLL_S)  # B's next look: the parts are up to date
    await b_task
    assert await on_demand_runs(b) == [("a", RunStatus.SUCCESS)]
    assert (a.on_demand.computations, b.on_demand.computations) == (1, 0)
    assert b.cpu.calls == []
    assert (await b.on_demand.request(c.slug, c.data_hash))["status"] == "ready"


async def test_a_warmup_finished_just_before_the_lock_is_neither_computed_nor_recorded(
    fleet: Fleet,
) -> None:
    a, b = fleet.a, fleet.b
    c = comparison("tea-vs-milk")
    await ComparisonStore(a.db).upsert(c, fleet.clock.wall_ms())
    await b.on_demand.warmer.read(c.slug)  # B's view from before A's warmup
    await a.on_demand.request(c.slug, None)
    await task_of(a, c.slug, c.data_hash)
    # A request on B that read the parts before A committed them: B takes the freed lock.
    b.on_demand.schedule(c.slug, c.data_hash)
    await task_of(b, c.slug, c.data_hash)
    assert await on_demand_runs(b) == [("a", RunStatus.SUCCESS)]
    assert b.cpu.calls == []
    row = await WarmupStore(b.db).get(c.slug, c.data_hash)
    assert row is not None
    assert row.status is WarmupState.READY


async def test_a_follower_takes_the_warmup_over_when_its_holder_dies(fleet: Fleet) -> None:
    a, b = fleet.a, fleet.b
    c = comparison("tea-vs-juice")
    await ComparisonStore(a.db).upsert(c, fleet.clock.wall_ms())
    key = f"warmup:on-demand:{c.slug}:{c.data_hash}"
    assert isinstance(await a.locks.acquire(key, LEASE_MS), Acquired)  # then A dies holding it
    await b.on_demand.request(c.slug, None)
    b_flight = b.on_demand._flights[(c.slug, c.data_hash)]
    await until(lambda: b_flight.elsewhere)
    await fleet.expire(key)
    b_task = task_of(b, c.slug, c.data_hash)
    await fleet.clock.advance(FOLLOW_POLL_S)
    await b_task
    assert await on_demand_runs(b) == [("b", RunStatus.SUCCESS)]
    assert b.on_demand.computations == 1


@pytest.mark.slow
async def test_two_real_daemons_on_one_sqlite_file_compute_and_record_a_warmup_once(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    """The issue's measurement (19 run rows for one warmup, two processes on one SQLite file),
    repeated with real ``warmupd serve`` processes: now one run row and one computation."""
    shared = tmp_path / "shared-state"
    a = DaemonProcess(tmp_path, "a", state_dir=shared).start(wait=False)
    b = DaemonProcess(tmp_path, "b", state_dir=shared).start(wait=False)
    daemons += [a, b]
    await asyncio.to_thread(a.wait_healthy)
    await asyncio.to_thread(b.wait_healthy)
    slug = "tea-vs-coffee"
    body = {"terms": ["tea", "coffee"], "timeframe": "today 12-m", "series": SERIES}
    status, _, _ = await asyncio.to_thread(
        a.request, "PUT", f"/api/comparisons/{slug}", body, {"X-Job-Secret": JOB_SECRET}
    )
    assert status == 201
    headers = {"X-Warmup-Secret": WARMUP_SECRET}

    async def one(session: aiohttp.ClientSession, n: int) -> tuple[int, str]:
        url = (a, b)[n % 2].url + "/api/comparison/warmup"
        async with session.post(url, json={"slug": slug}, headers=headers) as resp:
            return resp.status, (await resp.json())["status"]

    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(one(session, n) for n in range(300)))
    assert {code for code, _ in answers} <= {200, 202}
    for d in (a, b):

        def fresh(d: DaemonProcess = d) -> bool:
            parts = d.request("GET", f"/api/comparison/{slug}/status")[1]["parts"]
            return set(parts.values()) == {"fresh"}

        await asyncio.to_thread(wait_until, fresh, 60)
    conn = sqlite3.connect(a.db_path)
    rows = conn.execute(
        "SELECT status, node FROM job_runs WHERE job = 'warmup-on-demand'"
    ).fetchall()
    conn.close()
    assert [status for status, _ in rows] == ["success"], rows
    processed = 'warmupd_job_items_total{job_name="warmup-on-demand",result="processed"} '
    metrics = [d.request("GET", "/metrics")[1] for d in (a, b)]
    assert sum(f"{processed}1" in text for text in metrics) == 1  # one daemon computed, once
    assert sum(f"{processed}0" in text for text in metrics) == 1


async def test_a_followed_warmup_that_fails_is_not_retried_by_each_follower(fleet: Fleet) -> None:
    a, b = fleet.a, fleet.b
    c = comparison("tea-vs-soda")
    await ComparisonStore(a.db).upsert(c, fleet.clock.wall_ms())
    a.cpu = a.on_demand.warmer.cpu = FailingCpu()
    a.cpu.gate = asyncio.Event()
    await a.on_demand.request(c.slug, None)
    await until(lambda: bool(a.cpu.calls))
    await b.on_demand.request(c.slug, None)
    b_flight = b.on_demand._flights[(c.slug, c.data_hash)]
    await until(lambda: b_flight.elsewhere)
    a.cpu.gate.set()  # the holder's computation fails
    await task_of(a, c.slug, c.data_hash)
    b_task = task_of(b, c.slug, c.data_hash)
    await fleet.clock.advance(FOLLOW_POLL_S)
    await b_task
    assert await on_demand_runs(b) == [("a", RunStatus.FAILED)]
    assert b.cpu.calls == []
    row = await WarmupStore(b.db).get(c.slug, c.data_hash)
    assert row is not None
    assert row.status is WarmupState.FAILED
