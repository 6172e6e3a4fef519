"""The daemon's one health state (SPEC §17): what ``/api/status``, ``/readyz``,
``warmupd_redis_up`` and ``warmupd_database_up`` all read.

Whoever learns something about a dependency reports it here at that moment — a failed or answered
Redis call in the lock backend, a statement that found the state database gone (or answering
again), the periodic probes — and every view of health follows at once: listeners (the metrics) are
called synchronously from :meth:`Health.observe_redis` / :meth:`Health.observe_database`, and status
and readiness read this object when asked. Nothing keeps a copy that could lag.
"""

from __future__ import annotations

from collections.abc import Callable

RedisListener = Callable[[bool], None]
"""Called with the new value of "Redis answers" on every change (and once on subscription)."""
DatabaseListener = Callable[[bool], object]
"""Called with the new value of "the state database answers" on every change (and once)."""


class Health:
    """Whether each dependency answers, as last observed.

    :param redis_configured: False when no Redis is configured: :attr:`redis` is then
        ``unconfigured`` for good and observations are ignored.
    :param database_up: the state database's initial state: False while start-up still waits
        for it (SPEC §14), True once it is open.
    """

    def __init__(self, *, redis_configured: bool, database_up: bool = True) -> None:
        self.redis_configured = redis_configured
        # Optimistic until the first call says otherwise; start-up probes Redis before serving.
        self._redis_up = redis_configured
        self._listeners: list[RedisListener] = []
        self._database_up = database_up
        self._database_error: str | None = None
        self._database_listeners: list[DatabaseListener] = []

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

    # ----------------------------------------------------------------- the state database

    @property
    def database_up(self) -> bool:
        """Whether the state database answered the last statement sent to it."""
        return self._database_up

    @property
    def database(self) -> str:
        """``up`` or ``down`` (the status and readiness vocabulary)."""
        return "up" if self._database_up else "down"

    @property
    def database_error(self) -> str | None:
        """While down: why, naming the database (its URL never carries the password)."""
        return None if self._database_up else self._database_error

    def observe_database(self, up: bool, error: str | None = None) -> bool:
        """Record the outcome of a statement (or a connection attempt); True when the state changed.

        ``error`` (when down) is kept up to date even without a change of state, so status and
        readiness show the latest reason; listeners hear only of changes, before this returns.
        """
        if not up:
            self._database_error = error or "the state database does not answer"
        if up == self._database_up:
            return False
        self._database_up = up
        for listener in list(self._database_listeners):
            listener(up)
        return True

    def subscribe_database(self, listener: DatabaseListener) -> None:
        """Call ``listener(up)`` now and on every change of :attr:`database_up`."""
        self._database_listeners.append(listener)
        listener(self._database_up)
