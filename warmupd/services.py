"""The service protocols the HTTP edge is written against (SPEC §9).

The daemon passes concrete implementations to :func:`warmupd.http.create_app`; tests pass hand-written
fakes. Nothing here imports aiohttp, so the jobs layer can implement these without touching the web.
"""

from __future__ import annotations

from typing import Any, Protocol

from warmupd.models import Comparison, RunRecord, Trigger


class StatusProvider(Protocol):
    """What the status routes need."""

    async def status(self) -> dict[str, Any]:
        """The ``GET /api/status`` document."""
        ...

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        """Readiness and the reasons behind it."""
        ...

    async def live_nodes(self) -> list[str]:
        """Every process with a recent heartbeat on this state (the dashboard's node list)."""
        ...


class RunHandle(Protocol):
    """A run that was started (or found running)."""

    run_id: int
    job: str

    async def wait(self) -> RunRecord:
        """Wait for the run to finish (shielded: a client disconnect never cancels a job)."""
        ...


class JobsService(Protocol):
    """Job triggers, the job list and the run log."""

    def job_names(self) -> list[str]:
        """Every triggerable job."""
        ...

    async def trigger(
        self,
        job: str,
        trigger: Trigger,
        *,
        limit: int | None = None,
        concurrency: int | None = None,
    ) -> RunHandle:
        """Start a run now (the lock is taken before this returns).

        :raises NotFound: unknown job.
        :raises AlreadyRunning: this process runs it (``run_id`` is the running run).
        :raises LockedElsewhere: another process holds its lock (a skipped run was recorded).
        """
        ...

    async def jobs(self) -> list[dict[str, Any]]:
        """``[{name, schedule, timezone, enabled, nextRunAt, lastRun, running}]`` (rendered)."""
        ...

    async def run(self, run_id: int) -> RunRecord | None:
        """One run record."""
        ...

    async def runs(
        self, *, job: str | None, status: str | None, limit: int, before: int | None
    ) -> list[RunRecord]:
        """Run records, newest first."""
        ...

    async def timeline(self, since_ms: int, limit: int) -> list[RunRecord]:
        """The newest ``limit`` runs started at or after ``since_ms`` (the dashboard's timeline)."""
        ...

    async def set_paused(self, job: str, paused: bool) -> dict[str, Any]:
        """Pause or resume a job's scheduled fires fleet-wide; ``{job, paused, pausedAt}``.

        :raises NotFound: unknown job.
        """
        ...


class ComparisonsService(Protocol):
    """Comparisons: writes, on-demand warmup and cache reads."""

    async def upsert(self, comparison: Comparison) -> tuple[bool, str]:
        """Insert or update; ``(created, dataHash)``."""
        ...

    async def add_views(self, slug: str, count: int, at_ms: int | None) -> dict[str, Any]:
        """Add views; returns ``{slug, viewCount, lastVisited}``. :raises NotFound:"""
        ...

    async def request_warmup(self, slug: str, data_hash: str | None) -> dict[str, Any]:
        """Fire-and-forget warmup; ``{slug, dataHash, status: queued|running|ready}``.

        :raises NotFound: unknown slug.
        :raises StaleDataHash: ``data_hash`` is not the current one.
        :raises QueueFull: ``on_demand.max_queued`` reached.
        """
        ...

    async def warmup_status(self, slug: str) -> dict[str, Any]:
        """``{slug, dataHash, warmup, parts: {forecastA, forecastB, insights}, lastError?, updatedAt}``.

        :raises NotFound:
        """
        ...

    async def search(self, prefix: str, limit: int) -> list[dict[str, Any]]:
        """Comparisons by slug or term prefix, most viewed first, with their parts' freshness."""
        ...

    async def detail(self, slug: str) -> dict[str, Any]:
        """A comparison, its parts' freshness and decoded values, its warmup status; schedules nothing.

        :raises NotFound:
        """
        ...

    async def pack(self, slug: str) -> bytes:
        """The premium pack ``{slug, terms, dataHash, forecasts, insights, freshness, needsWarmup}``
        as encoded JSON (the service splices the cached parts in as stored; the edge sends it as is).

        Schedules an on-demand warmup for missing parts and a background refresh for stale ones.
        :raises NotFound:
        """
        ...
