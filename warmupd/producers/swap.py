"""An insights producer a reload can replace without cutting off calls in flight (SPEC §17)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from warmupd.producers import InsightsProducer

if TYPE_CHECKING:
    from warmupd.models import Comparison


class SwappableInsights:
    """Forwards to the current :class:`InsightsProducer`; :meth:`swap` puts another in its place.

    A call keeps the producer it started with. A replaced producer is closed once its last call in
    flight has returned (its HTTP session would otherwise cut those calls off), or by :meth:`close`.
    """

    def __init__(self, producer: InsightsProducer) -> None:
        self._current = producer
        self._in_flight: dict[int, int] = {}
        self._retired: dict[int, InsightsProducer] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def current(self) -> InsightsProducer:
        """The producer new calls go to."""
        return self._current

    @property
    def provider(self) -> str:
        """See :attr:`InsightsProducer.provider` (of the current producer)."""
        return self._current.provider

    @property
    def model(self) -> str:
        """See :attr:`InsightsProducer.model` (of the current producer)."""
        return self._current.model

    @property
    def prompt_version(self) -> str:
        """See :attr:`InsightsProducer.prompt_version` (of the current producer)."""
        return self._current.prompt_version

    async def insights(self, comparison: Comparison, *, now_ms: int) -> dict[str, Any]:
        """See :meth:`InsightsProducer.insights`, on the producer current when the call starts."""
        producer = self._current
        key = id(producer)
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            return await producer.insights(comparison, now_ms=now_ms)
        finally:
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]
                retired = self._retired.pop(key, None)
                if retired is not None:
                    self._close_later(retired)

    def swap(self, producer: InsightsProducer) -> None:
        """Send new calls to ``producer``; the old one is closed after its calls in flight."""
        old, self._current = self._current, producer
        if self._in_flight.get(id(old)):
            self._retired[id(old)] = old
        else:
            self._close_later(old)

    def reset_breaker(self) -> None:
        """See :meth:`InsightsProducer.reset_breaker` (of the current producer)."""
        self._current.reset_breaker()

    def _close_later(self, producer: InsightsProducer) -> None:
        task = asyncio.get_running_loop().create_task(producer.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close the current producer, every replaced one, and wait for closes under way."""
        for producer in [self._current, *self._retired.values()]:
            await producer.close()
        self._retired.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
