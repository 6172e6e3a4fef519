"""Pause/resume (SPEC §15): the store shared through the state file, the runner's treatment of a
paused job's fires, the jobs service's view (paused flag, live progress of a running run)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeClock
from tests.test_jobs_runner import ScriptedJob, Step, World, config
from warmupd.errors import NotFound
from warmupd.jobs.service import JobsService
from warmupd.locks.sqlite import SqliteLocks
from warmupd.models import Fire, RunStatus, Trigger
from warmupd.state.pauses import PauseStore
from warmupd.state.runs import RunStore
from warmupd.state.sqlite import SqliteDatabase


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


async def test_the_pause_is_shared_through_the_state_file(tmp_path: Path) -> None:
    async with SqliteDatabase(tmp_path / "s.db") as one, SqliteDatabase(tmp_path / "s.db") as two:
        a, b = PauseStore(one), PauseStore(two)
        assert await a.pause("housekeeping", 1_000, "node-a") == 1_000
        assert await b.pause("housekeeping", 2_000, "node-b") == 1_000  # the first pause stands
        assert await b.is_paused("housekeeping")
        assert await b.paused() == {"housekeeping": 1_000}
        assert await b.resume("housekeeping")
        assert not await a.is_paused("housekeeping")
        assert not await a.resume("housekeeping")
    async with SqliteDatabase(tmp_path / "s.db") as again:  # survives closing (a restart)
        await PauseStore(again).pause("warmup-forecasts", 3_000, "node-a")
    async with SqliteDatabase(tmp_path / "s.db") as again:
        assert await PauseStore(again).paused() == {"warmup-forecasts": 3_000}


def runner_with_pauses(world: World, job: ScriptedJob) -> tuple[Any, PauseStore]:
    pauses = PauseStore(world.db)
    runner = world.runner(job)
    runner.paused = pauses.is_paused
    return runner, pauses


async def test_a_paused_jobs_fire_is_recorded_skipped_paused_and_not_run(world: World) -> None:
    step = Step("i0")
    job = ScriptedJob([step])
    runner, pauses = runner_with_pauses(world, job)
    await pauses.pause(job.name, world.clock.wall_ms(), "test")
    await runner.on_fire(Fire(job=job.name, due_ms=123_000, trigger=Trigger.SCHEDULE))
    (record,) = await world.runs.list_runs(job=job.name)
    assert (record.status, record.reason, record.trigger) == (
        RunStatus.SKIPPED,
        "paused",
        Trigger.SCHEDULE,
    )
    assert record.metadata == {"dueAt": 123_000}
    assert job.events == []


async def test_a_manual_trigger_still_runs_and_resume_restores_fires(world: World) -> None:
    steps = [Step("i0"), Step("i1")]
    job = ScriptedJob(steps)
    runner, pauses = runner_with_pauses(world, job)
    await pauses.pause(job.name, world.clock.wall_ms(), "test")
    for s in steps:
        s.release.set()
    handle = await runner.trigger(job.name, Trigger.HTTP)
    assert (await handle.wait()).status is RunStatus.SUCCESS
    await pauses.resume(job.name)
    await runner.on_fire(Fire(job=job.name, due_ms=1, trigger=Trigger.SCHEDULE))
    newest = (await world.runs.list_runs(job=job.name, limit=1))[0]
    assert newest.trigger is Trigger.SCHEDULE
    assert (await runner.runs.get(newest.id)) is not None
    assert (await newest_finished(world, runner, newest.id)).status is RunStatus.SUCCESS


async def newest_finished(world: World, runner: Any, run_id: int) -> Any:
    for task in runner.active_tasks():
        await task
    record = await world.runs.get(run_id)
    assert record is not None
    return record


async def test_jobs_service_shows_pauses_and_live_progress(world: World) -> None:
    steps = [Step("i0"), Step("i1"), Step("i2", fail="boom")]
    job = ScriptedJob(steps)
    runner, pauses = runner_with_pauses(world, job)
    service = JobsService(
        config=lambda: world.cfg,
        runner=runner,
        runs=world.runs,
        clock=world.clock,
        pauses=pauses,
        node="test:1:aaaaaa",
    )
    paused = await service.set_paused(job.name, True)
    assert paused["paused"] is True
    assert paused["pausedAt"].endswith("Z")
    (entry,) = await service.jobs()
    assert entry["paused"] is True
    assert (await service.set_paused(job.name, False)) == {
        "job": job.name,
        "paused": False,
        "pausedAt": None,
    }
    with pytest.raises(NotFound):
        await service.set_paused("no-such-job", True)

    handle = await runner.trigger(job.name, Trigger.HTTP)
    await steps[0].started.wait()
    steps[0].release.set()
    await steps[1].started.wait()
    while True:  # i0 is tallied once its worker resumes; no timing involved
        live = await service.run(handle.run_id)
        assert live is not None
        if live.processed == 1:
            break
        await steps[1].started.wait()
    assert live.status is RunStatus.RUNNING
    steps[1].release.set()
    steps[2].release.set()
    done = await handle.wait()
    assert (done.processed, done.failed) == (2, 1)
    assert (await service.run(done.id)) == done
    assert [r.id for r in await service.timeline(0, 10)] == [done.id]  # spans, no counts
