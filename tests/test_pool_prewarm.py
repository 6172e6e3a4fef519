"""The daemon starts the process pool shortly before a fire of a job that computes in it (SPEC §17)."""

from __future__ import annotations

import asyncio

from tests.fakes import FakeClock
from warmupd.wiring import prewarm_pool


class RecordingPool:
    """Counts :meth:`start` calls and the wall time of each."""

    def __init__(self, clock: FakeClock, idle_shutdown_s: float = 300.0) -> None:
        self.clock = clock
        self.idle_shutdown_s = idle_shutdown_s
        self.starts: list[int] = []

    def start(self) -> None:
        self.starts.append(self.clock.wall_ms())


async def test_the_pool_starts_the_lead_before_each_fire_and_not_otherwise() -> None:
    clock = FakeClock(wall_ms=1_000_000)
    pool = RecordingPool(clock)
    fires = [1_000_000 + 100_000, 1_000_000 + 400_000]

    def next_run() -> int | None:
        upcoming = [f for f in fires if f > clock.wall_ms()]
        return upcoming[0] if upcoming else None

    task = asyncio.create_task(prewarm_pool(pool, next_run, clock, lead_s=10.0))  # type: ignore[arg-type]
    try:
        for _ in range(80):
            await clock.advance(5.0)
        # Started 10 s before each fire (to the 5 s step of this fake clock), never in between.
        assert [f - s for f, s in zip(fires, pool.starts, strict=True)] == [10_000, 10_000]
    finally:
        task.cancel()


async def test_the_lead_is_capped_by_the_idle_shutdown_and_no_fire_means_no_start() -> None:
    clock = FakeClock(wall_ms=0)
    pool = RecordingPool(clock, idle_shutdown_s=4.0)
    due: list[int | None] = [None]
    task = asyncio.create_task(prewarm_pool(pool, lambda: due[0], clock, lead_s=10.0))  # type: ignore[arg-type]
    try:
        await clock.advance(120.0)
        assert pool.starts == []
        due[0] = 300_000  # the loop notices within its 5 s re-read
        for _ in range(240):
            await clock.advance(1.0)
        assert pool.starts == [298_000]  # 2 s ahead: half the 4 s idle shutdown; once per fire
    finally:
        task.cancel()
