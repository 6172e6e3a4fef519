"""The composition root: picks concrete classes, wires them, owns the lifecycle (SPEC §11).

Start-up: load config → open DB, migrate → mark orphaned runs abandoned → connect Redis (non-fatal)
→ start HTTP → start the scheduler (which runs due misfires) → ``READY=1``. Every component is
entered into one ``AsyncExitStack`` in start-up order, so shutdown runs in reverse on every path.

SIGTERM/SIGINT walk a small state machine: running → draining (no new HTTP connections, no new
fires, no new items; in-flight items may finish within ``shutdown_grace``) → cancelling (in-flight
items cancelled, runs recorded ``cancelled``) → stopped (locks released, DB closed). SIGHUP re-reads
the config; an invalid file is rejected and the old config stays in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import faulthandler
import logging
import secrets
import signal
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from warmupd.clock import Clock, SystemClock
from warmupd.config import Config, load_config
from warmupd.db import Database
from warmupd.errors import AlreadyRunning, ConfigError, LockedElsewhere, ServiceUnavailable
from warmupd.http import create_app
from warmupd.jobs import build_jobs
from warmupd.jobs.ondemand import OnDemand
from warmupd.jobs.parts import Warmer
from warmupd.jobs.reads import ComparisonService
from warmupd.jobs.runner import JobRunner, Progress
from warmupd.jobs.service import JobsService, render_run
from warmupd.locks import Locks
from warmupd.locks.fallback import FallbackLocks
from warmupd.locks.redis import RedisLocks
from warmupd.locks.sqlite import SqliteLocks
from warmupd.logs import configure_logging, register_secret
from warmupd.metrics import Metrics, loop_lag_monitor
from warmupd.models import Trigger
from warmupd.pool import ProcessPool
from warmupd.producers import InsightsProducer
from warmupd.producers.insights_builtin import BuiltinInsights
from warmupd.producers.insights_openai import OpenAIInsights
from warmupd.runs import NodeStore, RunStore, make_node_id, recover_abandoned
from warmupd.scheduler import JobSchedule
from warmupd.scheduler_loop import Scheduler
from warmupd.status import LockState, StatusService
from warmupd.store import CacheStore, ComparisonStore, ScheduleStore, WarmupStore
from warmupd.systemd import SystemdNotifier, watchdog_loop

log = logging.getLogger("warmupd.daemon")

HEARTBEAT_S = 10.0
SWITCH_INTERVAL_S = 0.001
"""The GIL switch interval ``serve`` sets (see :func:`serve`)."""


class ShutdownState(enum.Enum):
    """The daemon's lifecycle states; each transition is logged."""

    RUNNING = "running"
    DRAINING = "draining"
    CANCELLING = "cancelling"
    STOPPED = "stopped"


class ConfigHolder:
    """The configuration in force; SIGHUP replaces it only with a valid one."""

    def __init__(self, config: Config, path: str | None) -> None:
        self.current = config
        self.path = path

    def __call__(self) -> Config:
        return self.current

    def reload(self) -> Config | None:
        """Re-read the file; returns the new config, or None (old kept) when it is invalid."""
        try:
            new = load_config(self.path)
        except ConfigError as exc:
            log.error("config.reload_rejected error=%s", exc)  # noqa: TRY400 - the message is the whole story
            return None
        self.current = new
        return new


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
            concurrency=ai.concurrency,
            facts_runner=facts_runner,
        )
    return BuiltinInsights(prompt_version=ai.prompt_version, facts_runner=facts_runner)


@dataclass
class Core:
    """Everything but the HTTP edge and the scheduler: what ``serve`` and ``run`` share."""

    config: ConfigHolder
    clock: Clock
    node: str
    db: Database
    metrics: Metrics
    locks: Locks
    sqlite_locks: SqliteLocks
    fallback: FallbackLocks | None
    pool: ProcessPool
    runs: RunStore
    nodes: NodeStore
    cache: CacheStore
    comparisons: ComparisonStore
    warmups: WarmupStore
    warmer: Warmer
    runner: JobRunner
    on_demand: OnDemand
    background: list[asyncio.Task[Any]] = field(default_factory=list)

    def lock_state(self) -> LockState:
        """Where locks go now and whether Redis answers."""
        if self.fallback is None:
            return LockState(backend="sqlite", redis="unconfigured", usable=True)
        up = self.fallback.redis_up
        return LockState(
            backend=self.fallback.backend,
            redis="up" if up else "down",
            usable=up or self.fallback.policy == "sqlite",
        )


async def build_core(
    stack: AsyncExitStack,
    holder: ConfigHolder,
    *,
    clock: Clock,
    node: str,
    metrics: Metrics,
    on_progress: Progress | None = None,
) -> Core:
    """Open the DB, recover abandoned runs, pick the lock backend and wire the jobs layer."""
    cfg = holder()
    db = await stack.enter_async_context(Database(cfg.daemon.db_path))
    nodes, runs = NodeStore(db), RunStore(db)
    await nodes.heartbeat(node, clock.wall_ms())
    stack.push_async_callback(nodes.remove, node)
    abandoned = await recover_abandoned(
        runs, nodes, self_node=node, now_ms=clock.wall_ms(), stale_after_ms=3 * cfg.locks.lease_ms
    )
    if abandoned:
        log.warning("runs.abandoned count=%d ids=%s", len(abandoned), abandoned)

    def observe(backend: str, result: str) -> None:
        metrics.lock_acquisitions.inc(backend=backend, result=result)

    sqlite_locks = SqliteLocks(db, clock, node)
    locks: Locks = sqlite_locks
    fallback = None
    if cfg.redis.url:
        redis_locks = RedisLocks(
            cfg.redis.url, cfg.redis.key_prefix, cfg.redis.connect_timeout_ms / 1000, clock, node
        )
        stack.push_async_callback(redis_locks.close)
        fallback = FallbackLocks(redis_locks, sqlite_locks, cfg.redis.on_unavailable)
        locks = fallback
        try:
            for warning in await redis_locks.check_server():
                log.warning("redis.check warning=%s", warning)
        except Exception as exc:  # noqa: BLE001 - Redis being down at start-up is not fatal
            log.warning("redis.unreachable error=%s", type(exc).__name__)
        metrics.redis_up.set(1 if await fallback.ping() else 0)
    locks.on_acquire = observe
    stack.push_async_callback(locks.close)

    pool = await stack.enter_async_context(
        ProcessPool(
            workers=cfg.daemon.pool_workers,
            idle_shutdown_s=cfg.daemon.pool_idle_shutdown_ms / 1000,
            clock=clock,
        )
    )
    insights = make_insights(cfg, pool)
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
        purge_locks=sqlite_locks.purge_expired,
    )
    for name in [*jobs, "warmup-on-demand"]:
        metrics.declare_job(name)
    for name in jobs:
        last = await runs.last_success_ms(name)
        if last is not None:
            # After a restart the alert on an overdue job must still see the real last success.
            metrics.job_last_success.set(last / 1000, job_name=name)
    runner = JobRunner(
        jobs=jobs,
        config=holder,
        locks=locks,
        runs=runs,
        clock=clock,
        node=node,
        metrics=metrics,
        on_progress=on_progress,
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
        counts = await cache.counts(clock.wall_ms())
        metrics.cache_entries.replace({key: float(n) for key, n in counts.items()})

    metrics.add_scrape_hook(scrape_cache)
    return Core(
        config=holder,
        clock=clock,
        node=node,
        db=db,
        metrics=metrics,
        locks=locks,
        sqlite_locks=sqlite_locks,
        fallback=fallback,
        pool=pool,
        runs=runs,
        nodes=nodes,
        cache=cache,
        comparisons=comparisons,
        warmups=warmups,
        warmer=warmer,
        runner=runner,
        on_demand=on_demand,
    )


class Daemon:
    """``warmupd serve``."""

    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        self.holder = ConfigHolder(config, config.source)
        self.clock = clock or SystemClock()
        self.node = make_node_id(secrets.token_hex(3))
        self.metrics = Metrics()
        self.notifier = SystemdNotifier()
        self.state = ShutdownState.RUNNING
        self._stop = asyncio.Event()
        self.scheduler: Scheduler | None = None

    def _transition(self, state: ShutdownState) -> None:
        log.info("daemon.state from=%s to=%s", self.state.value, state.value)
        self.state = state

    def request_stop(self) -> None:
        """SIGTERM/SIGINT."""
        self._stop.set()

    def reload(self) -> None:
        """SIGHUP: re-read the config; apply schedules and limits; keep the old one if invalid."""
        self.notifier.reloading()
        new = self.holder.reload()
        if new is not None:
            for value in (new.secrets.job, new.secrets.warmup):
                if value:
                    register_secret(value)
            if self.scheduler is not None:
                self.scheduler.reload(schedules_of(new))
            log.info("config.reloaded source=%s", new.source)
        self.notifier.ready()
        self.notifier.status(self._status_line())

    def _status_line(self) -> str:
        if self.scheduler is None:
            return "starting"
        upcoming = [
            (ms, job)
            for job in self.scheduler.jobs
            if (ms := self.scheduler.next_run_ms(job)) is not None
        ]
        if not upcoming:
            return "idle; nothing scheduled"
        ms, job = min(upcoming)
        from warmupd.clock import ms_to_iso

        return f"idle; next {job} {ms_to_iso(ms)}"

    async def run(self) -> int:
        """Run until stopped; returns the exit code."""
        cfg = self.holder()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        for value in (cfg.secrets.job, cfg.secrets.warmup):
            if value:
                register_secret(value)
        for name, value in (("job", cfg.secrets.job), ("warmup", cfg.secrets.warmup)):
            if not value:
                log.warning("secret.unset secret=%s endpoints=503", name)
            elif len(value) < 16:
                log.warning("secret.short secret=%s length_lt=16", name)
        try:
            async with AsyncExitStack() as stack:
                core = await build_core(
                    stack, self.holder, clock=self.clock, node=self.node, metrics=self.metrics
                )
                await self._serve(stack, core)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
            self._transition(ShutdownState.STOPPED)
        return 0

    async def _serve(self, stack: AsyncExitStack, core: Core) -> None:
        cfg = self.holder()
        holder = self.holder
        scheduler = Scheduler(
            schedules_of(cfg),
            state=ScheduleStore(core.db),
            claimer=core.locks,
            clock=self.clock,
            on_fire=core.runner.on_fire,
            on_misfire=core.runner.on_misfire,
            on_lateness=lambda job, s: self.metrics.scheduler_lateness.observe(s, job_name=job),
        )
        self.scheduler = scheduler
        status = StatusService(
            config=holder,
            db=core.db,
            runs=core.runs,
            cache=core.cache,
            runner=core.runner,
            on_demand=core.on_demand,
            scheduler=lambda: self.scheduler,
            lock_state=core.lock_state,
            node=self.node,
            clock=self.clock,
            started_ms=self.clock.wall_ms(),
        )
        jobs = JobsService(
            config=holder,
            runner=core.runner,
            runs=core.runs,
            clock=self.clock,
            scheduler=lambda: self.scheduler,
        )
        comparisons = ComparisonService(
            config=holder,
            comparisons=core.comparisons,
            warmups=core.warmups,
            warmer=core.warmer,
            on_demand=core.on_demand,
            clock=self.clock,
        )

        def next_runs() -> None:
            for job in scheduler.jobs:
                ms = scheduler.next_run_ms(job)
                if ms is not None:
                    self.metrics.scheduler_next_run.set(ms / 1000, job_name=job)

        self.metrics.add_scrape_hook(next_runs)
        app = create_app(
            status,
            jobs=jobs,
            comparisons=comparisons,
            secrets=lambda: holder().secrets,
            read_auth=cfg.http.read_auth,
            max_body_bytes=cfg.http.max_body_bytes,
            metrics=self.metrics,
        )
        app_runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0, access_log=None)
        await app_runner.setup()
        stack.push_async_callback(app_runner.cleanup)
        site = web.TCPSite(app_runner, cfg.http.host, cfg.http.port)
        await site.start()

        tasks = [
            asyncio.create_task(scheduler.run(), name="scheduler"),
            asyncio.create_task(loop_lag_monitor(self.metrics, self.clock), name="loop-lag"),
            asyncio.create_task(self._heartbeat(core), name="heartbeat"),
        ]
        if core.fallback is not None:
            tasks.append(asyncio.create_task(self._probe_redis(core), name="redis-probe"))
        if self.notifier.watchdog_interval_s():
            tasks.append(
                asyncio.create_task(watchdog_loop(self.notifier, self.clock), name="watchdog")
            )
        log.info(
            "daemon.ready node=%s http=%s:%s locks=%s",
            self.node,
            cfg.http.host,
            cfg.http.port,
            core.lock_state().backend,
        )
        self.notifier.ready()
        self.notifier.status(self._status_line())

        await self._stop.wait()
        self._transition(ShutdownState.DRAINING)
        self.notifier.stopping()
        scheduler.stop()
        await site.stop()
        grace_s = self.holder().daemon.shutdown_grace_ms / 1000
        await asyncio.gather(core.runner.shutdown(grace_s), core.on_demand.shutdown(grace_s))
        self._transition(ShutdownState.CANCELLING)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _heartbeat(self, core: Core) -> None:
        while True:
            await self.clock.sleep(HEARTBEAT_S)
            try:
                await core.nodes.heartbeat(self.node, self.clock.wall_ms())
            except Exception as exc:  # noqa: BLE001 - a busy DB must not kill the heartbeat
                log.warning("heartbeat.failed error=%s", type(exc).__name__)

    async def _probe_redis(self, core: Core) -> None:
        assert core.fallback is not None
        # Probe at twice the connect timeout: an outage shows within seconds, a recovery too.
        interval_s = max(1.0, 2 * self.holder().redis.connect_timeout_ms / 1000)
        while True:
            await self.clock.sleep(interval_s)
            was = core.fallback.redis_up
            up = await core.fallback.ping()
            self.metrics.redis_up.set(1 if up else 0)
            if up != was:
                log.warning("redis.%s", "up" if up else "down")


async def run_once(
    config: Config,
    job: str,
    *,
    limit: int | None = None,
    concurrency: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """``warmupd run JOB``: one run in the foreground, no HTTP; returns the rendered run record.

    A refused run (held elsewhere, already running, lock backend down) returns its ``skipped`` record.
    """
    configure_logging("text", "warning")
    holder = ConfigHolder(config, config.source)
    clock = SystemClock()
    async with AsyncExitStack() as stack:
        core = await build_core(
            stack,
            holder,
            clock=clock,
            node=make_node_id(secrets.token_hex(3)),
            metrics=Metrics(),
            on_progress=progress,
        )
        try:
            handle = await core.runner.trigger(
                job, Trigger.CLI, limit=limit, concurrency=concurrency
            )
        except (AlreadyRunning, LockedElsewhere, ServiceUnavailable):
            (record,) = await core.runs.list_runs(job=job, limit=1)
        else:
            record = await handle.wait()
        return render_run(record)


async def serve(config: Config, *, log_format: str = "text", log_level: str = "info") -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the exit code."""
    configure_logging(log_format, log_level)
    # A watchdog abort (SIGABRT) then leaves the stuck stack in the journal.
    faulthandler.enable(file=sys.stderr)
    # Every SQLite statement is answered by aiosqlite's thread; with CPython's default 5 ms switch
    # interval the loop can wait that long for the GIL to come back (bench P5 saw the spikes). The
    # main process runs no CPU-bound threads (compute is in the process pool), so a shorter
    # interval costs nothing measurable and bounds that hand-off at 1 ms.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    return await Daemon(config).run()
