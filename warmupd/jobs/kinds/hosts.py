"""Per-host politeness for the http kind: concurrency, rate and ``Retry-After`` pauses.

One :class:`HostGate` per run. Every request to a host passes :meth:`HostGate.slot`, which holds
one of the host's ``per_host_concurrency`` places, waits until the host's pause (a 429/503 with
``Retry-After``) is over, and spaces request starts ``1/rate`` apart. Waiting goes through the
injected clock, so tests count starts per unit of virtual time instead of timing real requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from warmupd.clock import Clock

MAX_PAUSE_S = 60.0
"""The longest a ``Retry-After`` may make a host wait (SPEC §16)."""


@dataclass
class _Host:
    places: asyncio.Semaphore | None
    next_start: float = 0.0
    paused_until: float = 0.0
    starts: list[float] = field(default_factory=list)


class HostGate:
    """Concurrency, rate and pauses per host name (the port is not part of it)."""

    def __init__(
        self, clock: Clock, *, per_host_concurrency: int | None, rate_per_s: float | None
    ) -> None:
        self._clock = clock
        self._places = per_host_concurrency
        self._interval_s = 1 / rate_per_s if rate_per_s else 0.0
        self._hosts: dict[str, _Host] = {}

    def _host(self, host: str) -> _Host:
        state = self._hosts.get(host)
        if state is None:
            places = asyncio.Semaphore(self._places) if self._places else None
            state = self._hosts[host] = _Host(places)
        return state

    @asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        """Hold one of ``host``'s places from the moment its turn comes until the block ends."""
        state = self._host(host)
        if state.places is not None:
            await state.places.acquire()
        try:
            while True:
                now = self._clock.monotonic()
                wait_s = max(state.paused_until, state.next_start) - now
                if wait_s <= 0:
                    break
                await self._clock.sleep(wait_s)
            # Reserve the next start before yielding: the spacing holds however long requests take.
            state.next_start = now + self._interval_s
            state.starts.append(now)
            yield
        finally:
            if state.places is not None:
                state.places.release()

    def pause(self, host: str, seconds: float) -> float:
        """Make ``host`` wait ``seconds`` (capped at :data:`MAX_PAUSE_S`) before its next request.

        :returns: the pause applied, in seconds.
        """
        pause_s = min(max(seconds, 0.0), MAX_PAUSE_S)
        state = self._host(host)
        state.paused_until = max(state.paused_until, self._clock.monotonic() + pause_s)
        return pause_s

    def starts(self, host: str) -> list[float]:
        """The monotonic times at which ``host``'s requests were let through, in order."""
        return list(self._host(host).starts)
