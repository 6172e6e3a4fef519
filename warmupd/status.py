"""The daemon's own view of itself: ``/api/status``, ``/readyz`` and the overdue rule (SPEC §4, §9)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from warmupd import __version__
from warmupd.clock import Clock, ms_to_iso
from warmupd.errors import DatabaseUnavailable
from warmupd.health import Health
from warmupd.heartbeat import Heartbeat
from warmupd.jobs.ondemand import OnDemand
from warmupd.jobs.service import JobsService
from warmupd.scheduler_loop import Scheduler
from warmupd.state.backends import STATE_ERRORS, StateBackend, describe_database
from warmupd.state.cache import CacheStore
from warmupd.state.runs import NodeInfo, NodeStore, RunStore


@dataclass
class LockState:
    """What the lock layer looks like from outside."""

    backend: str
    """``redis``, ``sqlite`` or ``postgresql``: where new locks go now (the database's name when
    its lease rows alone hold them: without Redis, or degraded under ``on_unavailable =
    "database"``)."""
    redis: str
    """``up``, ``down`` or ``unconfigured``."""
    usable: bool
    """False only when Redis is down and the policy forbids the database fallback."""


CACHE_COUNTS_MAX_AGE_MS = 5_000
"""How old the cache-entry counts of the status may be. Counting by freshness walks the expiry
indexes (millions of entries with a large catalogue), so it runs at most this often, in the
background, never once per request."""


class StatusService:
    """Builds the status document; answers readiness."""

    def __init__(
        self,
        *,
        db: StateBackend,
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
        nodes: NodeStore | None = None,
        node_stale_ms: Callable[[], int] = lambda: 180_000,
        heartbeat: Heartbeat | None = None,
        health: Health | None = None,
    ) -> None:
        self.db = db
        self.health = health or Health(redis_configured=False)
        # What the database said last; shown (not re-read) while it is down.
        self._last_jobs: list[dict[str, Any]] = []
        self._last_nodes: list[NodeInfo] = []
        self._schema_version: int | None = None
        self.nodes = nodes
        self.node_stale_ms = node_stale_ms
        self.heartbeat = heartbeat
        self._counts: tuple[int, dict[str, int]] | None = None
        self._counting: asyncio.Task[dict[str, int]] | None = None
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
        """Ready when the DB answers and locks are usable (Redis up, or the fallback allowed).

        While the health state says the database is down, the answer comes from it without a
        connection attempt (a load balancer's probes must not pile up connects on a dead server);
        the probe loop and every statement keep reporting, so it flips back the moment one answers.
        """
        why = self.health.database_error
        if why is None:
            try:
                await self.db.fetchone("SELECT 1")
            except DatabaseUnavailable as exc:
                why = exc.message
            except STATE_ERRORS as exc:
                why = type(exc).__name__
        db_ok = why is None
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

    async def live_nodes(self) -> list[str]:
        """Every process with a recent heartbeat on this state, this one included."""
        return sorted(n.node for n in await self.node_list())

    async def node_list(self) -> list[NodeInfo]:
        """The live nodes from the heartbeat table (SPEC §14), this one included even when its
        first beat is not in the table yet."""
        skew = self.heartbeat.skew_ms if self.heartbeat is not None else None
        me = NodeInfo(self.node, __version__, self.started_ms, self.clock.wall_ms(), skew)
        if self.nodes is None:
            return [me]
        live = await self.nodes.live(self.clock.wall_ms(), self.node_stale_ms())
        return live if any(n.node == self.node for n in live) else [*live, me]

    async def _count_cache(self, now_ms: int) -> dict[str, int]:
        cache = await self.cache.totals(now_ms)
        self._counts = (now_ms, cache)
        return cache

    async def cache_counts(self, now_ms: int) -> dict[str, int]:
        """Cache entries by freshness, at most :data:`CACHE_COUNTS_MAX_AGE_MS` old.

        Past that age the last counts are answered and one count runs in the background (a
        request never waits for the scan, except the very first).
        """
        if self._counts is None:
            return await self._count_cache(now_ms)
        counted_ms, cache = self._counts
        if now_ms - counted_ms > CACHE_COUNTS_MAX_AGE_MS and (
            self._counting is None or self._counting.done()
        ):
            self._counting = asyncio.ensure_future(self._count_cache(now_ms))
            # Retrieved here: a count that failed (the database away) is just not newer.
            self._counting.add_done_callback(lambda t: t.cancelled() or t.exception())
        return cache

    async def status(self) -> dict[str, Any]:
        """SPEC §9 ``GET /api/status``; answers ``degraded`` with its reasons while the DB is down.

        Without the database, the job list, nodes and schema version are the last ones read (the
        document says the database is down, and why), the cache counts the last ones counted.
        """
        now = self.clock.wall_ms()
        try:
            cache = await self.cache_counts(now)
            jobs = self._last_jobs = await self.jobs(now)
            nodes = self._last_nodes = await self.node_list()
            self._schema_version = await self.db.schema_version()
        except DatabaseUnavailable:
            cache = self._counts[1] if self._counts else {"fresh": 0, "stale": 0, "expired": 0}
            jobs, nodes = self._last_jobs, self._last_nodes
        locks = self._lock_state()
        database = self.health.database_error
        reasons = [f"database: down ({database})"] if database is not None else []
        if locks.redis == "down":
            reasons.append("redis: down")
        reasons += [f"job {j['name']}: overdue" for j in jobs if j["overdue"]]
        skewed = self.heartbeat.degraded_reason() if self.heartbeat is not None else None
        if skewed is not None:
            reasons.append(skewed)
        db: dict[str, Any] = {
            **describe_database(self.db),
            "schemaVersion": self._schema_version or 0,
            "state": self.health.database,
        }
        if database is not None:
            db["error"] = database
        return {
            "version": __version__,
            "node": self.node,
            "startedAt": ms_to_iso(self.started_ms),
            "uptimeS": round((now - self.started_ms) / 1000, 3),
            "state": "degraded" if reasons else "ok",
            "reasons": reasons,
            "nodes": [
                {
                    "node": n.node,
                    "version": n.version,
                    "startedAt": ms_to_iso(n.started_at_ms),
                    "heartbeatAt": ms_to_iso(n.heartbeat_at_ms),
                    "skewMs": n.skew_ms,
                }
                for n in nodes
            ],
            "locks": {"backend": locks.backend, "redis": locks.redis},
            "db": db,
            "jobs": jobs,
            "onDemand": {"inFlight": self.on_demand.in_flight(), "queued": self.on_demand.queued()},
            "cache": cache,
            "restartRequired": list(self._restart_required()),
        }
