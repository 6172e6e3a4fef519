"""Time as a parameter: the :class:`Clock` protocol and the system clock.

Inside warmupd, wall time is integer milliseconds since the epoch (UTC). Monotonic time (seconds, a
float) measures durations and local lease deadlines; it never goes backwards when the wall clock is
stepped. Tests pass a fake clock with the same three methods.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """What warmupd needs from time."""

    def wall_ms(self) -> int:
        """Wall-clock time in integer milliseconds since the epoch (UTC)."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds, for durations and deadlines."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` (a fake clock may return at once after advancing itself)."""
        ...


class SystemClock:
    """The real clock."""

    def wall_ms(self) -> int:
        """:meth:`Clock.wall_ms` from ``time.time_ns``."""
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        """:meth:`Clock.monotonic` from ``time.monotonic``."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """:meth:`Clock.sleep` through ``asyncio.sleep``."""
        await asyncio.sleep(max(0.0, seconds))


def backoff(first_s: float, max_s: float) -> Iterator[float]:
    """Retry delays: ``first_s``, doubling each time, capped at ``max_s``, forever."""
    delay_s = first_s
    while True:
        yield delay_s
        delay_s = min(delay_s * 2, max_s)


async def sleep_unless_set(clock: Clock, seconds: float, event: asyncio.Event) -> bool:
    """Sleep ``seconds`` on ``clock``, cut short when ``event`` is set; True when it was set."""
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    waker = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, waker):
            task.cancel()
        await asyncio.gather(sleeper, waker, return_exceptions=True)
    return event.is_set()


def ms_to_iso(ms: int | None) -> str | None:
    """Render epoch milliseconds as ISO-8601 UTC with a ``Z`` (millisecond precision)."""
    if ms is None:
        return None
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    # %Y does not zero-pad years before 1000 on glibc ("45-12-17…" is not ISO-8601).
    return f"{dt.year:04d}-" + dt.strftime("%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def iso_to_ms(text: str) -> int:
    """Parse an ISO-8601 timestamp or date (``Z`` or offset; naive means UTC) to epoch ms.

    :raises ValueError: when ``text`` is not ISO-8601.
    """
    dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)
