"""The warmup jobs, on-demand warmups and cache reads over a real SQLite file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.fakes import FakeClock
from warmupd.config import JOB_FORECASTS, JOB_HOUSEKEEPING, JOB_INSIGHTS, Config, parse_config
from warmupd.errors import NotFound, ProducerError, QueueFull, StaleDataHash
from warmupd.jobs import build_jobs
from warmupd.jobs.base import Fencing
from warmupd.jobs.ondemand import OnDemand
from warmupd.jobs.parts import CHANGE_CHECK_S, INSIGHTS_PART, Warmer
from warmupd.jobs.reads import ComparisonService
from warmupd.jobs.runner import JobRunner
from warmupd.locks.sqlite import SqliteLocks
from warmupd.models import Comparison, Freshness, RunStatus, Trigger, WarmupState
from warmupd.producers.insights_builtin import BuiltinInsights
from warmupd.state.cache import CacheStore, insights_key
from warmupd.state.runs import NodeStore, RunStore
from warmupd.state.sqlite import SqliteDatabase
from warmupd.state.store import ComparisonStore, WarmupStore

T = TypeVar("T")
DAY = 86_400_000


class RecordingCpu:
    """Runs functions inline (statsmodels in the test process is fine) and counts the calls.

    ``gate``, when set, holds every call until the test opens it, so computations stay in flight.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None
        self.log: list[str] = []
        """``start`` and the name of each function run, in order."""

    def start(self) -> None:
        self.log.append("start")

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self.calls.append(fn.__name__)
        self.log.append(fn.__name__)
        if self.gate is not None:
            await self.gate.wait()
        return fn(*args, **kwargs)


class RecordingWarmups(WarmupStore):
    """Records each status it writes."""

    def __init__(self, db: SqliteDatabase) -> None:
        super().__init__(db)
        self.history: list[tuple[str, WarmupState]] = []

    async def set(
        self, slug: str, data_hash: str, status: WarmupState, now_ms: int, **kw: Any
    ) -> None:
        self.history.append((slug, status))
        await super().set(slug, data_hash, status, now_ms, **kw)


def series(n: int, a0: float = 40, b0: float = 60, step: float = 0.2) -> tuple[dict[str, Any], ...]:
    return tuple(
        {
            "date": f"2026-{1 + d // 28:02d}-{1 + d % 28:02d}",
            "tea": round(a0 + step * d + (5 if d % 7 == 5 else 0), 1),
            "coffee": round(b0 - step * d / 2, 1),
        }
        for d in range(n)
    )


def comparison(slug: str, n: int = 42, **kw: Any) -> Comparison:
    return Comparison(
        slug=slug, term_a="tea", term_b="coffee", timeframe="90d", series=series(n, **kw)
    )


@dataclass
class World:
    cfg: Config
    clock: FakeClock
    comparisons: ComparisonStore
    cache: CacheStore
    runs: RunStore
    warmups: RecordingWarmups
    cpu: RecordingCpu
    warmer: Warmer
    runner: JobRunner
    on_demand: OnDemand
    service: ComparisonService
    other_locks: SqliteLocks
    other_db: SqliteDatabase
    """A second connection to the same file: what another warmupd process writes through."""


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    cfg = parse_config({"on_demand": {"max_queued": 2, "concurrency": 1}}, env={})
    clock = FakeClock(wall_ms=1_767_225_600_000)
    async with SqliteDatabase(tmp_path / "w.db") as db, SqliteDatabase(tmp_path / "w.db") as db2:
        locks = SqliteLocks(db, clock, "n1")
        comparisons, cache, runs = ComparisonStore(db), CacheStore(db), RunStore(db)
        warmups = RecordingWarmups(db)
        cpu = RecordingCpu()
        warmer = Warmer(
            cache=cache,
            cpu=cpu,
            insights=BuiltinInsights(prompt_version="1"),
            cache_config=cfg.cache,
            forecast_config=cfg.forecast,
            clock=clock,
        )
        jobs = build_jobs(
            config=cfg,
            comparisons=comparisons,
            cache=cache,
            runs=runs,
            warmups=warmups,
            nodes=NodeStore(db),
            warmer=warmer,
            purge_locks=locks.purge_expired,
        )
        runner = JobRunner(
            jobs=jobs, config=lambda: cfg, locks=locks, runs=runs, clock=clock, node="n1"
        )
        on_demand = OnDemand(
            config=lambda: cfg,
            comparisons=comparisons,
            warmups=warmups,
            runs=runs,
            warmer=warmer,
            locks=locks,
            clock=clock,
            node="n1",
        )
        service = ComparisonService(
            config=lambda: cfg,
            comparisons=comparisons,
            warmups=warmups,
            warmer=warmer,
            on_demand=on_demand,
            clock=clock,
        )
        yield World(
            cfg,
            clock,
            comparisons,
            cache,
            runs,
            warmups,
            cpu,
            warmer,
            runner,
            on_demand,
            service,
            SqliteLocks(db2, clock, "n2"),
            db2,
        )
        await on_demand.shutdown(0)


async def run(world: World, job: str) -> Any:
    return await (await world.runner.trigger(job, Trigger.CLI)).wait()


async def test_forecasts_job_computes_then_skips_up_to_date_then_recomputes_changed(
    world: World,
) -> None:
    now = world.clock.wall_ms()
    for slug in ("tea-vs-coffee", "short-one"):
        await world.comparisons.upsert(comparison(slug, n=42 if slug != "short-one" else 4), now)
        await world.comparisons.add_views(slug, 5, now)
    first = await run(world, JOB_FORECASTS)
    assert (first.status, first.processed, first.skipped, first.failed) == (
        RunStatus.SUCCESS,
        1,
        1,
        0,
    )
    assert world.cpu.calls.count("forecast_term") == 2  # both terms of the long comparison
    # The run started the pool before its first item asked it for anything (SPEC §17).
    assert world.cpu.log[:2] == ["start", "forecast_term"]
    pack = json.loads(await world.service.pack("tea-vs-coffee"))
    assert pack["forecasts"]["termA"]["term"] == "termA"
    assert pack["forecasts"]["termB"]["termName"] == "coffee"
    assert pack["insights"] is None  # not this job's part
    second = await run(world, JOB_FORECASTS)
    assert (second.processed, second.skipped) == (0, 2)
    assert world.cpu.calls.count("forecast_term") == 2  # nothing recomputed
    changed = comparison("tea-vs-coffee", a0=20)
    await world.comparisons.upsert(changed, now + 1)
    third = await run(world, JOB_FORECASTS)
    assert (third.processed, third.skipped) == (1, 1)
    assert world.cpu.calls.count("forecast_term") == 4
    states = await world.warmer.states("tea-vs-coffee", changed.data_hash, now)
    assert states["forecastA"].up_to_date
    assert states["forecastB"].up_to_date


async def test_insufficient_data_is_skipped_with_its_reason(world: World) -> None:
    now = world.clock.wall_ms()
    await world.comparisons.upsert(comparison("tiny", n=3), now)
    outcome = await world.warmer.warm(
        (await world.comparisons.get("tiny")),  # type: ignore[arg-type]
        ["forecastA", "forecastB"],
        fencing(),
    )
    assert (outcome.result.value, outcome.reason) == ("skipped", "insufficient_data")


def fencing() -> Fencing:
    return Fencing(fence_key="test", fence=1)


async def test_insights_job_writes_packs_for_viewed_comparisons(world: World) -> None:
    now = world.clock.wall_ms()
    await world.comparisons.upsert(comparison("viewed"), now)
    await world.comparisons.add_views("viewed", 20, now - 60 * DAY)
    await world.comparisons.upsert(comparison("unviewed"), now)
    record = await run(world, JOB_INSIGHTS)
    assert (record.processed, record.metadata["selected"]) == (1, 1)
    assert world.cpu.log[0] == "start"  # the facts step runs in the pool: started with the run
    pack = json.loads(await world.service.pack("viewed"))
    assert "tea" in pack["insights"]["meaningExplanation"]["text"]
    assert (await run(world, JOB_INSIGHTS)).skipped == 1


async def test_housekeeping_purges_expired_entries_and_old_runs(world: World) -> None:
    now = world.clock.wall_ms()
    await world.cache.put(
        "forecast:x:termA:h",
        kind="forecast",
        slug="x",
        data_hash="h",
        version="2",
        value={},
        now_ms=now - 40 * DAY,
        fresh_ttl_ms=DAY,
        stale_ttl_ms=30 * DAY,
        fence_key="k",
        fence=1,
    )
    await world.cache.put(
        "forecast:y:termA:h",
        kind="forecast",
        slug="y",
        data_hash="h",
        version="2",
        value={},
        now_ms=now,
        fresh_ttl_ms=DAY,
        stale_ttl_ms=30 * DAY,
        fence_key="k",
        fence=1,
    )
    old = await world.runs.record(
        "warmup-forecasts",
        status=RunStatus.SUCCESS,
        trigger=Trigger.CLI,
        node="n",
        now_ms=now - 100 * DAY,
        reason=None,
    )
    record = await run(world, JOB_HOUSEKEEPING)
    assert record.status is RunStatus.SUCCESS
    assert record.processed == record.metadata["selected"] == 5
    assert record.metadata["purged"]["cacheEntries"] == 1
    assert record.metadata["purged"]["runs"] == 1
    rows = await world.cache.db.fetchall("SELECT key FROM cache_entries")
    assert [r["key"] for r in rows] == ["forecast:y:termA:h"]
    assert await world.runs.get(old.id) is None


async def test_on_demand_single_flight_for_a_thousand_requests(world: World) -> None:
    now = world.clock.wall_ms()
    c = comparison("hot")
    await world.comparisons.upsert(c, now)
    world.cpu.gate = asyncio.Event()
    answers = await asyncio.gather(*(world.on_demand.request("hot", None) for _ in range(1000)))
    assert {a["status"] for a in answers} <= {"queued", "running"}
    assert {a["dataHash"] for a in answers} == {c.data_hash}
    world.cpu.gate.set()
    while world.on_demand.flight_state("hot", c.data_hash) is not None:
        await asyncio.sleep(0.01)
    assert world.on_demand.computations == 1
    assert world.cpu.calls.count("forecast_term") == 2
    assert world.cpu.log.count("start") == 1  # when the one warmup was queued, before its items
    assert world.cpu.log[0] == "start"
    statuses = [s for slug, s in world.warmups.history if slug == "hot"]
    assert statuses == [WarmupState.QUEUED, WarmupState.RUNNING, WarmupState.READY]
    assert (await world.on_demand.request("hot", c.data_hash))["status"] == "ready"
    status = await world.service.warmup_status("hot")
    assert status["warmup"] == "ready"
    assert status["parts"] == {"forecastA": "fresh", "forecastB": "fresh", "insights": "fresh"}
    (record,) = await world.runs.list_runs(job="warmup-on-demand", limit=5)
    assert (record.status, record.trigger, record.processed) == (
        RunStatus.SUCCESS,
        Trigger.ON_DEMAND,
        1,
    )


async def test_on_demand_queue_bound_and_bad_requests(world: World) -> None:
    now = world.clock.wall_ms()
    for slug in ("q1", "q2", "q3", "q4"):
        await world.comparisons.upsert(comparison(slug), now)
    world.cpu.gate = asyncio.Event()
    await world.on_demand.request("q1", None)
    while world.on_demand.in_flight() < 1:  # q1 takes the only slot (concurrency 1)
        await asyncio.sleep(0.01)
    await world.on_demand.request("q2", None)
    await world.on_demand.request("q3", None)
    assert (world.on_demand.in_flight(), world.on_demand.queued()) == (1, 2)
    with pytest.raises(QueueFull):
        await world.on_demand.request("q4", None)
    assert world.on_demand.flight_state("q4", comparison("q4").data_hash) is None
    with pytest.raises(NotFound):
        await world.on_demand.request("missing", None)
    with pytest.raises(StaleDataHash):
        await world.on_demand.request("q1", "0000000000000000")
    world.cpu.gate.set()


async def test_pack_reports_missing_schedules_warmup_and_serves_stale(world: World) -> None:
    now = world.clock.wall_ms()
    c = comparison("pack-me")
    await world.comparisons.upsert(c, now)
    world.cpu.gate = asyncio.Event()
    pack = json.loads(await world.service.pack("pack-me"))
    assert pack["needsWarmup"] is True
    assert pack["freshness"] == "missing"
    assert world.on_demand.flight_state("pack-me", c.data_hash) is not None  # reads never compute
    world.cpu.gate.set()
    while world.on_demand.flight_state("pack-me", c.data_hash) is not None:
        await asyncio.sleep(0.01)
    fresh = json.loads(await world.service.pack("pack-me"))
    assert (fresh["freshness"], fresh["needsWarmup"]) == ("fresh", False)
    world.clock.set_wall_ms(now + 8 * DAY)  # past fresh_ttl (7d), inside stale_ttl (30d)
    stale = json.loads(await world.service.pack("pack-me"))
    assert (stale["freshness"], stale["needsWarmup"]) == ("stale", False)
    assert stale["forecasts"]["termA"] == fresh["forecasts"]["termA"]
    assert world.on_demand.flight_state("pack-me", c.data_hash) is not None  # background refresh
    with pytest.raises(NotFound):
        json.loads(await world.service.pack("nope"))


async def test_short_comparison_is_ready_without_forecasts(world: World) -> None:
    now = world.clock.wall_ms()
    c = comparison("short", n=4)  # below forecast.min_points (7): forecasts never apply
    await world.comparisons.upsert(c, now)
    assert (await world.on_demand.request("short", None))["status"] == "queued"
    while world.on_demand.flight_state("short", c.data_hash) is not None:
        await asyncio.sleep(0.01)
    assert world.cpu.calls.count("forecast_term") == 0
    assert (await world.on_demand.request("short", None))["status"] == "ready"
    pack = json.loads(await world.service.pack("short"))
    assert (pack["needsWarmup"], pack["freshness"]) == (False, "fresh")
    assert pack["forecasts"] == {"termA": None, "termB": None}
    assert pack["insights"] is not None
    assert world.on_demand.flight_state("short", c.data_hash) is None  # no pointless warmup
    assert (await world.service.warmup_status("short"))["warmup"] == "ready"


async def test_on_demand_shutdown_records_the_run_cancelled(world: World) -> None:
    now = world.clock.wall_ms()
    c = comparison("stopping")
    await world.comparisons.upsert(c, now)
    world.cpu.gate = asyncio.Event()  # the computation never finishes by itself
    await world.on_demand.request("stopping", None)
    while world.on_demand.in_flight() < 1 or not world.cpu.calls:
        await asyncio.sleep(0.01)
    await world.on_demand.shutdown(0)
    (record,) = await world.runs.list_runs(job="warmup-on-demand", limit=5)
    assert (record.status, record.reason) == (RunStatus.CANCELLED, "shutdown")
    row = await world.warmups.get("stopping", c.data_hash)
    assert row is not None
    assert row.status is WarmupState.FAILED
    with pytest.raises(QueueFull):  # no new warmups once stopping
        await world.on_demand.request("stopping", None)


async def test_concurrent_reads_are_answered_by_one_statement(world: World) -> None:
    now = world.clock.wall_ms()
    await world.comparisons.upsert(comparison("popular"), now)
    await world.comparisons.upsert(comparison("other"), now)
    calls: list[list[str]] = []
    original = world.cache.read_comparisons

    async def counting(slugs: list[str], now_ms: int, *, values: bool) -> Any:
        calls.append(sorted(slugs))
        return await original(slugs, now_ms, values=values)

    world.cache.read_comparisons = counting  # type: ignore[method-assign]
    reads = await asyncio.gather(
        *(world.warmer.read("popular", values=True) for _ in range(50)),
        world.warmer.read("other", values=True),
        world.warmer.read("missing", values=True),
    )
    assert calls == [["missing", "other", "popular"]]  # 52 readers, one statement
    assert all(r is not None and r.head.slug == "popular" for r in reads[:50])
    assert reads[50] is not None
    assert reads[50].head.slug == "other"
    assert reads[51] is None
    await world.warmer.read("popular")  # nothing was written since: the snapshot in memory
    assert len(calls) == 1
    await world.service.upsert(comparison("popular", a0=5))
    await world.warmer.read("popular")  # this process wrote it: read again
    assert calls[-1] == ["popular"]


async def test_a_kept_snapshot_follows_other_processes_writes_and_the_clock(world: World) -> None:
    """Reads answered from memory must see another process's write at once, and compute
    fresh/stale/missing at their own time (a kept snapshot must never freeze them)."""
    now = world.clock.wall_ms()
    c = comparison("kept")
    await world.comparisons.upsert(c, now)
    statements: list[list[str]] = []
    original = world.cache.read_comparisons

    async def counting(slugs: list[str], now_ms: int, *, values: bool) -> Any:
        statements.append(sorted(slugs))
        return await original(slugs, now_ms, values=values)

    world.cache.read_comparisons = counting  # type: ignore[method-assign]
    first = await world.warmer.read("kept", values=True)
    assert first is not None
    assert first.states[INSIGHTS_PART].freshness is Freshness.MISSING
    await CacheStore(world.other_db).put(  # another process writes the pack
        insights_key("kept", c.data_hash),
        kind="insights",
        slug="kept",
        data_hash=c.data_hash,
        version=world.warmer.insights_version,
        value={"x": 1},
        now_ms=now,
        fresh_ttl_ms=DAY,
        stale_ttl_ms=2 * DAY,
        fence_key="other",
        fence=1,
    )
    # Other processes' writes are seen once the state version is checked again (CHANGE_CHECK_S).
    await world.clock.advance(CHANGE_CHECK_S)
    seen = await world.warmer.read("kept", values=True)
    assert seen is not None
    assert (seen.texts[INSIGHTS_PART], seen.states[INSIGHTS_PART].freshness) == (
        '{"x":1}',
        Freshness.FRESH,
    )
    assert len(statements) == 2
    world.clock.set_wall_ms(now + DAY)  # past fresh_until: stale, from memory
    stale = await world.warmer.read("kept", values=True)
    assert stale is not None
    assert stale.states[INSIGHTS_PART].freshness is Freshness.STALE
    assert stale.texts[INSIGHTS_PART] == '{"x":1}'
    assert len(statements) == 2
    pack = json.loads(await world.service.pack("kept"))
    assert (pack["insights"], pack["freshness"]) == ({"x": 1}, "missing")  # forecasts missing
    world.clock.set_wall_ms(now + 2 * DAY)  # past stale_until: the entry is gone, read again
    gone = await world.warmer.read("kept", values=True)
    assert gone is not None
    assert (gone.texts[INSIGHTS_PART], gone.states[INSIGHTS_PART].freshness) == (
        None,
        Freshness.MISSING,
    )
    assert len(statements) == 3


async def test_draining_starts_no_queued_warmup(world: World) -> None:
    """Found in review: the drain must let running warmups finish without starting queued ones."""
    now = world.clock.wall_ms()
    for slug in ("d1", "d2"):
        await world.comparisons.upsert(comparison(slug), now)
    world.cpu.gate = asyncio.Event()
    await world.on_demand.request("d1", None)
    while world.on_demand.in_flight() < 1 or not world.cpu.calls:
        await asyncio.sleep(0.01)
    await world.on_demand.request("d2", None)  # waits for the only slot
    drain = asyncio.ensure_future(world.on_demand.shutdown(5))
    await asyncio.sleep(0.01)
    world.cpu.gate.set()  # d1 finishes within the grace
    await drain
    assert world.on_demand.computations == 1
    d2 = await world.warmups.get("d2", comparison("d2").data_hash)
    assert d2 is not None
    assert (d2.status, d2.error) == (WarmupState.FAILED, "cancelled (shutdown)")
    runs = await world.runs.list_runs(job="warmup-on-demand", limit=5)
    assert [(r.status, r.metadata["slug"]) for r in runs] == [(RunStatus.SUCCESS, "d1")]


async def test_a_failed_part_cancels_its_siblings(world: World) -> None:
    """Found in review: the forecasts of an item whose insights failed must not finish later."""
    now = world.clock.wall_ms()
    c = comparison("half")
    await world.comparisons.upsert(c, now)

    class BrokenInsights(BuiltinInsights):
        async def insights(self, comparison: Comparison, *, now_ms: int) -> dict[str, Any]:
            raise ProducerError("AI server answered 401")

    world.warmer.insights = BrokenInsights(prompt_version="1")
    world.cpu.gate = asyncio.Event()  # the forecasts are still computing when insights fail
    with pytest.raises(ProducerError, match="401"):
        await world.warmer.warm(c, ["forecastA", "forecastB", "insights"], fencing())
    world.cpu.gate.set()
    for _ in range(20):
        await asyncio.sleep(0)
    states = await world.warmer.states("half", c.data_hash, world.clock.wall_ms())
    assert not states["forecastA"].up_to_date
    assert not states["forecastB"].up_to_date


async def test_status_follows_the_parts_over_an_old_status_row(world: World) -> None:
    """Found in review: a failed or orphaned warmup row must not hide fresh parts or linger."""
    now = world.clock.wall_ms()
    c = comparison("rows")
    await world.comparisons.upsert(c, now)
    await world.warmups.set("rows", c.data_hash, WarmupState.RUNNING, now - 31 * 60_000)
    assert (await world.service.warmup_status("rows"))["warmup"] == "idle"  # left by a dead process
    await world.warmups.set(
        "rows", c.data_hash, WarmupState.FAILED, now, error="cancelled (shutdown)"
    )
    failed = await world.service.warmup_status("rows")
    assert (failed["warmup"], failed["lastError"]) == ("failed", "cancelled (shutdown)")
    await world.warmer.warm(c, ["forecastA", "forecastB", "insights"], fencing())  # a nightly run
    ready = await world.service.warmup_status("rows")
    assert ready["warmup"] == "ready"
    assert "lastError" not in ready


async def test_a_new_data_hash_is_not_refused_on_a_read_from_before_the_call(world: World) -> None:
    """Found in review: joining an in-flight read could answer 409 for the current dataHash."""
    now = world.clock.wall_ms()
    await world.comparisons.upsert(comparison("moving"), now)
    original = world.cache.read_comparisons
    hold = asyncio.Event()
    held: list[bool] = []

    async def slow_first(slugs: list[str], now_ms: int, *, values: bool) -> Any:
        result = await original(slugs, now_ms, values=values)
        if not held:
            held.append(True)
            await hold.wait()  # the statement ran; its answer is still on its way
        return result

    world.cache.read_comparisons = slow_first  # type: ignore[method-assign]
    early = asyncio.ensure_future(world.warmer.read("moving"))
    while not held:
        await asyncio.sleep(0.01)
    new = comparison("moving", a0=10)
    await world.comparisons.upsert(new, now + 1)  # another process stores a new series
    request = asyncio.ensure_future(world.on_demand.request("moving", new.data_hash))
    await asyncio.sleep(0.01)
    hold.set()
    answer = await request
    assert answer["dataHash"] == new.data_hash
    assert (await early) is not None


async def test_status_reports_an_overdue_job_as_degraded(world: World) -> None:
    """SPEC §4: overdue = last success older than two periods plus misfire_grace (the daemon is
    its own dead-man's switch); status says so, per job and as ``state: degraded``."""
    from warmupd.jobs.service import JobsService
    from warmupd.scheduler import JobSchedule
    from warmupd.scheduler_loop import Scheduler
    from warmupd.state.store import ScheduleStore
    from warmupd.status import LockState, StatusService

    db = world.comparisons.db
    hourly = JobSchedule(name=JOB_HOUSEKEEPING, expr="17 * * * *", misfire_grace_ms=3_600_000)

    async def ignore(_: object) -> None:
        return None

    scheduler = Scheduler(
        [hourly],
        state=ScheduleStore(db),
        claimer=world.other_locks,
        clock=world.clock,
        on_fire=ignore,
    )
    await scheduler.start_up(world.clock.wall_ms())
    jobs = JobsService(
        config=lambda: world.cfg,
        runner=world.runner,
        runs=world.runs,
        clock=world.clock,
        scheduler=lambda: scheduler,
    )
    status = StatusService(
        db=db,
        runs=world.runs,
        cache=world.cache,
        job_list=jobs,
        on_demand=world.on_demand,
        scheduler=lambda: scheduler,
        lock_state=lambda: LockState(backend="sqlite", redis="unconfigured", usable=True),
        node="n1",
        clock=world.clock,
        started_ms=world.clock.wall_ms(),
    )
    doc = await status.status()
    assert doc["state"] == "ok"
    assert next(j for j in doc["jobs"] if j["name"] == JOB_HOUSEKEEPING)["overdue"] is False
    world.clock.set_wall_ms(world.clock.wall_ms() + 4 * 3_600_000)  # no success for 4 hours
    doc = await status.status()
    job = next(j for j in doc["jobs"] if j["name"] == JOB_HOUSEKEEPING)
    assert (doc["state"], job["overdue"], job["lastSuccessAt"]) == ("degraded", True, None)
    await run(world, JOB_HOUSEKEEPING)  # a success clears it
    doc = await status.status()
    assert doc["state"] == "ok"
    assert (
        next(j for j in doc["jobs"] if j["name"] == JOB_HOUSEKEEPING)["lastRun"]["status"]
        == "success"
    )
    assert (await status.ready())[0] is True  # readyz stays 200 throughout
