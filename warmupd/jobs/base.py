"""What a job is to the runner: a selection and a per-item step (SPEC §6).

A :class:`Job` never schedules, locks or records anything: the runner does all of that the same way
for every job, so the three warmup jobs are just their selection query and their item step.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from warmupd.config import JobConfig
from warmupd.config_kinds import KindSpec
from warmupd.models import Trigger

ItemT = TypeVar("ItemT")


class ItemResult(StrEnum):
    """How one item ended; the metric label of ``warmupd_job_items_total``."""

    PROCESSED = "processed"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class ItemOutcome:
    """An item's result and, for skipped or failed items, why."""

    result: ItemResult
    reason: str | None = None

    @classmethod
    def processed(cls) -> ItemOutcome:
        """The item was computed and written."""
        return cls(ItemResult.PROCESSED)

    @classmethod
    def skipped(cls, reason: str) -> ItemOutcome:
        """The item needed no work (``up_to_date``) or could not be worked on (``insufficient_data``)."""
        return cls(ItemResult.SKIPPED, reason)


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """The settings a run starts with; a reload during the run does not change them."""

    limit: int
    concurrency: int
    item_timeout_ms: int
    max_duration_ms: int
    window_ms: int
    min_views: int
    run_retention_ms: int
    spec: KindSpec | None = None
    """A user-defined job's own settings, as the config had them when the run started."""

    @classmethod
    def from_config(
        cls, job: JobConfig, *, limit: int | None = None, concurrency: int | None = None
    ) -> RunSettings:
        """Settings from the job's config, with a trigger's overrides."""
        return cls(
            limit=limit or job.limit,
            concurrency=concurrency or job.concurrency,
            item_timeout_ms=job.item_timeout_ms,
            max_duration_ms=job.max_duration_ms,
            window_ms=job.window_ms,
            min_views=job.min_views,
            run_retention_ms=job.run_retention_ms,
            spec=job.spec,
        )


@dataclass(frozen=True, kw_only=True)
class RunContext:
    """Who a run is: what a job may hand on to the work it starts (a command's ``WARMUPD_*``)."""

    run_id: int
    job: str
    trigger: Trigger
    fire_ms: int
    """The scheduled fire's due time, or the run's start for a manual run."""


@dataclass(frozen=True, kw_only=True)
class Fencing:
    """The writer's fencing token, passed with every cache write of a run."""

    fence_key: str
    fence: int


class Job(abc.ABC, Generic[ItemT]):
    """A warmup job: which items, and what to do with one."""

    name: str
    lock_key: str

    @abc.abstractmethod
    async def select(self, settings: RunSettings, now_ms: int) -> list[ItemT]:
        """The items of this run, in processing order."""

    @abc.abstractmethod
    async def process(self, item: ItemT, fencing: Fencing, now_ms: int) -> ItemOutcome:
        """Work on one item.

        Raise :class:`~warmupd.errors.WarmupdError` (or any exception) to fail the item; the run goes on.
        """

    @abc.abstractmethod
    def label(self, item: ItemT) -> str:
        """How the item is named in the run's errors (``"slug: message"``)."""

    stop_on_drain = False
    """True: at SIGTERM the in-flight items are cancelled at once (a command is told to stop and
    gets ``shutdown_grace`` to do so), instead of being left to finish within the grace."""

    def start_run(self) -> None:
        """Called once before the first item of a run (e.g. to reset an AI breaker)."""

    def begin_run(self, context: RunContext) -> None:
        """Called once before :meth:`select` with the run's identity."""

    def item_timeout_s(self, settings: RunSettings) -> float | None:
        """The runner's time limit per item; None when the job times its own work."""
        return settings.item_timeout_ms / 1000

    def run_deadline_s(self, settings: RunSettings) -> float:
        """When the runner cancels the run (``max_duration``)."""
        return settings.max_duration_ms / 1000

    async def close(self) -> None:
        """Release what the job holds between runs (a connection pool); called at shutdown."""

    def summary(self) -> dict[str, Any]:
        """What the run did beyond its item counts, merged into the run's metadata at the end."""
        return {}
