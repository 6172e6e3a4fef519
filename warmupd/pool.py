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
import functools
import importlib
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Any, TypeVar

from warmupd.clock import Clock, SystemClock
from warmupd.errors import ProducerError

T = TypeVar("T")

DEFAULT_PRELOAD: tuple[str, ...] = ("warmupd.producers.forecast:warm_up",)
"""``module:function`` hooks every worker runs at start: pay the statsmodels import once."""

# Native maths libraries start one thread per core in every worker; with N workers on N cores that
# is N² threads fighting over the CPUs. One thread per worker process is the right split.
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


WORKER_NICENESS = 10
"""How much lower the workers' scheduling priority is than the daemon's."""


def init_worker(preload: Sequence[str]) -> None:
    """Worker initializer: pin native thread pools to one thread, then run the preload hooks.

    Runs in the worker before anything imports numpy, which reads these variables once at import.

    :param preload: ``"module"`` (imported) or ``"module:function"`` (imported, then called).
    """
    for name in _THREAD_ENV:
        os.environ[name] = "1"
    # Forecasts are batch work; the daemon's event loop answers requests. When every core is busy
    # with a fit, a lower priority lets the loop get a core at once (bench P2: healthz p99 19 ms at
    # the same niceness, 7 ms with this), and it costs the jobs no throughput.
    os.nice(WORKER_NICENESS)
    for spec in preload:
        module_name, _, function_name = spec.partition(":")
        module = importlib.import_module(module_name)
        if function_name:
            getattr(module, function_name)()


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
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=self._context,
                initializer=init_worker,
                initargs=(self._preload,),
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
