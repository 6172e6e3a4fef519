"""The composition root: picks concrete classes, wires them, owns the lifecycle (SPEC §11).

Start-up: load config → open DB, migrate → mark orphaned runs abandoned → connect Redis (non-fatal)
→ start HTTP → start the scheduler (which runs due misfires) → ``READY=1``. A PostgreSQL that does
not answer yet is waited for, with ``/healthz`` served meanwhile (:mod:`warmupd.startup`). Every component is
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
import gc
import secrets
import signal
import sys
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import web

from warmupd.clock import Clock, SystemClock, ms_to_iso
from warmupd.config import Config
from warmupd.errors import AlreadyRunning, LockedElsewhere, ServiceUnavailable
from warmupd.heartbeat import interval_s as heartbeat_interval_s
from warmupd.http import create_app
from warmupd.jobs.reads import ComparisonService
from warmupd.jobs.runner import Progress
from warmupd.jobs.service import JobsService, render_run
from warmupd.logs import (
    capture_process_output,
    configure_logging,
    get_logger,
    journald_stream_matches,
    register_secret,
)
from warmupd.metrics import Metrics, loop_lag_monitor
from warmupd.models import Trigger
from warmupd.scheduler_loop import Scheduler
from warmupd.startup import open_database, probe_database, waiting_app
from warmupd.state.backends import state_database, watch_database
from warmupd.state.runs import make_node_id
from warmupd.state.store import ScheduleStore
from warmupd.status import StatusService
from warmupd.systemd import SystemdNotifier, journal_stream, watchdog_loop
from warmupd.ui.routes import add_ui
from warmupd.wiring import (
    POOL_JOBS,
    POOL_PREWARM_S,
    ConfigHolder,
    Core,
    build_core,
    new_health,
    prewarm_pool,
    schedules_of,
)

log = get_logger("warmupd.daemon")

SWITCH_INTERVAL_S = 0.001
"""The GIL switch interval ``serve`` sets (see :func:`serve`)."""


class ShutdownState(enum.Enum):
    """The daemon's lifecycle states; each transition is logged."""

    RUNNING = "running"
    DRAINING = "draining"
    CANCELLING = "cancelling"
    STOPPED = "stopped"


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
        self.core: Core | None = None
        self.health = new_health(config, self.metrics)
        self._waiting_for_database = False
        self._waiting: web.AppRunner | None = None

    def _transition(self, state: ShutdownState) -> None:
        log.info("daemon.state", previous=self.state.value, state=state.value)
        self.state = state

    def request_stop(self) -> None:
        """SIGTERM/SIGINT."""
        self._stop.set()

    def reload(self) -> None:
        """SIGHUP: re-read the config and apply it; keep the old one if invalid.

        Applies every setting that can change without a restart (:mod:`warmupd.reload`); a
        changed restart-only key is logged and listed in ``/api/status``.
        """
        if self._waiting_for_database:
            # Still waiting for the database: no RELOADING=1/READY=1 before the first READY=1.
            self.holder.reload()
            return
        self.notifier.reloading()
        old = self.holder()
        new = self.holder.reload()
        if new is not None:
            for value in (new.secrets.job, new.secrets.warmup):
                if value:
                    register_secret(value)
            if self.scheduler is not None:
                self.scheduler.reload(schedules_of(new))
            if self.core is not None:
                self.core.apply(old, new)
            log.info(
                "config.reloaded",
                source=new.source,
                restart_required=",".join(self.holder.restart_required) or None,
            )
        self.notifier.ready(self._status_line(self.core))

    def _status_line(self, core: Core | None = None) -> str:
        """systemd's STATUS=: what runs now and what fires next."""
        running = (
            [j for j in core.runner.job_names() if core.runner.running_run_id(j)] if core else []
        )
        head = f"running {', '.join(running)}" if running else "idle"
        health = core.health if core is not None else self.health
        if not health.database_up:
            head = f"degraded, {head}; database down: {health.database_error}"
        if self.scheduler is None:
            return head
        upcoming = [
            (ms, job)
            for job in self.scheduler.jobs
            if (ms := self.scheduler.next_run_ms(job)) is not None
        ]
        if not upcoming:
            return f"{head}; nothing scheduled"
        ms, job = min(upcoming)
        return f"{head}; next {job} {ms_to_iso(ms)}"

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
                log.warning("secret.unset", secret=name, effect="its endpoints answer 503")
            elif len(value) < 16:
                log.warning("secret.short", secret=name, min_length=16)
        try:
            async with AsyncExitStack() as stack:
                db = state_database(cfg.database, cfg.daemon.db_path)
                if cfg.database.is_postgres:
                    # SPEC §14: keep trying while serving /healthz; READY=1 only once open.
                    watch_database(db, self.health.observe_database)
                    stack.push_async_callback(self._stop_waiting)
                    self._waiting_for_database = True
                    opened = await open_database(
                        db, health=self.health, clock=self.clock, stop=self._stop,
                        on_waiting=self._wait_for_database,
                    )  # fmt: skip
                    self._waiting_for_database = False
                    if not opened:
                        self.notifier.stopping()
                        return 0
                else:
                    await db.open()
                core = await build_core(
                    stack,
                    self.holder,
                    clock=self.clock,
                    node=self.node,
                    metrics=self.metrics,
                    db=db,
                    health=self.health,
                )
                await self._serve(stack, core)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
            self._transition(ShutdownState.STOPPED)
        return 0

    async def _wait_for_database(self, reason: str, retry_s: float) -> None:
        """Between attempts: serve the waiting endpoints, and say in ``STATUS=`` what we wait for."""
        if self._waiting is None:
            cfg = self.holder()
            runner = web.AppRunner(
                waiting_app(self.health, self.metrics), handle_signals=False, access_log=None
            )
            await runner.setup()
            self._waiting = runner
            await web.TCPSite(runner, cfg.http.host, cfg.http.port).start()
        # Until the next attempt has had its connect timeout, plus a margin: a daemon that keeps
        # trying is never killed for a slow start, one that hangs is.
        extend_s = retry_s + self.holder().database.connect_timeout_ms / 1000 + 30
        status = f"waiting for the state database: {reason}; retry in {retry_s:g}s"
        self.notifier.waiting(status, extend_s)

    async def _stop_waiting(self) -> None:
        if self._waiting is not None:
            runner, self._waiting = self._waiting, None
            await runner.cleanup()

    def assemble(self, core: Core) -> web.Application:
        """Build the scheduler and the HTTP application on top of ``core`` (nothing starts yet).

        ``serve`` binds the application and runs the scheduler; tests drive the same application
        through aiohttp's test client, with :meth:`reload` as SIGHUP would call it.
        """
        holder = self.holder
        self.core = core
        scheduler = Scheduler(
            schedules_of(holder()),
            state=ScheduleStore(core.db),
            claimer=core.locks,
            clock=self.clock,
            on_fire=core.runner.on_fire,
            on_misfire=core.runner.on_misfire,
            on_lateness=lambda job, s: self.metrics.scheduler_lateness.observe(s, job_name=job),
        )
        self.scheduler = scheduler
        jobs = JobsService(
            config=holder,
            runner=core.runner,
            runs=core.runs,
            clock=self.clock,
            scheduler=lambda: self.scheduler,
            pauses=core.pauses,
            node=self.node,
        )
        status = StatusService(
            db=core.db,
            runs=core.runs,
            cache=core.cache,
            job_list=jobs,
            on_demand=core.on_demand,
            scheduler=lambda: self.scheduler,
            lock_state=core.lock_state,
            restart_required=lambda: holder.restart_required,
            node=self.node,
            clock=self.clock,
            started_ms=self.clock.wall_ms(),
            nodes=core.nodes,
            node_stale_ms=core.heartbeat.stale_ms,
            heartbeat=core.heartbeat,
            health=core.health,
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
            read_auth=lambda: holder().http.read_auth,
            max_body_bytes=lambda: holder().http.max_body_bytes,
            metrics=self.metrics,
        )
        add_ui(app, clock=self.clock)
        return app

    async def _serve(self, stack: AsyncExitStack, core: Core) -> None:
        cfg = self.holder()
        app = self.assemble(core)
        scheduler = self.scheduler
        assert scheduler is not None
        app_runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0, access_log=None)
        await app_runner.setup()
        stack.push_async_callback(app_runner.cleanup)
        site = web.TCPSite(app_runner, cfg.http.host, cfg.http.port)
        await self._stop_waiting()  # hand the port over (a gap of one close and one bind)
        await site.start()

        # SPEC §11: the scheduler starts (loads its state, computes next fires, runs due misfires)
        # before READY=1, so the first STATUS= already names the next fire instead of
        # "nothing scheduled" until the first heartbeat.
        await scheduler.start_up(self.clock.wall_ms())
        tasks = [
            asyncio.create_task(scheduler.run(), name="scheduler"),
            asyncio.create_task(loop_lag_monitor(self.metrics, self.clock), name="loop-lag"),
            asyncio.create_task(self._heartbeat(core), name="heartbeat"),
        ]

        def next_pool_run() -> int | None:
            runs = [scheduler.next_run_ms(job) for job in POOL_JOBS if job in scheduler.jobs]
            return min((ms for ms in runs if ms is not None), default=None)

        tasks.append(
            asyncio.create_task(
                prewarm_pool(core.pool, next_pool_run, self.clock, lead_s=POOL_PREWARM_S),
                name="pool-prewarm",
            )
        )
        if core.redis_locks is not None:
            tasks.append(asyncio.create_task(self._probe_redis(core), name="redis-probe"))
        if cfg.database.is_postgres:
            probe = probe_database(core.db, core.health, self.clock)
            tasks.append(asyncio.create_task(probe, name="database-probe"))
        if self.notifier.watchdog_interval_s():
            tasks.append(
                asyncio.create_task(watchdog_loop(self.notifier, self.clock), name="watchdog")
            )
        log.info(
            "daemon.ready",
            node=self.node,
            http=f"{cfg.http.host}:{cfg.http.port}",
            locks=core.lock_state().backend,
        )
        self.notifier.ready(self._status_line(core))
        if cfg.database.is_postgres:
            # STATUS= follows the database at once (not at the next heartbeat) once ready.
            core.health.subscribe_database(lambda _: self.notifier.status(self._status_line(core)))

        await self._stop.wait()
        self._transition(ShutdownState.DRAINING)
        self.notifier.stopping()
        scheduler.stop()
        # Let the loop leave by itself: on its way out it gives back fires it claimed ahead.
        await asyncio.wait({tasks[0]}, timeout=5)
        await site.stop()
        grace_s = self.holder().daemon.shutdown_grace_ms / 1000
        await asyncio.gather(core.runner.shutdown(grace_s), core.on_demand.shutdown(grace_s))
        self._transition(ShutdownState.CANCELLING)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _heartbeat(self, core: Core) -> None:
        while True:
            await self.clock.sleep(heartbeat_interval_s(self.holder().locks.lease_ms))
            self.notifier.status(self._status_line(core))
            try:
                # Proves this node alive, measures its clock skew, and marks the runs of nodes
                # that stopped beating abandoned (SPEC §14: at every heartbeat).
                await core.heartbeat.beat()
            except Exception as exc:  # noqa: BLE001 - a busy DB must not kill the heartbeat
                log.warning("heartbeat.failed", error=type(exc).__name__)

    async def _probe_redis(self, core: Core) -> None:
        # Probe at twice the connect timeout: an outage shows within seconds, a recovery too.
        interval_s = max(1.0, 2 * self.holder().redis.connect_timeout_ms / 1000)
        while True:
            await self.clock.sleep(interval_s)
            # The ping reports to the health state (and so to status, readyz and the metric); it
            # catches a change no lock call has noticed yet, e.g. Redis back while nothing runs.
            if core.fallback is not None:
                await core.fallback.ping()
            elif core.redis_locks is not None:
                core.health.observe_redis(await core.redis_locks.ping())


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
    capture_process_output()
    # A watchdog abort (SIGABRT) then leaves the stuck stack in the journal. faulthandler writes raw
    # lines from the signal handler; under journald they go to a stream of their own at priority
    # crit, so `journalctl -p warning` shows the dump rather than unprefixed info lines.
    crash_stream = journal_stream("warmupd", 2) if journald_stream_matches() else None
    faulthandler.enable(file=crash_stream if crash_stream is not None else sys.stderr)
    # Every SQLite statement is answered by aiosqlite's thread; with CPython's default 5 ms switch
    # interval the loop can wait that long for the GIL to come back (bench P5 saw the spikes). The
    # main process runs no CPU-bound threads (compute is in the process pool), so a shorter
    # interval costs nothing measurable and bounds that hand-off at 1 ms.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # Everything imported so far lives as long as the process: keep the cyclic collector from
    # walking it again on every collection (a request's garbage is young and mostly acyclic).
    gc.freeze()
    return await Daemon(config).run()
