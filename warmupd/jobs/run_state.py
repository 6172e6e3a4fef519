"""The bookkeeping of a run in progress: which items are in flight, why it stops, what it counted."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from warmupd.clock import Clock, backoff
from warmupd.errors import DatabaseUnavailable
from warmupd.jobs.base import ItemOutcome, ItemResult
from warmupd.logs import get_logger
from warmupd.models import RunRecord, RunStatus
from warmupd.state.runs import RunStore

log = get_logger("warmupd.jobs")

RECORD_RETRY_S = 1.0
RECORD_RETRY_MAX_S = 30.0
"""Back-off of a final run record that waits for the state database."""


class RunHandle:
    """A started run; :meth:`wait` never cancels it (a client disconnect must not stop a job)."""

    def __init__(self, run_id: int, job: str, task: asyncio.Task[RunRecord]) -> None:
        self.run_id = run_id
        self.job = job
        self.task = task

    async def wait(self) -> RunRecord:
        """The finished run record."""
        return await asyncio.shield(self.task)


async def record_finish(runs: RunStore, clock: Clock, run_id: int, **fields: Any) -> RunRecord:
    """Write a run's final record; while the database is away, keep trying (1 s doubling to 30 s)
    so that the record is not lost. Only shutdown's cancellation ends the wait (the row then stays
    ``running`` and a later start marks it ``abandoned``)."""
    for delay_s in backoff(RECORD_RETRY_S, RECORD_RETRY_MAX_S):
        try:
            return await asyncio.shield(runs.finish(run_id, **fields))
        except DatabaseUnavailable as exc:
            log.warning("run.record_waiting", run=run_id, retry_s=delay_s, error=exc.message)
        await clock.sleep(delay_s)
    raise AssertionError("unreachable: backoff() never ends")  # pragma: no cover


@dataclass(eq=False)
class ActiveRun:
    """A run of one job in progress in this process: its task, in-flight items, stop reason."""

    job: str
    run_id: int | None = None
    task: asyncio.Task[RunRecord] | None = None
    draining: bool = False
    stop_reason: str | None = None
    inflight: set[asyncio.Task[ItemOutcome]] = field(default_factory=set)
    tally: Tally | None = None
    """The counts so far, once items run (live progress for the dashboard)."""
    selected: int | None = None
    lease_backend: str = ""
    """Where the run's lease lives (``redis``, ``sqlite``, ``postgresql``)."""

    def database_lost(self) -> str:
        """Stop because the state database is away; returns the run's reason.

        ``lock_lost`` when the lease lives in that database too (it cannot be renewed: SPEC §14),
        else ``database_unavailable`` (the lease holds, but nothing can be recorded or read).
        """
        self.stop_now("lock_lost" if self.lease_backend == "postgresql" else "database_unavailable")
        assert self.stop_reason is not None
        return self.stop_reason

    def stop_now(self, reason: str) -> None:
        """Start no more items and cancel the in-flight ones; the first reason wins."""
        if self.stop_reason is None:
            self.stop_reason = reason
        for task in list(self.inflight):
            task.cancel()

    def final_status(self, tally: Tally, selected: int) -> tuple[RunStatus, str | None]:
        """The status and reason of a run whose items have all been started and settled."""
        if self.stop_reason in ("lock_lost", "database_unavailable"):
            return RunStatus.FAILED, self.stop_reason
        if self.stop_reason is not None:
            return RunStatus.CANCELLED, self.stop_reason
        if self.draining and tally.done < selected:
            return RunStatus.CANCELLED, "shutdown"
        if selected and tally.failed == selected:
            return RunStatus.FAILED, "all_items_failed"
        return RunStatus.SUCCESS, None


@dataclass
class Tally:
    """The item counts of a run and its first ten errors (``"label: message"``)."""

    processed: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.processed + self.skipped + self.failed

    def add(self, label: str, outcome: ItemOutcome) -> None:
        if outcome.result is ItemResult.PROCESSED:
            self.processed += 1
        elif outcome.result is ItemResult.SKIPPED:
            self.skipped += 1
        else:
            self.failed += 1
            if len(self.errors) < 10:
                # A single-item job (a command) has no label: its error is the reason alone.
                self.errors.append(f"{label}: {outcome.reason}" if label else str(outcome.reason))
