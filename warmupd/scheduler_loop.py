"""The scheduler: turns job schedules into claimed :class:`~warmupd.models.Fire` objects.

A *slot* is a nominal fire instant of a job's calendar; a fire's identity is ``(job, due_ms)`` with
``due_ms`` the slot, so every process that shares the lock backend names a fire the same way even if
their jitter settings differ. A slot runs at ``slot + jitter``.

Per job the scheduler keeps a cursor: every slot at or before it is *accounted for* (handed over,
claimed by another process, recorded as misfired, or deliberately not owed after a reload). A step
looks at the slots after the cursor that are runnable now:

- those whose run time is within the grace period coalesce into one fire for the latest of them
  (trigger ``startup`` on the first step after start-up, ``schedule`` otherwise);
- older ones become one :class:`Misfire` record.

Each is claimed through the :class:`FireClaimer` first (SPEC §4: ``SET NX`` in Redis, a primary-key
insert in SQLite), and only the claimer hands it over or records it. The cursor only moves forward,
so a backward wall-clock jump never repeats a slot and a forward jump never skips one silently.
The scheduler never runs job items: ``on_fire`` is expected to start work and return at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from warmupd.clock import Clock, ms_to_iso, sleep_unless_set
from warmupd.errors import ServiceUnavailable
from warmupd.logs import get_logger
from warmupd.models import Fire, Trigger
from warmupd.scheduler import (
    FireClaimer,
    JobSchedule,
    Misfire,
    OnFire,
    OnMisfire,
    ScheduleStateStore,
    next_fire_times,
    scan_slots,
)

__all__ = ["FireClaimer", "Misfire", "ScheduleStateStore", "Scheduler"]

log = get_logger("warmupd.scheduler")

MAX_SLEEP_S = 60.0
"""The loop never sleeps longer than this, so that a wall-clock jump is noticed within a minute."""
RUNNING_GRACE_FLOOR_MS = 60_000
"""While running, a fire late by less than this still runs whatever ``misfire_grace`` says: the
loop's own wake-up latency must never turn a fire into a misfire."""
CLOCK_JUMP_TOLERANCE_MS = 2_000
CLAIM_AHEAD_MS = 200
"""The run loop claims a fire this long before it is due, so that the claim's round trip to the lock
backend is not part of the fire's lateness (bench P5). A crash between the claim and the due time
loses that one fire, exactly as a crash between claim and hand-over always could."""
ERROR_BACKOFF_MAX_S = 10.0


@dataclass
class _JobState:
    schedule: JobSchedule
    cursor_ms: int | None = None
    """Latest accounted slot; ``None`` until the persisted state is loaded."""
    last_ms: int | None = None
    """What is persisted as ``last_fire_ms``."""
    catch_up: bool = True
    """Whether the first step after loading handles misfires (start-up) or owes nothing older."""
    not_before_ms: int | None = None
    next_slot_ms: int | None = None
    following_ms: int | None = None
    """The slot after ``next_slot_ms`` (``None`` if none), computed together with it."""
    preclaimed: tuple[int, bool] | None = None
    """``(slot, won)`` of a claim made ahead of the slot's due time by :meth:`Scheduler.preclaim`."""
    next_known: bool = False


class Scheduler:
    """Computes due fires, claims them, persists the cursor and hands claimed fires to ``on_fire``.

    :param on_misfire: receives each :class:`Misfire` this process claimed (logged when omitted).
    :param on_lateness: ``(job, seconds)`` for every fire handed over: ``now − (due + jitter)``.
    :param on_claimed_elsewhere: a fire another process claimed first (for metrics).
    """

    def __init__(
        self,
        schedules: Iterable[JobSchedule],
        *,
        state: ScheduleStateStore,
        claimer: FireClaimer,
        clock: Clock,
        on_fire: OnFire,
        on_misfire: OnMisfire | None = None,
        on_lateness: Callable[[str, float], None] | None = None,
        on_claimed_elsewhere: Callable[[Fire], None] | None = None,
    ) -> None:
        self._jobs = {s.name: _JobState(s) for s in schedules}
        self._state = state
        self._claimer = claimer
        self._clock = clock
        self._on_fire = on_fire
        self._on_misfire = on_misfire
        self._on_lateness = on_lateness
        self._on_claimed_elsewhere = on_claimed_elsewhere
        self._tick_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stopping = False
        self._started_ms: int | None = None
        self._failed_jobs = 0

    @property
    def jobs(self) -> list[str]:
        """Names of the scheduled jobs."""
        return list(self._jobs)

    def schedule(self, job: str) -> JobSchedule:
        """The schedule in force for ``job``.

        :raises KeyError: for an unknown job.
        """
        return self._jobs[job].schedule

    async def start_up(self, now_ms: int) -> list[Fire]:
        """Load every job's cursor and handle what was missed while the daemon was down.

        Per job: the missed slots within ``misfire_grace`` of ``now_ms`` become one coalesced fire
        with trigger ``startup``; older ones one :class:`Misfire`. Returns the fires handed over.
        """
        self._started_ms = now_ms
        return await self.tick(now_ms)

    async def tick(self, now_ms: int) -> list[Fire]:
        """One step: claim, hand over and persist every fire due at ``now_ms``; return them.

        A job whose store or claimer fails is logged and retried on the next tick; the others go on.
        """
        async with self._tick_lock:
            if self._started_ms is None:
                self._started_ms = now_ms
            fires: list[Fire] = []
            self._failed_jobs = 0
            for state in list(self._jobs.values()):
                try:
                    fire = await self._step(state, now_ms)
                except ServiceUnavailable as exc:
                    # The state database (or the claims' backend) is away: no bug, no traceback.
                    # The cursor did not move, so the step is retried; fires missed meanwhile
                    # then follow the misfire rules (run once within grace, else recorded).
                    self._failed_jobs += 1
                    log.warning("scheduler.step_failed", job=state.schedule.name, error=exc.message)
                    continue
                # One job's broken backend must not stop the others; it is logged, not hidden.
                except Exception:
                    self._failed_jobs += 1
                    log.exception("scheduler.step_failed", job=state.schedule.name)
                    continue
                if fire is not None:
                    fires.append(fire)
            return fires

    async def _load(self, state: _JobState, now_ms: int) -> None:
        name = state.schedule.name
        last, upcoming = await self._state.load(name)
        if last is not None:
            cursor = last
        elif upcoming is not None:
            cursor = upcoming - 1  # saved before it ever fired: that first slot is still owed
        else:  # a job never seen before owes nothing from before it was added
            cursor = now_ms if state.not_before_ms is None else state.not_before_ms
        if state.not_before_ms is not None:
            cursor = max(cursor, state.not_before_ms)
        state.cursor_ms, state.last_ms, state.next_known = cursor, last, False
        await self._state.save(name, state.last_ms, self._next_slot(state))

    def _next_slot(self, state: _JobState) -> int | None:
        if not state.next_known and state.cursor_ms is not None:
            s = state.schedule
            # Two slots for the price of one (building the calendar walk is the cost), so that
            # the step at the due time can usually skip the walk: see _due_slots.
            upcoming = next_fire_times(s.expr, s.timezone, state.cursor_ms, 2)
            state.next_slot_ms = upcoming[0] if upcoming else None
            state.following_ms = upcoming[1] if len(upcoming) > 1 else None
            state.next_known = True
        return state.next_slot_ms

    def _due_slots(self, state: _JobState, until_ms: int) -> tuple[int, int]:
        """``(count, latest)`` of the slots in ``(cursor, until_ms]``, like :func:`~warmupd.scheduler.scan_slots`.

        The usual answer (none, or exactly the next slot) comes from the two slots computed before
        the loop slept: a calendar walk costs ~0.4 ms, and here it would sit between the wake-up
        and the hand-over, i.e. count as lateness (bench P5). Only a step that finds two or more
        slots due (after downtime, a jump or a stall) walks the calendar.
        """
        upcoming = self._next_slot(state)
        if upcoming is None or upcoming > until_ms:
            return 0, 0
        if state.following_ms is None or state.following_ms > until_ms:
            return 1, upcoming
        assert state.cursor_ms is not None
        return scan_slots(state.schedule, state.cursor_ms, until_ms)

    def _advance(self, state: _JobState, slot_ms: int) -> None:
        assert state.cursor_ms is not None
        if slot_ms > state.cursor_ms:
            state.cursor_ms = slot_ms
            state.next_known = False
        state.last_ms = state.cursor_ms

    async def _step(self, state: _JobState, now_ms: int) -> Fire | None:
        if state.cursor_ms is None:
            await self._load(state, now_ms)
        schedule = state.schedule  # a reload during the awaits below does not change this step
        # Cleared only once a step succeeds, so a start-up step that failed is retried as one.
        startup = state.catch_up
        jitter = schedule.jitter_offset_ms
        runnable = now_ms - jitter
        upcoming = self._next_slot(state)
        if upcoming is None or upcoming > runnable:
            state.catch_up = False
            return None
        grace = schedule.misfire_grace_ms
        if not startup:
            grace = max(grace, RUNNING_GRACE_FLOOR_MS)
        too_old = runnable - grace - 1  # a slot at or before this is later than grace allows
        ttl = schedule.claim_ttl_ms
        assert state.cursor_ms is not None
        if too_old >= upcoming:
            count, last = scan_slots(schedule, state.cursor_ms, too_old)
            missed = Misfire(
                job=schedule.name, first_due_ms=upcoming, last_due_ms=last, count=count
            )
            if await self._claimer.claim_fire(schedule.name, last, ttl):
                await self._unclaim_on_outage(schedule.name, last, self._report_misfire(missed))
            self._advance(state, last)
        handed: Fire | None = None
        if self._next_slot(state) is not None and state.cursor_ms < runnable:
            count, last = self._due_slots(state, runnable)
            if count:
                trigger = Trigger.STARTUP if startup else Trigger.SCHEDULE
                fire = Fire(job=schedule.name, due_ms=last, trigger=trigger, coalesced=count)
                if await self._claim(state, last, ttl):
                    handed = fire
                    await self._unclaim_on_outage(
                        schedule.name, last, self._hand_over(fire, now_ms - (last + jitter))
                    )
                elif self._on_claimed_elsewhere is not None:
                    self._on_claimed_elsewhere(fire)
                self._advance(state, last)
        state.catch_up = False
        await self._state.save(schedule.name, state.last_ms, self._next_slot(state))
        return handed

    async def _claim(self, state: _JobState, slot_ms: int, ttl_ms: int) -> bool:
        claimed, state.preclaimed = state.preclaimed, None
        if claimed is not None and claimed[0] == slot_ms:
            return claimed[1]
        return await self._claimer.claim_fire(state.schedule.name, slot_ms, ttl_ms)

    async def preclaim(self, now_ms: int) -> None:
        """Claim every fire whose run time is at most :data:`CLAIM_AHEAD_MS` away.

        The step at the due time then hands it over (or not) without a round trip. A failing
        claimer is logged; the step at the due time simply claims again. Nothing is claimed once
        :meth:`stop` was called, and :meth:`run` gives back what it claimed but did not hand over.
        """
        if self._stopping:
            return
        for state in list(self._jobs.values()):
            slot = self._next_slot(state) if state.cursor_ms is not None else None
            if slot is None or (state.preclaimed is not None and state.preclaimed[0] == slot):
                continue
            if 0 < slot + state.schedule.jitter_offset_ms - now_ms <= CLAIM_AHEAD_MS:
                schedule = state.schedule
                try:
                    won = await self._claimer.claim_fire(schedule.name, slot, schedule.claim_ttl_ms)
                except ServiceUnavailable as exc:  # claims in the state database, which is away
                    log.warning("scheduler.preclaim_failed", job=schedule.name, error=exc.message)
                    continue
                except Exception:
                    log.exception("scheduler.preclaim_failed", job=schedule.name)
                    continue
                state.preclaimed = (slot, won)

    async def _hand_over(self, fire: Fire, lateness_ms: int) -> None:
        log.info(
            "scheduler.fire",
            job=fire.job,
            due=ms_to_iso(fire.due_ms),
            trigger=str(fire.trigger),
            coalesced=fire.coalesced,
            lateness_ms=lateness_ms,
        )
        if self._on_lateness is not None:
            self._on_lateness(fire.job, lateness_ms / 1000)
        try:
            await self._on_fire(fire)
        except ServiceUnavailable:
            raise  # not handed over: the step gives the claim back (_unclaim_on_outage)
        # The fire is claimed, so no other process will run it; a runner bug must not kill the
        # scheduler loop, and the traceback is logged.
        except Exception:
            log.exception("scheduler.on_fire_failed", job=fire.job, due=ms_to_iso(fire.due_ms))

    async def _unclaim_on_outage(self, job: str, due_ms: int, hand_over: Awaitable[None]) -> None:
        """Await ``hand_over``; when it fails for want of a backend, give the claim back and
        re-raise, so that the step is retried as if this fire had not been claimed."""
        try:
            await hand_over
        except ServiceUnavailable:
            with contextlib.suppress(ServiceUnavailable):
                await self._claimer.release_fire(job, due_ms)
            raise

    async def _report_misfire(self, missed: Misfire) -> None:
        log.warning(
            "scheduler.misfired",
            job=missed.job,
            first_due=ms_to_iso(missed.first_due_ms),
            last_due=ms_to_iso(missed.last_due_ms),
            count=missed.count,
        )
        if self._on_misfire is not None:
            await self._on_misfire(missed)

    def reload(self, schedules: Iterable[JobSchedule]) -> None:
        """Replace the schedules between ticks; a fire already handed over is unaffected.

        A job whose timing changed (expression, zone or jitter) owes no slot of its new calendar
        that was runnable before the reload; a new job owes nothing older than the reload.
        """
        now_ms = self._clock.wall_ms()
        wanted = {s.name: s for s in schedules}
        for name in [n for n in self._jobs if n not in wanted]:
            del self._jobs[name]
        for name, schedule in wanted.items():
            state = self._jobs.get(name)
            if state is None:
                self._jobs[name] = _JobState(schedule, catch_up=False, not_before_ms=now_ms)
                continue
            old, state.schedule = state.schedule, schedule
            timing = (schedule.expr, schedule.timezone, schedule.jitter_offset_ms)
            if timing != (old.expr, old.timezone, old.jitter_offset_ms):
                floor = now_ms - schedule.jitter_offset_ms
                if state.cursor_ms is None:
                    state.not_before_ms = floor
                else:
                    self._advance(state, floor)
                state.next_known = False
        self._wake.set()

    def next_run_ms(self, job: str) -> int | None:
        """When ``job`` runs next (slot + jitter), ``None`` if never again or not yet loaded.

        :raises KeyError: for an unknown job.
        """
        state = self._jobs[job]
        slot = self._next_slot(state)
        return None if slot is None else slot + state.schedule.jitter_offset_ms

    def is_overdue(self, job: str, last_success_ms: int | None, now_ms: int) -> bool:
        """Whether ``job`` is overdue (SPEC §4); with no success yet, judged from start-up.

        :raises KeyError: for an unknown job.
        """
        reference = last_success_ms if last_success_ms is not None else self._started_ms
        if reference is None:
            return False
        due = self._jobs[job].schedule.overdue_at_ms(reference)
        return due is not None and now_ms > due

    def _sleep_s(self, now_ms: int) -> float:
        runs = [r for r in (self.next_run_ms(j) for j in self._jobs) if r is not None]
        if not runs:
            return MAX_SLEEP_S
        return min(MAX_SLEEP_S, max(0.0, (min(runs) - now_ms) / 1000))

    async def run(self) -> None:
        """Start up, then tick at every due time until :meth:`stop`.

        Sleeps until the next run time but never more than :data:`MAX_SLEEP_S` at once and wakes
        early on :meth:`reload`; correctness never depends on the sleep (the cursor does that),
        the cap only bounds how late a wall-clock jump is noticed.
        """
        if self._started_ms is None:
            await self.start_up(self._clock.wall_ms())
        backoff_s = 1.0
        while not self._stopping:
            wall_ms, mono_s = self._clock.wall_ms(), self._clock.monotonic()
            delay_s = self._sleep_s(wall_ms)
            if self._failed_jobs:
                # A failing job stays due; without a pause the loop would spin on it.
                delay_s, backoff_s = (
                    max(delay_s, backoff_s),
                    min(backoff_s * 2, ERROR_BACKOFF_MAX_S),
                )
            else:
                backoff_s = 1.0
            ahead_s = CLAIM_AHEAD_MS / 1000
            if self._failed_jobs:
                pass  # keep the back-off; the due step claims as usual
            elif delay_s > ahead_s:
                # Wake just before the fire to claim it; the tick on that wake finds nothing due.
                delay_s -= ahead_s
            else:
                await self.preclaim(wall_ms)
                delay_s = self._sleep_s(self._clock.wall_ms())
            await self._interruptible_sleep(min(delay_s, MAX_SLEEP_S))
            if self._stopping:
                break
            now_ms = self._clock.wall_ms()
            drift_ms = (now_ms - wall_ms) - (self._clock.monotonic() - mono_s) * 1000
            if abs(drift_ms) > CLOCK_JUMP_TOLERANCE_MS:
                log.warning("scheduler.clock_jump", jump_ms=round(drift_ms))
            await self.tick(now_ms)
        await self.release_preclaims()

    async def release_preclaims(self) -> None:
        """Give back fires claimed ahead that were not handed over, so another process runs them.

        Without this, a process stopped in the last :data:`CLAIM_AHEAD_MS` before a fire would
        hold that fire's claim and nobody in the fleet would run it.
        """
        for state in list(self._jobs.values()):
            claimed, state.preclaimed = state.preclaimed, None
            if claimed is None or not claimed[1]:
                continue
            try:
                await self._claimer.release_fire(state.schedule.name, claimed[0])
            except ServiceUnavailable as exc:  # the claim expires by itself
                log.warning("scheduler.unclaim_failed", job=state.schedule.name, error=exc.message)
            except Exception:
                log.exception("scheduler.unclaim_failed", job=state.schedule.name)

    async def _interruptible_sleep(self, seconds: float) -> None:
        try:
            await sleep_unless_set(self._clock, seconds, self._wake)
        finally:
            self._wake.clear()

    def stop(self) -> None:
        """Make :meth:`run` return after its current step."""
        self._stopping = True
        self._wake.set()
