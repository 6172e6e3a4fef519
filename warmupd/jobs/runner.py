"""The job runner: one run per job type, the job lock, a sliding window of items, the run record.

A run (SPEC §6): check the job-level limit (one run per job type per process) → acquire the job lock
(held elsewhere → a ``skipped`` record) → select items → process them through a **sliding window** of
``concurrency`` worker tasks pulling from one iterator (a new item starts as soon as any finishes) →
record the run → release the lock, on every exit path.

Stopping is one mechanism: :meth:`ActiveRun.stop_now` with a reason (``lock_lost``,
``max_duration``, ``shutdown``) stops starting items and cancels the in-flight ones; the first
reason decides the run's status. Draining (SIGTERM) only stops starting new items.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from warmupd.clock import Clock
from warmupd.config import Config
from warmupd.errors import (
    AlreadyRunning,
    DatabaseUnavailable,
    LockedElsewhere,
    LockLost,
    NotFound,
    ServiceUnavailable,
    WarmupdError,
)
from warmupd.jobs.base import Fencing, ItemOutcome, ItemResult, Job, RunContext, RunSettings
from warmupd.jobs.run_state import ActiveRun, RunHandle, Tally, record_finish
from warmupd.locks import Locks, renewing
from warmupd.locks.holder import describe_holder
from warmupd.logs import get_logger, outcome_level
from warmupd.metrics import Metrics
from warmupd.models import Acquired, Fire, Held, Lease, RunRecord, RunStatus, Trigger
from warmupd.scheduler_loop import Misfire
from warmupd.state.runs import RunStore

log = get_logger("warmupd.jobs")

Progress = Callable[[str, int, int, int], None]
"""``on_progress(job, run_id, done, total)`` after every item."""
IsPaused = Callable[[str], Awaitable[bool]]
"""``await paused(job)``: whether the job's scheduled fires are paused (SPEC §15)."""


class JobRunner:
    """Runs jobs for the scheduler, the HTTP API and the CLI alike."""

    def __init__(
        self,
        *,
        jobs: Mapping[str, Job[Any]],
        config: Callable[[], Config],
        locks: Locks,
        runs: RunStore,
        clock: Clock,
        node: str,
        metrics: Metrics | None = None,
        on_progress: Progress | None = None,
        paused: IsPaused | None = None,
    ) -> None:
        self._jobs = dict(jobs)
        self.paused = paused
        self._config = config
        self.locks = locks
        self.runs = runs
        self.clock = clock
        self.node = node
        self.metrics = metrics
        self.on_progress = on_progress
        self._active: dict[str, ActiveRun] = {}
        self._starting: set[asyncio.Future[None]] = set()
        self._accepting = True

    def job_names(self) -> list[str]:
        """Every job this runner can run."""
        return list(self._jobs)

    def running_run_id(self, job: str) -> int | None:
        """The id of the run of ``job`` in progress in this process."""
        active = self._active.get(job)
        return active.run_id if active else None

    def progress(self, run_id: int) -> tuple[Tally, int | None] | None:
        """The counts so far and the number selected of a run in progress in this process."""
        for active in self._active.values():
            if active.run_id == run_id and active.tally is not None:
                return active.tally, active.selected
        return None

    # ----------------------------------------------------------------- starting

    async def trigger(
        self,
        job: str,
        trigger: Trigger,
        *,
        limit: int | None = None,
        concurrency: int | None = None,
        fire: Fire | None = None,
    ) -> RunHandle:
        """Start a run of ``job`` now; returns once the lock is held and the run recorded.

        :raises NotFound: unknown job.
        :raises AlreadyRunning: this process is running it (a ``skipped`` run is recorded).
        :raises LockedElsewhere: another process holds its lock (a ``skipped`` run is recorded).
        :raises ServiceUnavailable: shutting down, or the lock backend cannot be asked (recorded).
        """
        definition = self._jobs.get(job)
        if definition is None:
            raise NotFound(f"unknown job {job!r} (known: {', '.join(self._jobs)})")
        if not self._accepting:
            raise ServiceUnavailable("warmupd is shutting down")
        extra = {"dueAt": fire.due_ms, "coalesced": fire.coalesced} if fire else {}
        if job in self._active:
            holder = self._active[job].run_id
            await self._record_skipped(
                job, trigger, "already_running", {**extra, "runningRunId": holder}
            )
            raise AlreadyRunning(f"{job} is already running (run {holder})", run_id=holder)
        # Reserve the slot before the first await: two triggers racing here must not both pass.
        active = self._active[job] = ActiveRun(job)
        # Shutdown waits for starts in progress, so no run can begin after the drain looked.
        starting = asyncio.get_running_loop().create_future()
        self._starting.add(starting)
        try:
            return await self._start(definition, active, trigger, limit, concurrency, extra)
        finally:
            self._starting.discard(starting)
            starting.set_result(None)
            if active.task is None:
                self._active.pop(job, None)

    async def _start(
        self,
        definition: Job[Any],
        active: ActiveRun,
        trigger: Trigger,
        limit: int | None,
        concurrency: int | None,
        extra: dict[str, Any],
    ) -> RunHandle:
        cfg = self._config()
        job = definition.name
        settings = RunSettings.from_config(cfg.jobs[job], limit=limit, concurrency=concurrency)
        metadata: dict[str, Any] = {
            "limit": settings.limit,
            "concurrency": settings.concurrency,
            **extra,
        }
        started = self.clock.monotonic()
        result = await self.locks.acquire(definition.lock_key, cfg.locks.lease_ms)
        if isinstance(result, Held):
            held_by = {"heldBy": result.holder, "heldByRunId": result.run_id}
            metadata.update((k, v) for k, v in held_by.items() if v is not None)
            await self._record_skipped(job, trigger, "locked_elsewhere", metadata)
            raise LockedElsewhere(
                f"{job} is running in another process ({describe_holder(result)})",
                run_id=result.run_id,
                node=result.holder,
            )
        if not isinstance(result, Acquired):
            reason = result.reason if result.reason == "redis_unavailable" else "lock_unavailable"
            await self._record_skipped(job, trigger, reason, metadata)
            raise ServiceUnavailable(
                f"{job} not started: lock backend unavailable ({result.reason})"
            )
        lease = result.lease
        metadata.update(lockBackend=lease.backend, fence=lease.fence, selected=None)
        active.lease_backend = lease.backend
        try:
            run_id = await self.runs.start(job, trigger, self.node, self.clock.wall_ms(), metadata)
        except BaseException:
            await self.locks.release(lease)
            raise
        await self._tag(lease, job, run_id)
        if not self._accepting:
            # SIGTERM arrived while the lock was being taken: record the run, do not start it.
            await self.locks.release(lease)
            await self.runs.finish(
                run_id, status=RunStatus.CANCELLED, now_ms=self.clock.wall_ms(), reason="shutdown"
            )
            raise ServiceUnavailable(f"{job} not started: warmupd is shutting down")
        active.run_id = run_id
        active.task = asyncio.create_task(
            self._execute(definition, active, lease, started, settings, trigger, metadata),
            name=f"run:{job}:{run_id}",
        )
        return RunHandle(run_id, job, active.task)

    async def _tag(self, lease: Lease, job: str, run_id: int) -> None:
        """Store the run id beside the lease so another process's 429 can name it (best effort)."""
        try:
            await self.locks.tag_run(lease, run_id)
        except ServiceUnavailable as exc:
            log.warning("lock_tag_failed", job=job, run=run_id, error=type(exc).__name__)

    async def _record_skipped(
        self, job: str, trigger: Trigger, reason: str, metadata: dict[str, Any]
    ) -> RunRecord:
        record = await self.runs.record(
            job,
            status=RunStatus.SKIPPED,
            trigger=trigger,
            node=self.node,
            now_ms=self.clock.wall_ms(),
            reason=reason,
            metadata=metadata,
        )
        log.info("run.skipped", job=job, run=record.id, trigger=trigger, reason=reason)
        if self.metrics:
            self.metrics.run_finished(
                job,
                RunStatus.SKIPPED,
                duration_s=0,
                processed=0,
                skipped=0,
                failed=0,
                finished_ms=record.started_at_ms,
            )
        return record

    # ----------------------------------------------------------------- running

    async def _execute(
        self,
        job: Job[Any],
        active: ActiveRun,
        lease: Any,
        acquired_monotonic: float,
        settings: RunSettings,
        trigger: Trigger,
        metadata: dict[str, Any],
    ) -> RunRecord:
        assert active.run_id is not None
        run_id = active.run_id
        tally = active.tally = Tally()
        status, reason = RunStatus.SUCCESS, None
        begun = self.clock.monotonic()
        log.info("run.started", job=job.name, run=run_id, trigger=trigger, fence=lease.fence)
        if self.metrics:
            self.metrics.run_started(job.name)
        deadline = asyncio.get_running_loop().call_later(
            job.run_deadline_s(settings), active.stop_now, "max_duration"
        )
        try:
            async with renewing(
                self.locks,
                lease,
                self.clock,
                started_monotonic=acquired_monotonic,
                on_lost=lambda _why: active.stop_now("lock_lost"),
            ) as handle:
                fencing = Fencing(fence_key=self.locks.fence_key(lease), fence=lease.fence)
                job.begin_run(
                    RunContext(
                        run_id=run_id,
                        job=job.name,
                        trigger=trigger,
                        fire_ms=metadata.get("dueAt") or self.clock.wall_ms(),
                    )
                )
                job.start_run()
                items = await job.select(settings, self.clock.wall_ms())
                metadata["selected"] = active.selected = len(items)
                await self.runs.update_metadata(run_id, metadata)
                iterator = iter(items)

                async def worker() -> None:
                    for item in iterator:
                        if active.draining or active.stop_reason or handle.is_lost:
                            return
                        outcome = await self._one(job, item, settings, fencing, active)
                        tally.add(job.label(item), outcome)
                        if self.on_progress:
                            self.on_progress(job.name, run_id, tally.done, len(items))

                async with asyncio.TaskGroup() as group:
                    for _ in range(min(settings.concurrency, len(items))):
                        group.create_task(worker())
                if handle.is_lost:
                    active.stop_now("lock_lost")
                metadata.update(job.summary())
            status, reason = active.final_status(tally, len(items))
        except asyncio.CancelledError:
            # Only the daemon cancels a run task, after the shutdown grace ran out.
            status, reason = RunStatus.CANCELLED, active.stop_reason or "shutdown"
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        except DatabaseUnavailable as exc:
            # The state database went away (selecting, recording): the run cannot go on, and
            # it is no bug — a clear reason, no traceback.
            log.warning("run.database_unavailable", job=job.name, run=run_id, error=exc.message)
            status, reason = RunStatus.FAILED, active.database_lost()
        except Exception as exc:
            log.exception("run.error", job=job.name, run=run_id)
            status = RunStatus.FAILED
            reason = (
                f"error: {exc}"
                if isinstance(exc, WarmupdError)
                else f"error: {type(exc).__name__}: {exc}"
            )
        finally:
            deadline.cancel()
            self._active.pop(job.name, None)
        record = await record_finish(
            self.runs,
            self.clock,
            run_id,
            status=status,
            now_ms=self.clock.wall_ms(),
            reason=reason,
            processed=tally.processed,
            skipped=tally.skipped,
            failed=tally.failed,
            errors=tally.errors,
            metadata=metadata,
        )
        # A failed run must show in `journalctl -p warning` (what the docs recommend watching);
        # one that failed every item means the job is broken, not unlucky.
        log.log(
            outcome_level(status, processed=tally.processed, failed=tally.failed),
            "run.finished",
            job=job.name,
            run=run_id,
            status=status,
            reason=reason,
            processed=tally.processed,
            skipped=tally.skipped,
            failed=tally.failed,
            duration_ms=record.duration_ms,
        )
        if self.metrics:
            self.metrics.run_finished(
                job.name,
                status,
                duration_s=self.clock.monotonic() - begun,
                processed=tally.processed,
                skipped=tally.skipped,
                failed=tally.failed,
                finished_ms=record.finished_at_ms or self.clock.wall_ms(),
            )
        return record

    async def _one(
        self, job: Job[Any], item: Any, settings: RunSettings, fencing: Fencing, active: ActiveRun
    ) -> ItemOutcome:
        """Process one item in its own task, so that stopping can cancel exactly the in-flight ones."""
        task = asyncio.create_task(self._guarded(job, item, settings, fencing, active))
        active.inflight.add(task)
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            active.inflight.discard(task)
        if task.cancelled():
            return ItemOutcome(ItemResult.FAILED, f"cancelled ({active.stop_reason or 'stopped'})")
        return task.result()

    async def _guarded(
        self, job: Job[Any], item: Any, settings: RunSettings, fencing: Fencing, active: ActiveRun
    ) -> ItemOutcome:
        timeout_s = job.item_timeout_s(settings)
        try:
            async with asyncio.timeout(timeout_s):
                return await job.process(item, fencing, self.clock.wall_ms())
        except TimeoutError:
            return ItemOutcome(ItemResult.FAILED, f"timed out after {timeout_s or 0:g}s")
        except LockLost as exc:
            # A fenced write was refused: a newer holder owns the lock, so stop the whole run.
            active.stop_now("lock_lost")
            return ItemOutcome(ItemResult.FAILED, exc.message)
        except DatabaseUnavailable as exc:
            # Every other item would fail the same way: stop the run (it ends failed), cancelling
            # the others but not this one, whose error is the one worth recording.
            active.inflight.discard(asyncio.current_task())
            active.database_lost()
            return ItemOutcome(ItemResult.FAILED, exc.message)
        except WarmupdError as exc:
            return ItemOutcome(ItemResult.FAILED, exc.message)
        except Exception as exc:
            log.exception("item.error", job=job.name, item=job.label(item))
            return ItemOutcome(ItemResult.FAILED, f"{type(exc).__name__}: {exc}")

    # ----------------------------------------------------------------- scheduler hooks

    async def on_fire(self, fire: Fire) -> None:
        """Scheduler callback: start the fire's run; refusals are already recorded as skipped.

        A paused job's fire is recorded ``skipped`` with reason ``paused`` and not run.
        """
        if self.paused is not None and await self.paused(fire.job):
            await self._record_skipped(fire.job, fire.trigger, "paused", {"dueAt": fire.due_ms})
            return
        try:
            await self.trigger(fire.job, fire.trigger, fire=fire)
        except DatabaseUnavailable:
            raise  # nothing recorded: the scheduler gives the fire back and retries it
        except (AlreadyRunning, LockedElsewhere, ServiceUnavailable) as exc:
            log.info("fire.not_run", job=fire.job, due=fire.due_ms, reason=exc.code)

    async def on_misfire(self, misfire: Misfire) -> None:
        """Scheduler callback: record fires missed beyond ``misfire_grace`` as one skipped run."""
        await self._record_skipped(
            misfire.job,
            Trigger.SCHEDULE,
            "misfired",
            {
                "firstDueAt": misfire.first_due_ms,
                "lastDueAt": misfire.last_due_ms,
                "missed": misfire.count,
            },
        )

    # ----------------------------------------------------------------- stopping

    def active_tasks(self) -> list[asyncio.Task[RunRecord]]:
        """Tasks of the runs in progress."""
        return [a.task for a in self._active.values() if a.task is not None]

    async def shutdown(self, grace_s: float) -> None:
        """Drain: start no new runs or items; after ``grace_s`` cancel in-flight items; wait for records."""
        self._accepting = False
        if self._starting:
            # A trigger between its lock acquire and its task: let it see _accepting and stop.
            await asyncio.wait(set(self._starting), timeout=grace_s)
        tasks = self.active_tasks()
        for active in self._active.values():
            active.draining = True
            if self._jobs[active.job].stop_on_drain:
                active.stop_now("shutdown")
        if not tasks:
            return
        log.info("runner.draining", runs=len(tasks), grace_s=grace_s)
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        if pending:
            log.warning("runner.cancelling", runs=len(pending))
            for active in list(self._active.values()):
                active.stop_now("shutdown")
            _, pending = await asyncio.wait(pending, timeout=10)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
