"""Scheduler.tick / start_up / run with a fake clock and recording in-memory fakes."""

from __future__ import annotations

import asyncio
import logging

import pytest

from warmupd.clock import iso_to_ms, ms_to_iso
from warmupd.models import Fire, Trigger
from warmupd.scheduler import JobSchedule, next_fire_times
from warmupd.scheduler_loop import MAX_SLEEP_S, Misfire, Scheduler

HOUR = 3_600_000


def at(iso: str) -> int:
    return iso_to_ms(iso)


def hhmm(ms: int) -> str:
    return (ms_to_iso(ms) or "")[11:16]


class FakeClock:
    """Wall and monotonic time that move only when told; ``sleep`` records and advances both."""

    def __init__(self, wall_ms: int) -> None:
        self.wall = wall_ms
        self.mono = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep: list[object] = []

    def wall_ms(self) -> int:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.wall += round(seconds * 1000)
        self.mono += seconds
        await asyncio.sleep(0)

    def jump(self, ms: int) -> None:
        self.wall += ms  # the wall clock is stepped; monotonic time is not


class MemoryState:
    def __init__(self, rows: dict[str, tuple[int | None, int | None]] | None = None) -> None:
        self.rows = dict(rows or {})
        self.saves: list[tuple[str, int | None, int | None]] = []

    async def load(self, job: str) -> tuple[int | None, int | None]:
        return self.rows.get(job, (None, None))

    async def save(self, job: str, last_fire_ms: int | None, next_fire_ms: int | None) -> None:
        self.rows[job] = (last_fire_ms, next_fire_ms)
        self.saves.append((job, last_fire_ms, next_fire_ms))


class MemoryClaimer:
    def __init__(self, fail: bool = False) -> None:
        self.claimed: dict[tuple[str, int], int] = {}
        self.attempts: list[tuple[str, int, int]] = []
        self.fail = fail

    async def claim_fire(self, job: str, due_ms: int, ttl_ms: int) -> bool:
        self.attempts.append((job, due_ms, ttl_ms))
        if self.fail:
            raise ConnectionError("lock backend down")
        if (job, due_ms) in self.claimed:
            return False
        self.claimed[(job, due_ms)] = ttl_ms
        return True

    async def release_fire(self, job: str, due_ms: int) -> bool:
        return self.claimed.pop((job, due_ms), None) is not None


class Recorder:
    def __init__(self) -> None:
        self.fires: list[Fire] = []
        self.misfires: list[Misfire] = []
        self.lateness: list[tuple[str, float]] = []
        self.elsewhere: list[Fire] = []

    async def on_fire(self, fire: Fire) -> None:
        self.fires.append(fire)

    async def on_misfire(self, missed: Misfire) -> None:
        self.misfires.append(missed)


def make(
    jobs: list[JobSchedule],
    clock: FakeClock,
    state: MemoryState | None = None,
    claimer: MemoryClaimer | None = None,
    rec: Recorder | None = None,
) -> tuple[Scheduler, Recorder, MemoryState, MemoryClaimer]:
    rec = rec or Recorder()
    state = state or MemoryState()
    claimer = claimer or MemoryClaimer()
    sched = Scheduler(
        jobs,
        state=state,
        claimer=claimer,
        clock=clock,
        on_fire=rec.on_fire,
        on_misfire=rec.on_misfire,
        on_lateness=lambda job, s: rec.lateness.append((job, s)),
        on_claimed_elsewhere=rec.elsewhere.append,
    )
    return sched, rec, state, claimer


def accounted(rec: Recorder, job: JobSchedule, after_ms: int, until_ms: int) -> None:
    """Every slot in (after, until] is covered exactly once by a fire or a misfire record."""
    slots = [s for s in next_fire_times(job.expr, job.timezone, after_ms, 500) if s <= until_ms]
    covered: list[int] = []
    cursor = after_ms
    records = [(f.due_ms, f.coalesced) for f in rec.fires if f.job == job.name]
    records += [(m.last_due_ms, m.count) for m in rec.misfires if m.job == job.name]
    for due, count in sorted(records):
        span = [s for s in slots if cursor < s <= due]
        assert len(span) == count, f"record at {ms_to_iso(due)} covers {count}, slots {len(span)}"
        assert span[-1] == due
        covered += span
        cursor = due
    assert covered == slots


HOURLY = JobSchedule(name="hourly", expr="0 * * * *", misfire_grace_ms=6 * HOUR)


async def test_fires_once_per_slot_with_lateness_and_persisted_state() -> None:
    clock = FakeClock(at("2024-05-01T09:59:00Z"))
    sched, rec, state, claimer = make([HOURLY], clock)
    assert await sched.start_up(clock.wall) == []
    assert sched.next_run_ms("hourly") == at("2024-05-01T10:00Z")
    assert await sched.tick(at("2024-05-01T09:59:59.999Z")) == []
    fires = await sched.tick(at("2024-05-01T10:00:00.250Z"))
    assert fires == [Fire(job="hourly", due_ms=at("2024-05-01T10:00Z"))]
    assert await sched.tick(at("2024-05-01T10:00:30Z")) == []
    assert rec.fires == fires
    assert rec.lateness == [("hourly", 0.25)]
    assert state.rows["hourly"] == (at("2024-05-01T10:00Z"), at("2024-05-01T11:00Z"))
    assert claimer.attempts == [("hourly", at("2024-05-01T10:00Z"), 6 * HOUR)]
    assert sched.next_run_ms("hourly") == at("2024-05-01T11:00Z")


@pytest.mark.parametrize("grace_ms", [6 * HOUR, 0])
async def test_forward_jump_of_three_hours(grace_ms: int) -> None:
    job = JobSchedule(name="hourly", expr="0 * * * *", misfire_grace_ms=grace_ms)
    clock = FakeClock(at("2024-05-01T10:30:00Z"))
    sched, rec, _, _ = make([job], clock)
    await sched.start_up(clock.wall)
    await sched.tick(at("2024-05-01T11:00:00Z"))
    # The wall clock is stepped from 11:20 to 14:20: 12:00, 13:00 and 14:00 were jumped over.
    fires = await sched.tick(at("2024-05-01T14:20:00Z"))
    await sched.tick(at("2024-05-01T14:25:00Z"))
    await sched.tick(at("2024-05-01T15:00:00Z"))
    if grace_ms:  # within grace: one coalesced catch-up standing for all three
        assert fires == [Fire(job="hourly", due_ms=at("2024-05-01T14:00Z"), coalesced=3)]
        assert rec.misfires == []
    else:  # beyond the running floor of 60 s: one misfire record, nothing run
        assert fires == []
        assert rec.misfires == [
            Misfire(
                job="hourly",
                first_due_ms=at("2024-05-01T12:00Z"),
                last_due_ms=at("2024-05-01T14:00Z"),
                count=3,
            )
        ]
    accounted(rec, job, at("2024-05-01T10:30Z"), at("2024-05-01T15:00Z"))


async def test_backward_jump_of_one_hour_repeats_nothing() -> None:
    clock = FakeClock(at("2024-05-01T10:30:00Z"))
    sched, rec, _, claimer = make([HOURLY], clock)
    await sched.start_up(clock.wall)
    await sched.tick(at("2024-05-01T11:00:01Z"))
    # 11:20 -> 10:20: the wall clock goes back over 11:00 again; tick every 5 minutes.
    now = at("2024-05-01T10:20:00Z")
    while now <= at("2024-05-01T12:10:00Z"):
        await sched.tick(now)
        now += 300_000
    assert [ms_to_iso(f.due_ms) for f in rec.fires] == [
        "2024-05-01T11:00:00.000Z",
        "2024-05-01T12:00:00.000Z",
    ]
    assert len(claimer.attempts) == 2
    accounted(rec, HOURLY, at("2024-05-01T10:30Z"), at("2024-05-01T12:10Z"))


async def test_two_day_downtime_one_catch_up_and_one_misfire_record() -> None:
    last = at("2024-05-01T10:00Z")
    state = MemoryState({"hourly": (last, last + HOUR)})
    clock = FakeClock(at("2024-05-03T10:30:00Z"))
    sched, rec, _, _ = make([HOURLY], clock, state=state)
    fires = await sched.start_up(clock.wall)
    assert fires == [
        Fire(job="hourly", due_ms=at("2024-05-03T10:00Z"), trigger=Trigger.STARTUP, coalesced=6)
    ]
    assert rec.misfires == [
        Misfire(
            job="hourly",
            first_due_ms=at("2024-05-01T11:00Z"),
            last_due_ms=at("2024-05-03T04:00Z"),
            count=42,
        )
    ]
    assert state.rows["hourly"] == (at("2024-05-03T10:00Z"), at("2024-05-03T11:00Z"))
    assert await sched.tick(at("2024-05-03T10:31Z")) == []
    accounted(rec, HOURLY, last, at("2024-05-03T10:31Z"))


async def test_downtime_beyond_grace_only_misfires_and_restart_resumes() -> None:
    daily = JobSchedule(name="daily", expr="0 2 * * *", misfire_grace_ms=HOUR)
    state = MemoryState({"daily": (at("2024-05-01T02:00Z"), None)})
    clock = FakeClock(at("2024-05-04T05:00:00Z"))
    sched, rec, _, _ = make([daily], clock, state=state)
    assert await sched.start_up(clock.wall) == []
    assert [(m.count, ms_to_iso(m.last_due_ms)) for m in rec.misfires] == [
        (3, "2024-05-04T02:00:00.000Z")
    ]
    # A second start (same state file) owes nothing: the record is not repeated.
    again, rec2, _, _ = make([daily], FakeClock(clock.wall), state=state)
    assert await again.start_up(clock.wall + 1000) == []
    assert rec2.misfires == []


async def test_never_fired_job_keeps_its_first_slot_across_a_restart() -> None:
    daily = JobSchedule(name="daily", expr="0 2 * * *", misfire_grace_ms=6 * HOUR)
    state = MemoryState()
    first, _, _, _ = make([daily], FakeClock(at("2024-05-01T01:00Z")), state=state)
    await first.start_up(at("2024-05-01T01:00Z"))
    assert state.rows["daily"] == (None, at("2024-05-01T02:00Z"))
    # Down from 01:30 to 03:00: the 02:00 fire is owed at start-up, within grace.
    second, _, _, _ = make([daily], FakeClock(at("2024-05-01T03:00Z")), state=state)
    fires = await second.start_up(at("2024-05-01T03:00Z"))
    assert fires == [Fire(job="daily", due_ms=at("2024-05-01T02:00Z"), trigger=Trigger.STARTUP)]


async def test_reload_changes_schedule_between_ticks() -> None:
    clock = FakeClock(at("2024-05-01T09:30:00Z"))
    sched, rec, _, _ = make([HOURLY], clock)
    await sched.start_up(clock.wall)
    await sched.tick(at("2024-05-01T10:00:00Z"))
    clock.wall = at("2024-05-01T10:10:00Z")
    sched.reload([JobSchedule(name="hourly", expr="30 * * * *", misfire_grace_ms=6 * HOUR)])
    assert sched.next_run_ms("hourly") == at("2024-05-01T10:30Z")
    for now in ("10:30:00", "11:00:00", "11:29:59", "11:30:00", "11:45:00"):
        await sched.tick(at(f"2024-05-01T{now}Z"))
    assert [hhmm(f.due_ms) for f in rec.fires] == ["10:00", "10:30", "11:30"]
    # A new time that already passed today is not owed: no immediate catch-up.
    clock.wall = at("2024-05-01T11:50:00Z")
    sched.reload([JobSchedule(name="hourly", expr="0 9 * * *", misfire_grace_ms=6 * HOUR)])
    assert await sched.tick(at("2024-05-01T11:51:00Z")) == []
    assert sched.next_run_ms("hourly") == at("2024-05-02T09:00Z")
    # A job added by reload owes nothing from before; a removed one stops.
    added = JobSchedule(name="added", expr="*/15 * * * *")
    sched.reload([added])
    assert sched.jobs == ["added"]
    fires = await sched.tick(at("2024-05-01T12:00:00Z"))
    assert fires == [Fire(job="added", due_ms=at("2024-05-01T12:00Z"))]


async def test_reload_during_hand_over_leaves_the_fire_alone() -> None:
    clock = FakeClock(at("2024-05-01T09:30:00Z"))
    rec = Recorder()
    holder: list[Scheduler] = []

    async def on_fire(fire: Fire) -> None:
        rec.fires.append(fire)
        clock.wall = fire.due_ms + 5
        holder[0].reload([JobSchedule(name="hourly", expr="5 * * * *", misfire_grace_ms=HOUR)])

    sched = Scheduler(
        [HOURLY], state=MemoryState(), claimer=MemoryClaimer(), clock=clock, on_fire=on_fire
    )
    holder.append(sched)
    await sched.start_up(clock.wall)
    assert await sched.tick(at("2024-05-01T10:00:00Z")) == [
        Fire(job="hourly", due_ms=at("2024-05-01T10:00Z"))
    ]
    for now in ("10:00:10", "10:05:00", "10:30:00", "11:05:00"):
        await sched.tick(at(f"2024-05-01T{now}Z"))
    assert [hhmm(f.due_ms) for f in rec.fires] == ["10:00", "10:05", "11:05"]


async def test_two_schedulers_sharing_one_claimer_hand_each_fire_over_once() -> None:
    job = JobSchedule(name="fast", expr="*/10 * * * * *", misfire_grace_ms=0)
    claimer = MemoryClaimer()
    start = at("2024-05-01T10:00:00.500Z")
    a, rec_a, _, _ = make([job], FakeClock(start), claimer=claimer)
    b, rec_b, _, _ = make([job], FakeClock(start), claimer=claimer)
    await a.start_up(start)
    await b.start_up(start)
    # Interleaved ticks at different moments, as two processes with their own loops would.
    for i in range(60):
        now = start + i * 4_000
        first, second = (a, b) if i % 2 else (b, a)
        await first.tick(now)
        await second.tick(now + (1_300 if i % 3 else 0))
    received = rec_a.fires + rec_b.fires
    dues = sorted(f.due_ms for f in received)
    expected = [s for s in job.fire_times(start, 30) if s <= start + 59 * 4_000]
    assert len(expected) >= 20
    assert dues == expected  # every fire once in total, none lost
    assert rec_a.fires
    assert rec_b.fires
    assert len(rec_a.elsewhere) + len(rec_b.elsewhere) == len(expected)


async def test_jitter_delays_each_fire_by_the_same_offset() -> None:
    job = JobSchedule(name="spread", expr="0 * * * *", jitter_ms=600_000, misfire_grace_ms=HOUR)
    offset = job.jitter_offset_ms
    assert 0 < offset <= 600_000
    clock = FakeClock(at("2024-05-01T09:30Z"))
    sched, rec, _, _ = make([job], clock)
    await sched.start_up(clock.wall)
    for hour in ("10", "11"):
        slot = at(f"2024-05-01T{hour}:00Z")
        assert sched.next_run_ms("spread") == slot + offset
        assert await sched.tick(slot + offset - 1) == []
        assert await sched.tick(slot + offset) == [Fire(job="spread", due_ms=slot)]
    assert rec.lateness == [("spread", 0.0), ("spread", 0.0)]
    other, _, _, _ = make([job], FakeClock(clock.wall))
    await other.start_up(at("2024-05-01T11:30Z"))
    assert other.next_run_ms("spread") == at("2024-05-01T12:00Z") + offset


async def test_run_loop_sleeps_at_most_60_s_and_survives_clock_jumps(
    caplog: pytest.LogCaptureFixture,
) -> None:
    daily = JobSchedule(name="daily", expr="0 2 * * *", misfire_grace_ms=6 * HOUR)
    clock = FakeClock(at("2024-05-01T00:00:00Z"))
    sched, rec, _, _ = make([daily, HOURLY], clock)
    end = at("2024-05-03T00:00:00Z")
    jumps = {200: 3 * HOUR, 900: -HOUR}  # step the wall clock at these sleep counts
    real_sleep = clock.sleep

    async def sleep(seconds: float) -> None:
        await real_sleep(seconds)
        if len(clock.sleeps) in jumps:
            clock.jump(jumps[len(clock.sleeps)])
        if clock.wall >= end:
            sched.stop()

    clock.sleep = sleep  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="warmupd.scheduler"):
        await asyncio.wait_for(sched.run(), timeout=10)
    assert clock.sleeps
    assert max(clock.sleeps) <= MAX_SLEEP_S
    assert min(clock.sleeps) >= 0
    assert len(clock.sleeps) < 4000  # no busy loop: about one wake-up a minute
    assert sum(r.getMessage() == "scheduler.clock_jump" for r in caplog.records) == 2
    daily_dues = [f.due_ms for f in rec.fires if f.job == "daily"]
    assert daily_dues == [at("2024-05-01T02:00Z"), at("2024-05-02T02:00Z")]
    accounted(rec, HOURLY, at("2024-05-01T00:00Z"), end - 1)
    hourly = [f.due_ms for f in rec.fires if f.job == "hourly"]
    assert len(hourly) == len(set(hourly))


async def test_failures_are_logged_retried_and_do_not_stop_other_jobs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(at("2024-05-01T09:59:00Z"))
    claimer = MemoryClaimer(fail=True)
    sched, rec, _, _ = make([HOURLY], clock, claimer=claimer)
    await sched.start_up(clock.wall)
    with caplog.at_level(logging.ERROR, logger="warmupd.scheduler"):
        assert await sched.tick(at("2024-05-01T10:00:00Z")) == []
    assert "scheduler.step_failed" in caplog.text
    claimer.fail = False
    assert await sched.tick(at("2024-05-01T10:00:20Z")) == [
        Fire(job="hourly", due_ms=at("2024-05-01T10:00Z"))
    ]
    assert rec.lateness == [("hourly", 20.0)]


async def test_on_fire_error_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[Fire] = []

    async def broken(fire: Fire) -> None:
        calls.append(fire)
        raise RuntimeError("runner bug")

    clock = FakeClock(at("2024-05-01T09:59:00Z"))
    sched = Scheduler(
        [HOURLY], state=MemoryState(), claimer=MemoryClaimer(), clock=clock, on_fire=broken
    )
    await sched.start_up(clock.wall)
    with caplog.at_level(logging.ERROR, logger="warmupd.scheduler"):
        await sched.tick(at("2024-05-01T10:00:00Z"))
        await sched.tick(at("2024-05-01T11:00:00Z"))
    assert len(calls) == 2
    assert "scheduler.on_fire_failed" in caplog.text


async def test_dense_schedule_after_long_downtime_is_capped_but_exact_at_the_end() -> None:
    job = JobSchedule(name="fast", expr="*/5 * * * * *", misfire_grace_ms=60_000)
    state = MemoryState({"fast": (at("2024-05-01T00:00Z"), None)})
    clock = FakeClock(at("2024-05-03T00:00:02Z"))
    sched, rec, _, _ = make([job], clock, state=state)
    fires = await sched.start_up(clock.wall)
    assert fires == [
        Fire(job="fast", due_ms=at("2024-05-03T00:00Z"), trigger=Trigger.STARTUP, coalesced=12)
    ]
    assert rec.misfires[0].count == 1000  # capped count
    assert rec.misfires[0].last_due_ms == at("2024-05-02T23:59:00Z")  # exact latest


async def test_is_overdue() -> None:
    daily = JobSchedule(name="daily", expr="0 2 * * *", misfire_grace_ms=6 * HOUR)
    clock = FakeClock(at("2024-05-01T00:00Z"))
    sched, _, _, _ = make([daily], clock)
    assert not sched.is_overdue("daily", None, at("2024-05-01T00:00Z"))  # not started yet
    await sched.start_up(at("2024-05-01T00:00Z"))
    success = at("2024-05-01T02:03Z")
    assert not sched.is_overdue("daily", success, at("2024-05-03T08:00Z"))
    assert sched.is_overdue("daily", success, at("2024-05-03T08:00:00.001Z"))
    # Never succeeded: judged from start-up.
    assert sched.is_overdue("daily", None, at("2024-05-02T08:00:01Z"))
    with pytest.raises(KeyError):
        sched.is_overdue("nope", None, 0)


async def test_preclaim_takes_the_claim_round_trip_out_of_the_due_step() -> None:
    job = JobSchedule(name="fast", expr="*/10 * * * * *", misfire_grace_ms=0)
    claimer = MemoryClaimer()
    start = at("2024-05-01T10:00:00.500Z")
    a, rec_a, _, _ = make([job], FakeClock(start), claimer=claimer)
    b, rec_b, _, _ = make([job], FakeClock(start), claimer=claimer)
    await a.start_up(start)
    await b.start_up(start)
    due = at("2024-05-01T10:00:10Z")
    await a.preclaim(due - 5_000)  # too early: nothing is claimed yet
    assert claimer.attempts == []
    await a.preclaim(due - 150)  # within CLAIM_AHEAD_MS
    await b.preclaim(due - 100)
    assert [d for _, d, _ in claimer.attempts] == [due, due]
    await a.tick(due + 1)
    await b.tick(due + 2)
    assert len(claimer.attempts) == 2  # the due steps used the claims made ahead
    assert [f.due_ms for f in rec_a.fires] == [due]
    assert rec_b.fires == []
    assert [f.due_ms for f in rec_b.elsewhere] == [due]
    # A preclaim for a slot that then coalesces with later ones does not stand in for them.
    await a.preclaim(due + 9_900)
    await a.tick(due + 25_000)
    assert [f.due_ms for f in rec_a.fires] == [due, due + 20_000]


async def test_a_stopping_scheduler_gives_back_fires_it_claimed_ahead() -> None:
    job = JobSchedule(name="fast", expr="*/10 * * * * *", misfire_grace_ms=0)
    claimer = MemoryClaimer()
    start = at("2024-05-01T10:00:00.500Z")
    a, rec_a, _, _ = make([job], FakeClock(start), claimer=claimer)
    b, rec_b, _, _ = make([job], FakeClock(start), claimer=claimer)
    await a.start_up(start)
    await b.start_up(start)
    due = at("2024-05-01T10:00:10Z")
    await a.preclaim(due - 150)
    assert (job.name, due) in claimer.claimed
    a.stop()  # SIGTERM in the last moments before the fire
    await a.release_preclaims()
    await a.preclaim(due - 100)  # a stopping scheduler claims nothing more
    assert (job.name, due) not in claimer.claimed
    await b.tick(due + 5)  # so another process runs it
    assert [f.due_ms for f in rec_b.fires] == [due]
    assert rec_a.fires == []
