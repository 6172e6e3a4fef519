"""A concurrency limit whose size a reload can change while work holds and waits for it."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from types import TracebackType


class Slots:
    """Like :class:`asyncio.Semaphore` over ``limit`` slots, but :meth:`resize` can change ``limit``.

    Waiters are served first come, first served. Growing wakes as many waiters as new slots
    allow at once; shrinking never interrupts a holder — the excess drains as holders leave, and
    nobody new enters until fewer than ``limit`` are in use.

    :raises ValueError: for a limit below 1.
    """

    def __init__(self, limit: int) -> None:
        self._limit = _check(limit)
        self._used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        """The number of slots."""
        return self._limit

    @property
    def in_use(self) -> int:
        """Slots held now (may exceed :attr:`limit` for a while after a shrink)."""
        return self._used

    def resize(self, limit: int) -> None:
        """Change the number of slots; waiters get the new ones at once."""
        self._limit = _check(limit)
        self._wake()

    async def acquire(self) -> None:
        """Wait for a slot and take it."""
        if self._used < self._limit and not self._waiters:
            self._used += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Granted and cancelled in the same step: give the slot on.
                self.release()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back."""
        self._used -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._used < self._limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                # Counted for the waiter here, so no newcomer can take the slot in between.
                self._used += 1
                waiter.set_result(None)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _check(limit: int) -> int:
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return limit
