"""The job runner: sliding window, one run per job, job lock, lock loss, timeouts, shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeClock
from warmupd.config import JOB_FORECASTS, Config, JobConfig, parse_config
from warmupd.errors import AlreadyRunning, LockedElsewhere, LockLost, NotFound, ProducerError
from warmupd.jobs.base import Fencing, ItemOutcome, Job, RunSettings
from warmupd.jobs.runner import JobRunner
from warmupd.locks import Locks
from warmupd.locks.sqlite import SqliteLocks
from warmupd.logs import outcome_level
from warmupd.models import Acquired, Lease, RunStatus, Trigger
from warmupd.state.runs import RunStore
from warmupd.state.sqlite import SqliteDatabase


@dataclass
class Step:
    """An item whose processing the test controls."""

    name: str
    release: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    finished: bool = False
    fail: str | None = None
    skip: str | None = None


class ScriptedJob(Job[Step]):
    """A job whose items block until the test releases them; it records what ran when."""

    name = JOB_FORECASTS
    lock_key = "warmup:test:lock"

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps
        self.events: list[tuple[str, str]] = []
        self.fences: list[Fencing] = []
        self.selected_with: RunSettings | None = None

    async def select(self, settings: RunSettings, now_ms: int) -> list[Step]:
        self.selected_with = settings
        return self.steps[: settings.limit]

    async def process(self, item: Step, fencing: Fencing, now_ms: int) -> ItemOutcome:
        self.events.append(("start", item.name))
        self.fences.append(fencing)
        item.started.set()
        try:
            await item.release.wait()
        finally:
            self.events.append(("end", item.name))
        item.finished = True
        if item.fail == "fenced":
            raise LockLost("cache write of x rejected: a newer lock holder already wrote it")
        if item.fail:
            raise ProducerError(item.fail)
        return ItemOutcome.skipped(item.skip) if item.skip else ItemOutcome.processed()

    def label(self, item: Step) -> str:
        return item.name


def config(**job: Any) -> Config:
    base = {"locks": {"lease": "60s"}, "jobs": {JOB_FORECASTS: job}}
    return parse_config(base, env={})


@dataclass
class World:
    db: SqliteDatabase
    locks: SqliteLocks
    other: SqliteLocks
    runs: RunStore
    clock: FakeClock
    cfg: Config

    def runner(self, job: Job[Any], locks: Locks | None = None) -> JobRunner:
        return JobRunner(
            jobs={job.name: job},
            config=lambda: self.cfg,
            locks=locks or self.locks,
            runs=self.runs,
            clock=self.clock,
            node="test:1:aaaaaa",
        )


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = FakeClock()
    async with SqliteDatabase(tmp_path / "w.db") as db, SqliteDatabase(tmp_path / "w.db") as db2:
        yield World(
            db=db,
            locks=SqliteLocks(db, clock, "test:1:aaaaaa"),
            other=SqliteLocks(db2, clock, "test:2:bbbbbb"),
            runs=RunStore(db),
            clock=clock,
            cfg=config(concurrency=2),
        )


async def finish(*steps: Step) -> None:
    for step in steps:
        step.release.set()


async def test_sliding_window_starts_an_item_as_soon_as_any_finishes(world: World) -> None:
    """Durations [5, 1, 1, 1, 1, 1] at concurrency 2: the five short items all run beside the long
    one, so the run takes 5 units. A fixed-batch runner would wait for the 5-unit item before
    starting item 3 (6 units): here the long item is released only after the short ones ended."""
    steps = [Step(f"i{n}") for n in range(6)]
    job = ScriptedJob(steps)
    handle = await world.runner(job).trigger(job.name, Trigger.CLI)
    await steps[0].started.wait()
    for short in steps[1:]:
        await short.started.wait()
        assert not steps[0].finished  # still inside the long item's 5 units
        short.release.set()
    while sum(1 for kind, _ in job.events if kind == "end") < 5:
        await asyncio.sleep(0)
    steps[0].release.set()
    record = await handle.wait()
    assert record.status is RunStatus.SUCCESS
    assert record.processed == 6
    # Virtual time: i0 occupies slot 1 for 5 units; i1..i5 run back to back in slot 2 (5 units).
    ends = [name for kind, name in job.events if kind == "end"]
    assert ends == ["i1", "i2", "i3", "i4", "i5", "i0"]
    in_flight = max_in_flight(job.events)
    assert in_flight == 2


def max_in_flight(events: list[tuple[str, str]]) -> int:
    current = peak = 0
    for kind, _ in events:
        current += 1 if kind == "start" else -1
        peak = max(peak, current)
    return peak


async def test_window_never_exceeds_concurrency_and_records_counts(world: World) -> None:
    world.cfg = config(concurrency=3)
    steps = [Step(f"s{n}") for n in range(10)]
    steps[2].fail = "model exploded"
    steps[5].skip = "up_to_date"
    for s in steps:
        s.release.set()
    job = ScriptedJob(steps)
    record = await (await world.runner(job).trigger(job.name, Trigger.HTTP, limit=8)).wait()
    assert max_in_flight(job.events) <= 3
    assert (record.processed, record.skipped, record.failed) == (6, 1, 1)
    assert record.status is RunStatus.SUCCESS
    assert record.errors == ("s2: model exploded",)
    assert record.metadata["limit"] == 8
    assert record.metadata["concurrency"] == 3
    assert record.metadata["selected"] == 8
    assert record.metadata["lockBackend"] == "sqlite"
    assert record.metadata["fence"] >= 1
    assert record.trigger is Trigger.HTTP
    assert job.fences[0].fence == record.metadata["fence"]


async def test_errors_are_capped_at_ten_and_all_failed_fails_the_run(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    steps = [Step(f"f{n}", fail=f"boom {n}") for n in range(12)]
    for s in steps:
        s.release.set()
    job = ScriptedJob(steps)
    with caplog.at_level(logging.INFO, logger="warmupd.jobs"):
        record = await (await world.runner(job).trigger(job.name, Trigger.CLI)).wait()
    assert record.status is RunStatus.FAILED
    assert record.reason == "all_items_failed"
    assert record.failed == 12
    assert len(record.errors) == 10
    # A run that failed every item is a broken job: ERROR, shown by `journalctl -p warning`.
    finished = [r for r in caplog.records if r.msg == "run.finished"]
    assert [r.levelno for r in finished] == [logging.ERROR]


def test_finished_records_are_info_on_success_warning_on_failure_error_when_all_failed() -> None:
    assert outcome_level("success", processed=3, failed=1) == logging.INFO
    assert outcome_level("cancelled", processed=0, failed=0) == logging.INFO
    assert outcome_level("failed", processed=0, failed=0) == logging.WARNING  # e.g. lock_lost
    assert outcome_level("failed", processed=2, failed=1) == logging.WARNING
    assert outcome_level("failed", processed=0, failed=4) == logging.ERROR


async def test_second_trigger_in_process_is_already_running(world: World) -> None:
    step = Step("long")
    job = ScriptedJob([step])
    runner = world.runner(job)
    handle = await runner.trigger(job.name, Trigger.SCHEDULE)
    with pytest.raises(AlreadyRunning) as info:
        await runner.trigger(job.name, Trigger.HTTP)
    assert info.value.run_id == handle.run_id
    skipped = await world.runs.list_runs(status="skipped", limit=5)
    assert [(r.reason, r.trigger) for r in skipped] == [("already_running", Trigger.HTTP)]
    step.release.set()
    assert (await handle.wait()).status is RunStatus.SUCCESS
    # The slot is free again.
    step.release.set()
    assert (await (await runner.trigger(job.name, Trigger.HTTP)).wait()).status is RunStatus.SUCCESS


async def test_lock_held_elsewhere_records_a_skipped_run(world: World) -> None:
    job = ScriptedJob([Step("x")])
    held = await world.other.acquire(job.lock_key, 60_000)
    assert isinstance(held, Acquired)
    with pytest.raises(LockedElsewhere):
        await world.runner(job).trigger(job.name, Trigger.SCHEDULE)
    (record,) = await world.runs.list_runs(limit=5)
    assert (record.status, record.reason) == (RunStatus.SKIPPED, "locked_elsewhere")
    assert job.events == []


async def test_unknown_job_is_not_found(world: World) -> None:
    with pytest.raises(NotFound):
        await world.runner(ScriptedJob([])).trigger("nope", Trigger.HTTP)


class StealableLocks(SqliteLocks):
    """SqliteLocks whose renewals answer "lost" once the test says the lock was taken."""

    stolen = False

    async def renew(self, lease: Lease) -> bool:
        if self.stolen:
            return False
        return await super().renew(lease)


async def test_lock_lost_mid_run_cancels_in_flight_and_starts_nothing_more(world: World) -> None:
    locks = StealableLocks(world.db, world.clock, "test:1:aaaaaa")
    world.cfg = config(concurrency=2)
    steps = [Step(f"l{n}") for n in range(6)]
    steps[0].release.set()
    job = ScriptedJob(steps)
    handle = await world.runner(job, locks).trigger(job.name, Trigger.SCHEDULE)
    await steps[1].started.wait()
    await steps[2].started.wait()
    locks.stolen = True
    await world.clock.advance(21)  # the renewal at lease/3 answers "lost"
    record = await handle.wait()
    assert record.status is RunStatus.FAILED
    assert record.reason == "lock_lost"
    started = {name for kind, name in job.events if kind == "start"}
    assert started == {"l0", "l1", "l2"}  # nothing started after the loss
    assert not steps[1].finished  # in-flight items were cancelled
    assert not steps[2].finished
    assert record.processed == 1
    assert any("cancelled (lock_lost)" in e for e in record.errors)


async def test_item_timeout_fails_the_item_and_the_run_goes_on(world: World) -> None:
    world.cfg = config(concurrency=1, item_timeout="500ms")
    slow, quick = Step("slow"), Step("quick")
    quick.release.set()
    job = ScriptedJob([slow, quick])
    record = await (await world.runner(job).trigger(job.name, Trigger.CLI)).wait()
    assert (record.processed, record.failed) == (1, 1)
    assert record.errors == ("slow: timed out after 0.5s",)
    assert record.status is RunStatus.SUCCESS


async def test_max_duration_cancels_the_run(world: World) -> None:
    world.cfg = config(concurrency=1, max_duration="300ms")
    job = ScriptedJob([Step("forever"), Step("never")])
    record = await (await world.runner(job).trigger(job.name, Trigger.CLI)).wait()
    assert (record.status, record.reason) == (RunStatus.CANCELLED, "max_duration")
    assert [name for kind, name in job.events if kind == "start"] == ["forever"]
    # The lock was released on the way out: another process can take it at once.
    assert isinstance(await world.other.acquire(job.lock_key, 60_000), Acquired)


async def test_shutdown_drains_then_cancels_and_releases(world: World) -> None:
    world.cfg = config(concurrency=2)
    steps = [Step(f"d{n}") for n in range(4)]
    job = ScriptedJob(steps)
    runner = world.runner(job)
    handle = await runner.trigger(job.name, Trigger.SCHEDULE)
    await steps[0].started.wait()
    await steps[1].started.wait()
    steps[0].release.set()  # finishes during the grace; d1 does not
    await runner.shutdown(grace_s=0.2)
    record = await handle.wait()
    assert (record.status, record.reason) == (RunStatus.CANCELLED, "shutdown")
    assert record.processed == 1
    assert [name for kind, name in job.events if kind == "start"] == ["d0", "d1"]
    assert isinstance(await world.other.acquire(job.lock_key, 60_000), Acquired)
    with pytest.raises(Exception, match="shutting down"):
        await runner.trigger(job.name, Trigger.HTTP)


async def test_settings_are_frozen_at_start(world: World) -> None:
    step = Step("a")
    job = ScriptedJob([step])
    handle = await world.runner(job).trigger(job.name, Trigger.CLI)
    world.cfg = config(concurrency=9, limit=3)  # a reload while the run is in progress
    step.release.set()
    record = await handle.wait()
    assert record.metadata["concurrency"] == 2
    assert job.selected_with is not None
    assert job.selected_with.concurrency == 2


def test_job_config_defaults_match_the_spec() -> None:
    job = parse_config({}, env={}).jobs[JOB_FORECASTS]
    assert isinstance(job, JobConfig)
    assert (job.limit, job.concurrency, job.window_ms) == (50, 5, 7 * 86_400_000)


async def test_scheduler_hooks_run_fires_and_record_misfires(world: World) -> None:
    from warmupd.models import Fire
    from warmupd.scheduler_loop import Misfire

    step = Step("s")
    step.release.set()
    job = ScriptedJob([step])
    runner = world.runner(job)
    await runner.on_fire(Fire(job=job.name, due_ms=1_000, trigger=Trigger.STARTUP, coalesced=3))
    while runner.running_run_id(job.name) is not None:
        await asyncio.sleep(0.01)
    await runner.on_misfire(Misfire(job=job.name, first_due_ms=10, last_due_ms=20, count=2))
    held = await world.other.acquire(job.lock_key, 60_000)
    assert isinstance(held, Acquired)
    await runner.on_fire(Fire(job=job.name, due_ms=2_000))  # refused: recorded, never raised
    runs = {r.reason: r for r in await world.runs.list_runs(limit=10)}
    assert runs[None].trigger is Trigger.STARTUP
    assert runs[None].metadata["dueAt"] == 1_000
    assert runs["misfired"].metadata == {"firstDueAt": 10, "lastDueAt": 20, "missed": 2}
    assert runs["locked_elsewhere"].metadata["dueAt"] == 2_000


async def test_a_run_whose_lock_arrives_during_the_drain_is_recorded_cancelled(
    world: World,
) -> None:
    """Found in review: a trigger still acquiring its lock when shutdown starts must not start."""
    gate = asyncio.Event()

    class SlowLocks(SqliteLocks):
        async def _acquire(self, key: str, lease_ms: int) -> Any:
            await gate.wait()  # the acquire round trip is in flight (busy SQLite, slow Redis)
            return await super()._acquire(key, lease_ms)

    step = Step("x")
    step.release.set()
    job = ScriptedJob([step])
    runner = world.runner(job, SlowLocks(world.db, world.clock, "test:1:aaaaaa"))
    trig = asyncio.create_task(runner.trigger(job.name, Trigger.SCHEDULE))
    await asyncio.sleep(0.01)
    drain = asyncio.create_task(runner.shutdown(5))
    await asyncio.sleep(0.01)
    assert not drain.done()  # the drain waits for the start in progress
    gate.set()
    await drain
    with pytest.raises(Exception, match="shutting down"):
        await trig
    assert runner.active_tasks() == []
    assert job.events == []
    (record,) = await world.runs.list_runs(limit=5)
    assert (record.status, record.reason) == (RunStatus.CANCELLED, "shutdown")
    assert isinstance(await world.other.acquire(job.lock_key, 60_000), Acquired)


async def test_a_refused_fenced_write_stops_the_run_as_lock_lost(world: World) -> None:
    world.cfg = config(concurrency=1)
    steps = [Step("ok"), Step("fenced", fail="fenced"), Step("never")]
    for s in steps:
        s.release.set()
    job = ScriptedJob(steps)
    record = await (await world.runner(job).trigger(job.name, Trigger.CLI)).wait()
    assert (record.status, record.reason) == (RunStatus.FAILED, "lock_lost")
    assert [name for kind, name in job.events if kind == "start"] == ["ok", "fenced"]
