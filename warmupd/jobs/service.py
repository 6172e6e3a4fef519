"""The jobs service behind the HTTP API: triggers, the job list and the run log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from warmupd.clock import Clock, ms_to_iso
from warmupd.config import Config
from warmupd.jobs.runner import JobRunner, RunHandle
from warmupd.models import RunRecord, Trigger
from warmupd.runs import RunStore
from warmupd.scheduler_loop import Scheduler


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
    ) -> None:
        self._config = config
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
                }
            )
        return out

    async def run(self, run_id: int) -> RunRecord | None:
        """One run record."""
        return await self.run_store.get(run_id)

    async def runs(
        self, *, job: str | None, status: str | None, limit: int, before: int | None
    ) -> list[RunRecord]:
        """Run records, newest first."""
        return await self.run_store.list_runs(job=job, status=status, limit=limit, before=before)
