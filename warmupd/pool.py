"""A lazy process pool with idle shutdown, for CPU-heavy work off the event loop (SPEC §1).

The executor is created on first use and shut down once no task has been in flight for
``idle_shutdown_s``, so an idle daemon drops back to its small footprint (SPEC P6): every worker
holds numpy, pandas and statsmodels (~160 MB each). A worker that dies (OOM killer, segfault in a
native library) breaks the whole ``ProcessPoolExecutor``; the calls it broke fail with
:class:`~warmupd.errors.ProducerError` and the next call builds a fresh executor.

Workers are started with the ``spawn`` method by default. ``fork`` from a process that runs threads
(aiosqlite, the executor's own manager thread) can deadlock the child. ``forkserver`` would also be
safe, but its server process outlives every executor and would keep whatever it preloaded resident
for the daemon's lifetime, which defeats the idle shutdown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import functools
import gc
import importlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import resource_tracker
from multiprocessing import util as mp_util
from types import TracebackType
from typing import Any, TypeVar

from warmupd.clock import Clock, SystemClock
from warmupd.errors import ProducerError
from warmupd.logs import (
    capture_process_output,
    configure_logging,
    get_logger,
    journald_stream_matches,
    logging_settings,
)
from warmupd.systemd import journal_stream

T = TypeVar("T")

log = get_logger("warmupd.pool")

DEFAULT_PRELOAD: tuple[str, ...] = ("warmupd.producers.forecast:warm_up",)
"""``module:function`` hooks every worker runs at start: pay the statsmodels import once."""

# Native maths libraries start one thread per core in every worker; with N workers on N cores that
# is N² threads fighting over the CPUs. One thread per worker process is the right split.
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


WORKER_NICENESS = 10
"""How much lower the workers' scheduling priority is than the daemon's."""

PARENT_POLL_S = 0.5
"""How often a worker's parent watch checks that the daemon still lives (see :func:`watch_parent`)."""

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def init_worker(
    preload: Sequence[str],
    log_settings: tuple[str, str] = ("text", "info"),
    parent_pid: int | None = None,
) -> None:
    """Worker initializer: one-line logging, die with the daemon, pin native thread pools, lower
    the priority (best-effort), then run the preload hooks.

    Runs in the worker before anything imports numpy, which reads the thread variables once at
    import.

    :param preload: ``"module"`` (imported) or ``"module:function"`` (imported, then called).
    :param log_settings: the daemon's ``(format, level)`` (:func:`~warmupd.logs.logging_settings`).
    :param parent_pid: the daemon's pid; the worker ends when that process is gone.
    """
    # First, so that everything after it — a failing preload hook, a statsmodels warning, an
    # uncaught exception — reaches the journal as one record with its priority, never as raw
    # multi-line stderr (the worker writes to the daemon's stderr, i.e. the journal stream).
    configure_logging(*log_settings)
    capture_process_output()
    if parent_pid is not None:
        watch_parent(parent_pid)
    for name in _THREAD_ENV:
        os.environ[name] = "1"
    lower_priority(WORKER_NICENESS)
    for spec in preload:
        module_name, _, function_name = spec.partition(":")
        module = importlib.import_module(module_name)
        if function_name:
            getattr(module, function_name)()


def lower_priority(niceness: int) -> bool:
    """Raise this process's niceness by ``niceness``; a refusal is logged, never fatal.

    Forecasts are batch work; the daemon's event loop answers requests. When every core is busy
    with a fit, a lower priority lets the loop get a core at once (bench P2: healthz p99 19 ms at
    the same niceness, 7 ms with this), and it costs the jobs no throughput. A sandbox may forbid
    ``setpriority`` (systemd's ``@resources`` set does; the shipped unit allows it back): then the
    worker computes at the daemon's priority rather than not at all.

    :returns: whether the priority was lowered.
    """
    try:
        os.nice(niceness)
    except OSError as exc:
        log.debug("pool.priority_unchanged", niceness=niceness, error=exc.strerror or str(exc))
        return False
    return True


def watch_parent(parent_pid: int) -> None:
    """End this worker as soon as the process ``parent_pid`` is gone, however it died (SPEC §17).

    Two mechanisms, because each has a gap. ``PR_SET_PDEATHSIG`` delivers SIGKILL at once, but it
    fires when the *thread* that spawned us exits — ``ProcessPoolExecutor.submit`` spawns on the
    calling thread, the event loop's, which lives as long as the daemon (its manager thread spawns
    only with ``max_tasks_per_child``, unused here) — and a sandbox may refuse ``prctl``. A daemon
    thread that polls ``getppid()`` every :data:`PARENT_POLL_S` catches everything else.
    Comparing with the pid passed in (not our ``getppid()`` at start) also covers a parent that
    died before this ran.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)

    def poll() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        # The daemon is gone: nobody waits for our results, and exiting normally could block on
        # the executor's queues. _exit skips both.
        os._exit(1)

    threading.Thread(target=poll, name="parent-watch", daemon=True).start()


class ProcessPool:
    """Runs picklable module-level functions in worker processes, started lazily.

    :param workers: number of worker processes; 0 means ``os.cpu_count()``.
    :param idle_shutdown_s: shut the workers down after this long with nothing in flight.
    :param clock: time source for the idle check (a fake clock in tests).
    :param preload: hooks each worker runs at start (see :func:`init_worker`).
    :param start_method: ``"spawn"`` (default) or ``"forkserver"``.
    """

    def __init__(
        self,
        *,
        workers: int,
        idle_shutdown_s: float,
        clock: Clock | None = None,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        start_method: str = "spawn",
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.workers = workers or os.cpu_count() or 1
        self.idle_shutdown_s = idle_shutdown_s
        self._clock: Clock = clock or SystemClock()
        self._preload = tuple(preload)
        self._context = multiprocessing.get_context(start_method)
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        # Futures submitted to the current executor and not finished yet. A caller that times out
        # leaves its task running in the worker (a running task cannot be cancelled), so "idle"
        # is judged on these, not on the callers.
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._last_active = self._clock.monotonic()
        self._reaper: asyncio.Task[None] | None = None
        self.started = 0
        """How many executors were created (each start pays the workers' imports)."""

    def is_running(self) -> bool:
        """Whether an executor (and possibly its worker processes) exists right now."""
        return self._executor is not None

    def in_flight(self) -> int:
        """Tasks submitted and not finished, including those whose caller gave up."""
        return len(self._pending)

    def _ensure_executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._executor is None:
            start_resource_tracker()
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=self._context,
                initializer=init_worker,
                initargs=(self._preload, logging_settings(), os.getpid()),
            )
            self.started += 1
        return self._executor

    def start(self) -> None:
        """Start the worker processes now, without waiting for them; a no-op while they run.

        A run that will need the pool calls this as it starts (and the daemon just before a
        scheduled fire), so the workers import statsmodels while the run takes its lock and selects
        its items, instead of making the first items wait for the spawn (SPEC §17). The idle
        countdown restarts here, so a pool started ahead of work is not reaped before it gets any.
        """
        if self._executor is not None:
            return
        executor = self._ensure_executor()
        # A spawn-context executor starts all its workers at the first submit; a no-op task is the
        # public way to make it do so. It is tracked like any task, so the reaper waits for it.
        future = executor.submit(os.getpid)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        self._last_active = self._clock.monotonic()

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in a worker and return its result.

        ``fn``, its arguments and its result must be picklable (a module-level function).
        Exceptions raised by ``fn`` propagate unchanged.

        :raises ProducerError: when a worker process died while this call was pending or running.
        """
        executor = self._ensure_executor()
        try:
            future = executor.submit(functools.partial(fn, *args, **kwargs))
        except BrokenProcessPool as exc:
            self._discard(executor)
            raise ProducerError("process pool is broken; it is rebuilt on the next call") from exc
        self._pending.add(future)
        # The done callback runs on the executor's manager thread; set.discard is atomic.
        future.add_done_callback(self._pending.discard)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool as exc:
            self._discard(executor)
            raise ProducerError(
                "a pool worker process died while computing this item; the pool is rebuilt"
            ) from exc
        finally:
            self._last_active = self._clock.monotonic()

    def _discard(self, executor: concurrent.futures.ProcessPoolExecutor) -> None:
        # Only forget the executor that actually broke: several callers see the same breakage,
        # and a later one must not throw away a fresh executor built in between.
        if self._executor is executor:
            self._executor = None
            self._pending.clear()
        # A broken executor has already reaped its workers; this only joins its manager thread
        # and does not wait for tasks.
        executor.shutdown(wait=False, cancel_futures=True)

    async def maybe_shutdown_idle(self) -> bool:
        """One step of the idle check: shut the workers down if idle for ``idle_shutdown_s``.

        :returns: whether this step shut an executor down.
        """
        if self._executor is None or self._pending:
            return False
        if self._clock.monotonic() - self._last_active < self.idle_shutdown_s:
            return False
        await self._shutdown()
        return True

    async def _shutdown(self) -> None:
        executor, self._executor = self._executor, None
        self._pending = set()
        if executor is not None:
            # Joining worker processes blocks; do it on a thread so the loop keeps serving. A call
            # arriving meanwhile builds a new executor instead of using the closing one.
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    async def reap_idle(self) -> None:
        """Loop forever: check for idleness every quarter of ``idle_shutdown_s`` (at most 30 s)."""
        interval = min(30.0, max(0.05, self.idle_shutdown_s / 4))
        while True:
            await self._clock.sleep(interval)
            await self.maybe_shutdown_idle()

    async def __aenter__(self) -> ProcessPool:
        """Start the idle reaper task; the executor itself still starts on first use."""
        self._reaper = asyncio.create_task(self.reap_idle(), name="process-pool-reaper")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the reaper and shut the workers down (see :meth:`close`)."""
        await self.close()

    async def close(self) -> None:
        """Stop the reaper, cancel queued tasks and end the worker processes.

        Unlike the idle shutdown, this does not wait for work in progress: it runs when the daemon
        stops, after every run was finished or cancelled, so anything still in a worker (or a worker
        still importing statsmodels at start) has no one waiting for it. The workers get SIGTERM, so
        a stop within ``shutdown_grace`` is not held up by a 2–3 s worker start.
        """
        if self._reaper is not None:
            self._reaper.cancel()
            # gather() absorbs the reaper's own CancelledError but still propagates a
            # cancellation of the task that is closing the pool.
            await asyncio.gather(self._reaper, return_exceptions=True)
            self._reaper = None
        executor, self._executor = self._executor, None
        self._pending = set()
        if executor is None:
            return
        # ProcessPoolExecutor has no public way to end its workers before Python 3.14
        # (terminate_workers); its process table is the documented-by-source way to reach them.
        processes = list(getattr(executor, "_processes", {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        await asyncio.to_thread(_join_all, processes, 5.0)


def _join_all(processes: list[Any], timeout_s: float) -> None:
    """Join terminated workers (on a thread: joining blocks)."""
    for process in processes:
        process.join(timeout_s)


def start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker now, its stderr a journald stream when we have one.

    ``spawn`` starts the tracker with the first worker and gives it our stderr; what it prints (a
    leaked-semaphore warning, a traceback) would reach the journal as raw lines at priority info.
    Started here, with fd 2 briefly pointing at a stream of priority warning, each of its lines is
    a warning record. Our own records written in that instant keep their ``<N>`` prefix.
    """
    stream = journal_stream("warmupd-resource-tracker", 4) if journald_stream_matches() else None
    if stream is None:
        resource_tracker.ensure_running()
        return
    saved = os.dup(2)
    try:
        os.dup2(stream.fileno(), 2)
        resource_tracker.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        stream.close()


def stop_resource_tracker() -> None:
    """End multiprocessing's resource tracker process; call it last, when the process exits.

    It ignores SIGTERM and ends only when every holder of its pipe has exited, which races with
    systemd killing what is left in the cgroup once the main process is gone: at every stop after
    the pool had been used, systemd SIGKILLed it. Here the semaphores' own clean-ups run first
    (each unlinks its semaphore and tells the tracker), then our end of its pipe is closed and the
    tracker is waited for; it exits with nothing to clean up and nothing to print. Earlier — while
    an executor's queues may still exist — it would unlink semaphores in use, or a later clean-up
    would start a new tracker.

    When the daemon crashes, the tracker ends by itself once the workers, which die with the
    daemon (:func:`watch_parent`), are gone.
    """
    # A pool closed mid-run leaves its executor's manager thread winding down; it still holds the
    # queues and, collecting them, would unregister their semaphores while the tracker stops.
    for thread in threading.enumerate():
        if type(thread).__name__ == "_ExecutorManagerThread":  # no public name for the type
            thread.join(5.0)
    gc.collect()
    # The clean-ups multiprocessing itself would run at exit (exit priority 0: semaphores);
    # run now, they are done with, so none is left to restart the tracker afterwards.
    run_finalizers = getattr(mp_util, "_run_finalizers", None)
    if run_finalizers is not None:
        run_finalizers(0)
    tracker = getattr(resource_tracker, "_resource_tracker", None)
    # Only a tracker this process launched (_pid set); a child using its parent's has no pid.
    if tracker is not None and getattr(tracker, "_pid", None) is not None:
        stop = getattr(tracker, "_stop", None)
        if stop is not None:
            stop()
