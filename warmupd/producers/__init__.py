"""Producers: the compute behind each cache entry (forecasts, insights); no I/O to the store.

The insights providers share one interface, :class:`InsightsProducer`; the daemon picks the concrete
class from ``ai.provider`` and the insights job only ever sees this protocol.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from warmupd.models import Comparison

FactsRunner = Callable[
    [Callable[["Comparison"], dict[str, Any]], "Comparison"], Awaitable[dict[str, Any]]
]
"""Runs a pure, picklable ``fn(comparison) -> dict`` somewhere (the jobs layer passes the process
pool); ``None`` in a producer means "call it inline"."""


class InsightsProducer(Protocol):
    """Computes the AI-insights pack of one comparison (SPEC §8).

    ``insights`` returns the SPEC §8 shape; its ``aiInsightsHash`` never depends on ``now_ms``.
    A failure of one item raises :class:`warmupd.errors.ProducerError` with a message that is safe
    to record (no secrets) and never anything that should stop the job.
    """

    # Read-only properties in the protocol, so a forwarding wrapper (producers.swap) fits it too.
    @property
    def provider(self) -> str:
        """``"builtin"`` or ``"openai"``: recorded in the output and the cache entry."""
        ...

    @property
    def model(self) -> str:
        """The model name (``"builtin-1"`` for the templates)."""
        ...

    @property
    def prompt_version(self) -> str:
        """Part of the insights cache key: a new prompt regenerates insights, never forecasts."""
        ...

    async def insights(self, comparison: Comparison, *, now_ms: int) -> dict[str, Any]:
        """The insights pack for ``comparison``, stamped ``generatedAt = now_ms``.

        :raises warmupd.errors.ProducerError: the item failed (bad series, model error, breaker
            open).
        """
        ...

    async def close(self) -> None:
        """Release held resources (HTTP sessions); the producer is unusable afterwards."""
        ...

    def reset_breaker(self) -> None:
        """Start of a job run: forget a previous run's "stop calling the provider" decision."""
        ...
