"""The jobs service behind the HTTP API: triggers, the job list and the run log."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from warmupd.clock import Clock, ms_to_iso
from warmupd.config import Config
from warmupd.errors import NotFound
from warmupd.jobs.run_state import RunHandle
from warmupd.jobs.runner import JobRunner
from warmupd.models import RunRecord, RunStatus, Trigger
from warmupd.scheduler_loop import Scheduler
from warmupd.state.pauses import PauseStore
from warmupd.state.runs import RunStore


def render_run(record: RunRecord) -> dict[str, Any]:
    """A run record in the API's camelCase form (SPEC §6)."""
    return {
        "id": record.id,
        "job": record.job,
        "status": record.status.value,
        "reason": record.reason,
        "trigger": record.trigger.value,
        "node": record.node,
        "startedAt": ms_to_iso(record.started_at_ms),
        "finishedAt": ms_to_iso(record.finished_at_ms),
        "durationMs": record.duration_ms,
        "processed": record.processed,
        "skipped": record.skipped,
        "failed": record.failed,
        "errors": list(record.errors),
        "metadata": record.metadata,
    }


class JobsService:
    """Implements :class:`warmupd.http.JobsService`."""

    def __init__(
        self,
        *,
        config: Callable[[], Config],
        runner: JobRunner,
        runs: RunStore,
        clock: Clock,
        scheduler: Callable[[], Scheduler | None] = lambda: None,
        pauses: PauseStore | None = None,
        node: str = "",
    ) -> None:
        self._config = config
        self.pauses = pauses
        self.node = node
        self.runner = runner
        self.run_store = runs
        self.clock = clock
        self._scheduler = scheduler

    def job_names(self) -> list[str]:
        """Every triggerable job."""
        return self.runner.job_names()

    async def trigger(
        self,
        job: str,
        trigger: Trigger,
        *,
        limit: int | None = None,
        concurrency: int | None = None,
    ) -> RunHandle:
        """See :meth:`JobRunner.trigger`."""
        return await self.runner.trigger(job, trigger, limit=limit, concurrency=concurrency)

    async def jobs(self) -> list[dict[str, Any]]:
        """Every job with its schedule, next fire, last run and running run."""
        cfg = self._config()
        scheduler = self._scheduler()
        paused = await self.pauses.paused() if self.pauses else {}
        out = []
        for name in self.runner.job_names():
            job = cfg.jobs[name]
            last = await self.run_store.last_finished(name)
            scheduled = scheduler is not None and job.enabled and name in scheduler.jobs
            next_ms = scheduler.next_run_ms(name) if scheduler is not None and scheduled else None
            out.append(
                {
                    "name": name,
                    "schedule": job.schedule,
                    "timezone": job.timezone,
                    "enabled": job.enabled,
                    "nextRunAt": ms_to_iso(next_ms),
                    "lastRun": render_run(last) if last else None,
                    "running": self.runner.running_run_id(name),
                    "paused": name in paused,
                    "pausedAt": ms_to_iso(paused.get(name)),
                }
            )
        return out

    async def run(self, run_id: int) -> RunRecord | None:
        """One run record; a run in progress here carries its counts so far (live progress)."""
        record = await self.run_store.get(run_id)
        if record is None or record.status is not RunStatus.RUNNING:
            return record
        live = self.runner.progress(run_id)
        if live is None:
            return record
        tally, _ = live
        return dataclasses.replace(
            record,
            processed=tally.processed,
            skipped=tally.skipped,
            failed=tally.failed,
            errors=tuple(tally.errors),
        )

    async def timeline(self, since_ms: int, limit: int) -> list[RunRecord]:
        """The newest ``limit`` runs started at or after ``since_ms``, newest first."""
        return await self.run_store.since(since_ms, limit)

    async def set_paused(self, job: str, paused: bool) -> dict[str, Any]:
        """Pause or resume ``job`` fleet-wide; returns ``{job, paused, pausedAt}``.

        :raises NotFound: unknown job.
        """
        if job not in self.runner.job_names():
            raise NotFound(f"unknown job {job!r} (known: {', '.join(self.runner.job_names())})")
        assert self.pauses is not None  # the daemon always wires the pause store
        at_ms: int | None = None
        if paused:
            at_ms = await self.pauses.pause(job, self.clock.wall_ms(), self.node)
        else:
            await self.pauses.resume(job)
        return {"job": job, "paused": paused, "pausedAt": ms_to_iso(at_ms)}

    async def runs(
        self, *, job: str | None, status: str | None, limit: int, before: int | None
    ) -> list[RunRecord]:
        """Run records, newest first."""
        return await self.run_store.list_runs(job=job, status=status, limit=limit, before=before)
