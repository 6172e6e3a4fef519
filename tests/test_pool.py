"""The process pool: real worker processes, lazy start, idle shutdown, crash recovery, loop lag."""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import time
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from warmupd.errors import ProducerError
from warmupd.pool import WORKER_NICENESS, ProcessPool
from warmupd.producers.forecast import forecast_term

# --- worker-side functions (module level, so that they pickle by reference) ---------------------


def worker_pid() -> int:
    return os.getpid()


def niceness() -> int:
    return os.nice(0)


def thread_env() -> str | None:
    return os.environ.get("OMP_NUM_THREADS")


def add(a: int, b: int, *, times: int = 1) -> int:
    return (a + b) * times


def fail(message: str) -> None:
    raise ValueError(message)


def die() -> None:
    os._exit(3)


def wait_for_file(path: str) -> str:
    # A worker task that stays in flight until the test releases it; polling is the worker's
    # business and keeps the test itself free of sleeps.
    while not os.path.exists(path):
        time.sleep(0.005)
    return "released"


class FakeClock:
    """A settable clock: monotonic time moves only when the test (or sleep) advances it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def wall_ms(self) -> int:
        return int(self.now * 1000)

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def pool(clock: FakeClock) -> AsyncIterator[ProcessPool]:
    # No statsmodels preload: these tests are about process mechanics and must start fast.
    p = ProcessPool(workers=1, idle_shutdown_s=300, clock=clock, preload=())
    yield p
    await p.close()


async def test_runs_in_another_process_and_starts_lazily(pool: ProcessPool) -> None:
    assert not pool.is_running()
    assert pool.started == 0
    pid = await pool.run(worker_pid)
    assert pid != os.getpid()
    assert pool.is_running()
    assert await pool.run(worker_pid) == pid  # the same long-lived worker
    assert await pool.run(add, 2, 3, times=4) == 20
    assert await pool.run(thread_env) == "1"
    assert await pool.run(niceness) == os.nice(0) + WORKER_NICENESS  # batch work yields the CPU
    assert pool.started == 1


async def test_start_spawns_the_workers_before_any_task_and_restarts_the_idle_countdown(
    pool: ProcessPool, clock: FakeClock
) -> None:
    clock.now += 10_000  # long after the pool was built: start() must not look idle at once
    pool.start()
    assert pool.is_running()
    assert pool.started == 1
    # The worker exists before anything was asked of the pool (a spawn executor starts its workers
    # at the first submit; start() made that submit itself).
    spawned = {p.pid for p in multiprocessing.active_children()}
    assert spawned
    while pool.in_flight():  # the start-up no-op, until the worker has booted and run it
        await asyncio.sleep(0.01)
    clock.now += 299
    assert not await pool.maybe_shutdown_idle()
    pool.start()  # already running: nothing new
    assert pool.started == 1
    assert await pool.run(worker_pid) in spawned


async def test_exceptions_from_the_function_propagate_unchanged(pool: ProcessPool) -> None:
    with pytest.raises(ValueError, match="boom"):
        await pool.run(fail, "boom")
    assert await pool.run(add, 1, 1) == 2


async def test_idle_shutdown_follows_the_clock_and_restarts_on_demand(
    pool: ProcessPool, clock: FakeClock
) -> None:
    assert not await pool.maybe_shutdown_idle()  # nothing to shut down
    first = await pool.run(worker_pid)
    clock.now += 299
    assert not await pool.maybe_shutdown_idle()
    assert pool.is_running()
    clock.now += 1
    assert await pool.maybe_shutdown_idle()
    assert not pool.is_running()
    second = await pool.run(worker_pid)
    assert second != first
    assert pool.started == 2


async def test_a_task_in_flight_keeps_the_pool_alive(
    pool: ProcessPool, clock: FakeClock, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    task = asyncio.create_task(pool.run(wait_for_file, str(release)))
    while pool.in_flight() == 0:
        await asyncio.sleep(0)
    clock.now += 10_000
    assert not await pool.maybe_shutdown_idle()
    release.touch()
    assert await task == "released"
    assert pool.in_flight() == 0
    assert not await pool.maybe_shutdown_idle()  # idle time counts from the last completion
    clock.now += 300
    assert await pool.maybe_shutdown_idle()


async def test_a_dead_worker_fails_the_call_and_the_next_call_works(pool: ProcessPool) -> None:
    before = await pool.run(worker_pid)
    with pytest.raises(ProducerError, match="died"):
        await pool.run(die)
    assert not pool.is_running()
    after = await pool.run(worker_pid)
    assert after != before
    assert pool.started == 2


async def test_context_manager_reaps_idle_workers_and_closes(clock: FakeClock) -> None:
    async with ProcessPool(workers=1, idle_shutdown_s=40, clock=clock, preload=()) as pool:
        await pool.run(worker_pid)
        # The reaper sleeps on the fake clock (a quarter of the idle time per check), so it
        # reaches the idle limit after a handful of loop turns.
        for _ in range(1000):
            if not pool.is_running():
                break
            await asyncio.sleep(0)
        assert not pool.is_running()
        assert clock.sleeps[:2] == [10.0, 10.0]
        # Used again after the reap: a fresh executor. (The free-running fake clock may well
        # reap it again at once, so only the restart is asserted.)
        assert isinstance(await pool.run(worker_pid), int)
        assert pool.started == 2
    assert not pool.is_running()


def test_workers_zero_means_one_per_cpu() -> None:
    assert ProcessPool(workers=0, idle_shutdown_s=1).workers == (os.cpu_count() or 1)
    with pytest.raises(ValueError, match="workers"):
        ProcessPool(workers=-1, idle_shutdown_s=1)


async def test_forecasts_in_the_pool_do_not_block_the_event_loop() -> None:
    start = date(2024, 1, 1)
    n = 365
    dates = [(start + timedelta(days=i)).isoformat() for i in range(n)]
    values = [50 + 20 * math.sin(i / 9) + 5 * math.sin(i * 2 * math.pi / 7) for i in range(n)]
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    # The real worker set-up: statsmodels is imported (2–3 s) in the workers, not here.
    async with ProcessPool(workers=2, idle_shutdown_s=300) as pool:
        tick = asyncio.create_task(ticker())
        kwargs: dict[str, Any] = {
            "dates": dates,
            "term": "termA",
            "horizon_days": 30,
            "min_points": 7,
            "generated_at_ms": 0,
            "source_updated_ms": None,
        }
        results = await asyncio.gather(
            *(pool.run(forecast_term, values=[v + k for v in values], **kwargs) for k in range(6))
        )
        done.set()
        await tick
    assert all(r["model"].startswith("ets(A,Ad,A7)") for r in results)  # really fitted ETS
    assert len(gaps) > 20
    # 5 ms ticks; a generous bound for a noisy 2-core machine. Blocking fits on the loop would
    # show gaps of hundreds of milliseconds (and the statsmodels import alone takes seconds).
    assert max(gaps) < 0.1, f"max loop gap {max(gaps) * 1000:.0f} ms"


def process_exists(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is dead: it only waits to be reaped).

    Not ``Process.is_alive()``: ``close()`` and the executor's manager thread both reap the workers,
    and a reap by one thread makes the other's ``waitpid`` fail with ECHILD until it records the
    exit code, which ``is_alive()`` reads as "still running".
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_close_ends_workers_without_waiting_for_work_in_progress(clock: FakeClock) -> None:
    pool = ProcessPool(workers=1, idle_shutdown_s=60, clock=clock, preload=())
    assert await pool.run(os.getpid) != os.getpid()
    executor = pool._executor
    assert executor is not None
    workers = list(executor._processes.values())  # type: ignore[attr-defined]
    stuck = asyncio.ensure_future(pool.run(time.sleep, 600))  # a task no one will wait for
    while not pool.in_flight():
        await asyncio.sleep(0.01)
    await pool.close()
    assert workers
    assert not any(process_exists(w.pid) for w in workers)
    with pytest.raises((ProducerError, asyncio.CancelledError)):
        await stuck
    assert not pool.is_running()
