"""The bookkeeping of a run in progress: which items are in flight, why it stops, what it counted."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from warmupd.jobs.base import ItemOutcome, ItemResult
from warmupd.models import RunRecord, RunStatus


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

    def stop_now(self, reason: str) -> None:
        """Start no more items and cancel the in-flight ones; the first reason wins."""
        if self.stop_reason is None:
            self.stop_reason = reason
        for task in list(self.inflight):
            task.cancel()

    def final_status(self, tally: Tally, selected: int) -> tuple[RunStatus, str | None]:
        """The status and reason of a run whose items have all been started and settled."""
        if self.stop_reason == "lock_lost":
            return RunStatus.FAILED, "lock_lost"
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
