"""The daemon's own view of itself: ``/api/status``, ``/readyz`` and the overdue rule (SPEC §4, §9)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from warmupd import __version__
from warmupd.cache import CacheStore
from warmupd.clock import Clock, ms_to_iso
from warmupd.db import Database, DatabaseError
from warmupd.jobs.ondemand import OnDemand
from warmupd.jobs.service import JobsService
from warmupd.runs import RunStore
from warmupd.scheduler_loop import Scheduler


@dataclass
class LockState:
    """What the lock layer looks like from outside."""

    backend: str
    """``redis`` or ``sqlite``: where new locks go now."""
    redis: str
    """``up``, ``down`` or ``unconfigured``."""
    usable: bool
    """False only when Redis is down and the policy forbids the SQLite fallback."""


class StatusService:
    """Builds the status document; answers readiness."""

    def __init__(
        self,
        *,
        db: Database,
        runs: RunStore,
        cache: CacheStore,
        job_list: JobsService,
        on_demand: OnDemand,
        scheduler: Callable[[], Scheduler | None],
        lock_state: Callable[[], LockState],
        restart_required: Callable[[], list[str]] = list,
        node: str,
        clock: Clock,
        started_ms: int,
    ) -> None:
        self.db = db
        self.runs = runs
        self.cache = cache
        self.job_list = job_list
        self.on_demand = on_demand
        self._scheduler = scheduler
        self._lock_state = lock_state
        self._restart_required = restart_required
        self.node = node
        self.clock = clock
        self.started_ms = started_ms

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        """Ready when the DB answers and locks are usable (Redis up, or the fallback allowed)."""
        try:
            await self.db.fetchone("SELECT 1")
            db_ok = True
        except (DatabaseError, OSError) as exc:
            db_ok, why = False, type(exc).__name__
        locks = self._lock_state()
        detail = {
            "db": "ok" if db_ok else f"unavailable ({why})",
            "locks": locks.backend,
            "redis": locks.redis,
        }
        return db_ok and locks.usable, detail

    async def jobs(self, now_ms: int) -> list[dict[str, Any]]:
        """The job list of ``GET /api/jobs`` plus each job's last success and overdue state."""
        scheduler = self._scheduler()
        out = []
        for entry in await self.job_list.jobs():
            name = entry["name"]
            last_success = await self.runs.last_success_ms(name)
            overdue = bool(
                scheduler
                and entry["enabled"]
                and name in scheduler.jobs
                and scheduler.is_overdue(name, last_success, now_ms)
            )
            out.append({**entry, "lastSuccessAt": ms_to_iso(last_success), "overdue": overdue})
        return out

    async def status(self) -> dict[str, Any]:
        """SPEC §9 ``GET /api/status``."""
        now = self.clock.wall_ms()
        cache = {"fresh": 0, "stale": 0, "expired": 0}
        for (_, state), n in (await self.cache.counts(now)).items():
            cache[state] += n
        jobs = await self.jobs(now)
        locks = self._lock_state()
        degraded = locks.redis == "down" or any(j["overdue"] for j in jobs)
        return {
            "version": __version__,
            "node": self.node,
            "startedAt": ms_to_iso(self.started_ms),
            "uptimeS": round((now - self.started_ms) / 1000, 3),
            "state": "degraded" if degraded else "ok",
            "locks": {"backend": locks.backend, "redis": locks.redis},
            "db": {
                "path": str(self.db.path),
                "sizeBytes": self.db.size_bytes(),
                "schemaVersion": await self.db.schema_version(),
            },
            "jobs": jobs,
            "onDemand": {"inFlight": self.on_demand.in_flight(), "queued": self.on_demand.queued()},
            "cache": cache,
            "restartRequired": list(self._restart_required()),
        }
