"""Hand-written fakes shared by the tests (they record, they do not mock)."""

from __future__ import annotations

import asyncio


class FakeClock:
    """A clock that moves only when told to.

    ``sleep`` records the requested duration, advances both clocks by it and yields once to the loop,
    so code that sleeps in a loop can be stepped deterministically.
    """

    def __init__(self, wall_ms: int = 1_767_225_600_000, monotonic: float = 1000.0) -> None:
        self._wall_ms = wall_ms
        self._mono = monotonic
        self.sleeps: list[float] = []

    def wall_ms(self) -> int:
        return self._wall_ms

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move wall and monotonic time forward together."""
        self._wall_ms += round(seconds * 1000)
        self._mono += seconds

    def jump_wall(self, seconds: float) -> None:
        """Step only the wall clock (an NTP step or a manual change), forward or back."""
        self._wall_ms += round(seconds * 1000)

    def set_wall_ms(self, wall_ms: int) -> None:
        self._wall_ms = wall_ms

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)
