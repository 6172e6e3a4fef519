"""The daemon's one health state (SPEC §17): what ``/api/status``, ``/readyz`` and
``warmupd_redis_up`` all read.

Whoever learns something about a dependency reports it here at that moment — a failed or answered
Redis call in the lock backend, the periodic probe — and every view of health follows at once:
listeners (the metric) are called synchronously from :meth:`Health.observe_redis`, and status and
readiness read :attr:`Health.redis` when asked. Nothing keeps a copy that could lag.
"""

from __future__ import annotations

from collections.abc import Callable

RedisListener = Callable[[bool], None]
"""Called with the new value of "Redis answers" on every change (and once on subscription)."""


class Health:
    """Whether each dependency answers, as last observed.

    :param redis_configured: False when no Redis is configured: :attr:`redis` is then
        ``unconfigured`` for good and observations are ignored.
    """

    def __init__(self, *, redis_configured: bool) -> None:
        self.redis_configured = redis_configured
        # Optimistic until the first call says otherwise; start-up probes Redis before serving.
        self._redis_up = redis_configured
        self._listeners: list[RedisListener] = []

    @property
    def redis_up(self) -> bool:
        """Whether the configured Redis answered the last call made to it."""
        return self._redis_up

    @property
    def redis(self) -> str:
        """``up``, ``down`` or ``unconfigured`` (the status and readiness vocabulary)."""
        if not self.redis_configured:
            return "unconfigured"
        return "up" if self._redis_up else "down"

    def observe_redis(self, up: bool) -> bool:
        """Record the outcome of a Redis call; returns True when that changed the state.

        Listeners run before this returns, so every view agrees the moment a caller learns.
        """
        if not self.redis_configured or up == self._redis_up:
            return False
        self._redis_up = up
        for listener in list(self._listeners):
            listener(up)
        return True

    def subscribe(self, listener: RedisListener) -> None:
        """Call ``listener(up)`` now and on every change of :attr:`redis_up` (Redis configured only)."""
        if not self.redis_configured:
            return
        self._listeners.append(listener)
        listener(self._redis_up)
