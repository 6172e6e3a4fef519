"""Wiring: the concrete classes behind every interface, picked from the configuration.

:func:`build_core` opens the state database, recovers abandoned runs, chooses the lock backend and
builds the jobs layer; ``warmupd serve`` (:mod:`warmupd.daemon`) adds the HTTP edge and the
scheduler on top, ``warmupd run`` uses it as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from warmupd import __version__
from warmupd.clock import Clock
from warmupd.config import (
    JOB_FORECASTS,
    JOB_HOUSEKEEPING,
    JOB_INSIGHTS,
    JOB_ON_DEMAND,
    Config,
    load_config,
)
from warmupd.errors import ConfigError, DatabaseUnavailable
from warmupd.health import Health
from warmupd.heartbeat import Heartbeat
from warmupd.jobs import build_jobs, node_stale_ms
from warmupd.jobs.base import Job
from warmupd.jobs.housekeeping import HousekeepingJob
from warmupd.jobs.ondemand import OnDemand
from warmupd.jobs.parts import Warmer
from warmupd.jobs.runner import JobRunner, Progress
from warmupd.locks import Locks
from warmupd.locks.fallback import DatabaseLocks, FallbackLocks
from warmupd.locks.postgres import PostgresLocks
from warmupd.locks.redis import RedisLocks
from warmupd.locks.sqlite import SqliteLocks
from warmupd.logs import get_logger
from warmupd.metrics import Metrics
from warmupd.pool import ProcessPool
from warmupd.producers import InsightsProducer
from warmupd.producers.insights_builtin import BuiltinInsights
from warmupd.producers.insights_openai import OpenAIInsights
from warmupd.producers.swap import SwappableInsights
from warmupd.reload import split_reload
from warmupd.scheduler import JobSchedule
from warmupd.state.backends import StateBackend, state_database, watch_database
from warmupd.state.cache import CacheStore
from warmupd.state.pauses import PauseStore
from warmupd.state.runs import NodeStore, RunStore
from warmupd.state.sqlite import SqliteDatabase
from warmupd.state.store import ComparisonStore, WarmupStore
from warmupd.status import LockState

log = get_logger("warmupd.daemon")

POOL_JOBS = (JOB_FORECASTS, JOB_INSIGHTS)
"""The scheduled jobs whose items compute in the process pool."""
POOL_PREWARM_S = 15.0
"""How long before such a job's fire the pool's workers are started (their start-up, statsmodels
imports included, takes 1–3 s on a quiet 2-core machine and ~8 s on a loaded one, at their lower
priority; SPEC §17: the first items must not wait for it)."""


class ConfigHolder:
    """The configuration in force; SIGHUP replaces it only with a valid one."""

    def __init__(self, config: Config, path: str | None) -> None:
        self.current = config
        self.path = path
        self.restart_required: list[str] = []
        """Keys whose value in the file differs from the running one until a restart (SPEC §17)."""

    def __call__(self) -> Config:
        return self.current

    def reload(self) -> Config | None:
        """Re-read the file; returns the config now in force, or None (old kept) when invalid.

        Restart-only settings (:data:`warmupd.reload.RESTART_ONLY`) keep their running values;
        the keys whose file value differs are in :attr:`restart_required`, each logged.
        """
        try:
            new = load_config(self.path)
        except ConfigError as exc:
            log.error("config.reload_rejected", error=exc)  # noqa: TRY400 - the message is the whole story
            return None
        kinds = {name: job.kind for name, job in new.jobs.items()}
        if kinds != {name: job.kind for name, job in self.current.jobs.items()}:
            # The runner's jobs are built once at start-up: a job added, removed or given another
            # kind would be scheduled without a job to run it (or run with the wrong one).
            log.error(
                "config.reload_rejected",
                error="jobs: adding or removing a job, or changing its kind, needs a restart",
            )
            return None
        self.current, self.restart_required = split_reload(self.current, new)
        for key in self.restart_required:
            log.warning("reload.restart_required", key=key)
        return self.current


def schedules_of(config: Config) -> list[JobSchedule]:
    """The scheduler's view of the enabled jobs."""
    return [
        JobSchedule(
            name=job.name,
            expr=job.schedule,
            timezone=job.timezone,
            misfire_grace_ms=job.misfire_grace_ms,
            jitter_ms=job.jitter_ms,
        )
        for job in config.jobs.values()
        if job.enabled
    ]


def make_insights(config: Config, pool: ProcessPool) -> InsightsProducer:
    """The insights producer ``ai.provider`` names; its analysis runs in the process pool."""

    async def facts_runner(fn: Callable[[Any], dict[str, Any]], comparison: Any) -> dict[str, Any]:
        return await pool.run(fn, comparison)

    ai = config.ai
    if ai.provider == "openai":
        # Both are enforced by config validation when provider = "openai".
        assert ai.base_url is not None
        assert ai.model is not None
        return OpenAIInsights(
            base_url=ai.base_url,
            model=ai.model,
            api_key_env=ai.api_key_env,
            timeout_s=ai.timeout_ms / 1000,
            max_retries=ai.max_retries,
            prompt_version=ai.prompt_version,
            max_in_flight=ai.max_in_flight,
            facts_runner=facts_runner,
        )
    return BuiltinInsights(prompt_version=ai.prompt_version, facts_runner=facts_runner)


@dataclass
class Core:
    """Everything but the HTTP edge and the scheduler: what ``serve`` and ``run`` share."""

    config: ConfigHolder
    clock: Clock
    node: str
    db: StateBackend
    metrics: Metrics
    locks: Locks
    db_locks: DatabaseLocks
    """The lease rows of the state database (alone, or under Redis in :attr:`fallback`)."""
    fallback: FallbackLocks | None
    redis_locks: RedisLocks | None
    pool: ProcessPool
    runs: RunStore
    nodes: NodeStore
    heartbeat: Heartbeat
    cache: CacheStore
    comparisons: ComparisonStore
    warmups: WarmupStore
    warmer: Warmer
    runner: JobRunner
    on_demand: OnDemand
    pauses: PauseStore
    health: Health
    insights: SwappableInsights
    jobs: dict[str, Job[Any]]
    background: list[asyncio.Task[Any]] = field(default_factory=list)

    def apply(self, old: Config, new: Config) -> None:
        """Put the in-place settings of a reloaded config into the running components (SIGHUP).

        Everything else either is read from the config holder when used (job settings, secrets,
        lease, ``read_auth``, ``max_body_bytes``, queue bound, shutdown grace) or needs a restart
        (:data:`warmupd.reload.RESTART_ONLY`). A run in progress keeps the job settings it started
        with; an item computed after the reload uses the new TTLs and forecast settings.
        """
        self.warmer.cache_config = new.cache
        self.warmer.forecast_config = new.forecast
        self.on_demand.set_concurrency(new.on_demand.concurrency)
        if self.fallback is not None:
            self.fallback.policy = new.redis.on_unavailable
        housekeeping = self.jobs.get(JOB_HOUSEKEEPING)
        if isinstance(housekeeping, HousekeepingJob):
            housekeeping.stale_ttl_ms = new.cache.stale_ttl_ms
            housekeeping.node_stale_ms = node_stale_ms(new)
        if new.ai != old.ai:
            # Calls in flight finish on the old producer, which is closed after the last of them.
            self.insights.swap(make_insights(new, self.pool))
            log.info("ai.reloaded", provider=new.ai.provider, model=self.insights.model)

    def lock_state(self) -> LockState:
        """Where locks go now and whether Redis answers: read from the one health state."""
        if self.fallback is None:
            return LockState(backend=self.db_locks.name, redis=self.health.redis, usable=True)
        return LockState(
            backend=self.fallback.backend,
            redis=self.health.redis,
            usable=self.health.redis_up or self.fallback.policy == "database",
        )


def new_health(cfg: Config, metrics: Metrics, *, database_up: bool = True) -> Health:
    """The one health state, with the metrics following it synchronously (SPEC §17)."""
    health = Health(redis_configured=bool(cfg.redis.url), database_up=database_up)
    # The metrics follow the health state synchronously, so they never lag status or readyz.
    health.subscribe(lambda up: metrics.redis_up.set(1 if up else 0))
    health.subscribe_database(lambda up: metrics.database_up.set(1 if up else 0))
    return health


async def _forget_node(nodes: NodeStore, node: str) -> None:
    try:
        await nodes.remove(node)
    except DatabaseUnavailable as exc:
        # Stopping with the database gone: the row ages out; others see the heartbeat stop.
        log.warning("node.remove_failed", error=exc.message)


async def build_core(
    stack: AsyncExitStack,
    holder: ConfigHolder,
    *,
    clock: Clock,
    node: str,
    metrics: Metrics,
    on_progress: Progress | None = None,
    db: StateBackend | None = None,
    health: Health | None = None,
) -> Core:
    """Open the DB, recover abandoned runs, pick the lock backend and wire the jobs layer.

    ``db`` may come already open (``serve`` waits for PostgreSQL itself, SPEC §14); ``health``
    is then the state that waiting already reported to.
    """
    cfg = holder()
    if db is None:
        db = state_database(cfg.database, cfg.daemon.db_path)
        await db.open()
    stack.push_async_callback(db.close)
    health = health or new_health(cfg, metrics)
    watch_database(db, health.observe_database)
    nodes, runs = NodeStore(db), RunStore(db)
    heartbeat = Heartbeat(
        nodes=nodes,
        runs=runs,
        clock=clock,
        node=node,
        version=__version__,
        stale_ms=lambda: 3 * holder().locks.lease_ms,  # locks.lease reloads
    )
    stack.push_async_callback(_forget_node, nodes, node)
    await heartbeat.beat()  # also marks the runs of processes that died abandoned

    def observe(backend: str, result: str) -> None:
        metrics.lock_acquisitions.inc(backend=backend, result=result)

    redis_locks: RedisLocks | None = None
    fallback = None
    if cfg.redis.url:
        redis_locks = RedisLocks(
            cfg.redis.url, cfg.redis.key_prefix, cfg.redis.connect_timeout_ms / 1000, clock, node
        )
        stack.push_async_callback(redis_locks.close)
        try:
            for warning in await redis_locks.check_server():
                log.warning("redis.check", warning=warning)
        except Exception as exc:  # noqa: BLE001 - Redis being down at start-up is not fatal
            log.warning("redis.unreachable", error=type(exc).__name__)
    # The lease rows of the state database: this host's file, or PostgreSQL's for the fleet.
    db_locks: DatabaseLocks = (
        SqliteLocks(db, clock, node)
        if isinstance(db, SqliteDatabase)
        else PostgresLocks(db, clock, node)
    )
    locks: Locks = db_locks
    if redis_locks is not None:
        fallback = FallbackLocks(redis_locks, db_locks, cfg.redis.on_unavailable, health=health)
        locks = fallback
        stack.push_async_callback(db_locks.close)  # its own background releases (PostgreSQL)
        await fallback.ping()
    locks.on_acquire = observe
    stack.push_async_callback(locks.close)

    pool = await stack.enter_async_context(
        ProcessPool(
            workers=cfg.daemon.pool_workers,
            idle_shutdown_s=cfg.daemon.pool_idle_shutdown_ms / 1000,
            clock=clock,
        )
    )
    # Swappable: a reload that changes [ai] puts a new producer in place (Core.apply).
    insights = SwappableInsights(make_insights(cfg, pool))
    stack.push_async_callback(insights.close)
    cache, comparisons, warmups = CacheStore(db), ComparisonStore(db), WarmupStore(db)
    warmer = Warmer(
        cache=cache,
        cpu=pool,
        insights=insights,
        cache_config=cfg.cache,
        forecast_config=cfg.forecast,
        clock=clock,
    )
    jobs = build_jobs(
        config=cfg,
        comparisons=comparisons,
        cache=cache,
        runs=runs,
        warmups=warmups,
        nodes=nodes,
        warmer=warmer,
        purge_locks=db_locks.purge_expired,
        clock=clock,
    )
    for job in jobs.values():
        stack.push_async_callback(job.close)
    for name in [*jobs, JOB_ON_DEMAND]:
        metrics.declare_job(name)
    for name in jobs:
        last = await runs.last_success_ms(name)
        if last is not None:
            # After a restart the alert on an overdue job must still see the real last success.
            metrics.job_last_success.set(last / 1000, job_name=name)
    pauses = PauseStore(db)
    runner = JobRunner(
        jobs=jobs,
        config=holder,
        locks=locks,
        runs=runs,
        clock=clock,
        node=node,
        metrics=metrics,
        on_progress=on_progress,
        paused=pauses.is_paused,
    )
    on_demand = OnDemand(
        config=holder,
        comparisons=comparisons,
        warmups=warmups,
        runs=runs,
        warmer=warmer,
        locks=locks,
        clock=clock,
        node=node,
        metrics=metrics,
    )

    async def scrape_cache() -> None:
        try:
            counts = await cache.counts(clock.wall_ms())
        except DatabaseUnavailable:
            return  # the last counts stay; warmupd_database_up says why they do not move
        metrics.cache_entries.replace({key: float(n) for key, n in counts.items()})

    metrics.add_scrape_hook(scrape_cache)
    return Core(
        config=holder,
        clock=clock,
        node=node,
        db=db,
        metrics=metrics,
        locks=locks,
        db_locks=db_locks,
        fallback=fallback,
        redis_locks=redis_locks,
        pool=pool,
        runs=runs,
        nodes=nodes,
        heartbeat=heartbeat,
        cache=cache,
        comparisons=comparisons,
        warmups=warmups,
        warmer=warmer,
        runner=runner,
        on_demand=on_demand,
        pauses=pauses,
        health=health,
        insights=insights,
        jobs=jobs,
    )


async def prewarm_pool(
    pool: ProcessPool, next_run_ms: Callable[[], int | None], clock: Clock, *, lead_s: float
) -> None:
    """Loop forever: start the pool ``lead_s`` before each fire of a job that computes in it.

    ``next_run_ms`` tells when the next such fire runs (``None``: none scheduled). The lead is
    capped at half the pool's idle shutdown, so a pool started ahead is not reaped before the fire.
    """
    lead_ms = min(lead_s, pool.idle_shutdown_s / 2) * 1000
    started_for: int | None = None
    while True:
        due_ms = next_run_ms()
        now_ms = clock.wall_ms()
        if due_ms is None:
            # Also what the scheduler answers before it has loaded its state at start-up.
            await clock.sleep(5.0)
            continue
        wait_s = (due_ms - lead_ms - now_ms) / 1000
        if due_ms == started_for or wait_s > 0:
            # Re-read at least once a minute: a reload or a clock jump may move the fire.
            await clock.sleep(min(max(wait_s, 1.0), 60.0))
            continue
        pool.start()
        started_for = due_ms
