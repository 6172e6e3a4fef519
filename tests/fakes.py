"""Hand-written fakes shared by the tests (they record, they do not mock)."""

from __future__ import annotations

import asyncio
import heapq
import itertools


class FakeClock:
    """A :class:`warmupd.clock.Clock` whose time moves only when the test says so.

    ``sleep`` parks the caller until :meth:`advance` moves monotonic time past its deadline, so a
    renewal task runs exactly when the test decides, never because real time passed.
    """

    def __init__(self, wall_ms: int = 1_700_000_000_000) -> None:
        self._wall_ms = wall_ms
        self._mono = 1_000.0
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def wall_ms(self) -> int:
        return self._wall_ms

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._seq), fut))
        await fut

    def set_wall_ms(self, wall_ms: int) -> None:
        """Step the wall clock only (as NTP or an operator would)."""
        self._wall_ms = wall_ms

    async def advance(self, seconds: float) -> None:
        """Move both clocks forward, wake due sleepers and let them run one step."""
        self._mono += seconds
        self._wall_ms += round(seconds * 1000)
        while self._sleepers and self._sleepers[0][0] <= self._mono:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
        for _ in range(5):
            await asyncio.sleep(0)
