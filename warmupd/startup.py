"""Waiting for the state database: at start-up and after losing it (SPEC §14 "Faults").

**Which errors wait and which stop.** Opening the state database either succeeds, or fails

- *transiently* — :class:`~warmupd.errors.DatabaseUnavailable`: connection refused or reset, a
  timeout, a host that does not resolve or route (yet), a server starting up or shutting down, out
  of connections. ``serve`` keeps trying, 1 s doubling to 30 s, while ``/healthz`` answers 200,
  ``/readyz`` 503 naming the database, and ``STATUS=`` says what it waits for. ``READY=1`` follows
  only once connected and migrated;
- *for good* — :class:`~warmupd.errors.DatabaseRejected` (wrong credentials, no such database or
  role, a connection parameter the server or driver rejects, no right to create the schema) or
  :class:`~warmupd.errors.SchemaTooNew`: configuration, which waiting will not fix. ``serve`` exits
  2 at once with one line naming the problem (systemd's ``Restart=on-failure`` then retries it at
  its own pace). A malformed ``database.url`` never gets this far: the config refuses it.

Once running, any loss is transient (a failover may bring a server up half-configured): statements
answer 503 ``unavailable``, the health state says ``down`` and :func:`probe_database` tries again
with the same back-off until one answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web

from warmupd.clock import Clock, backoff, sleep_unless_set
from warmupd.errors import DatabaseUnavailable
from warmupd.health import Health
from warmupd.logs import get_logger
from warmupd.metrics import CONTENT_TYPE, Metrics
from warmupd.state.backends import STATE_ERRORS, StateBackend

log = get_logger("warmupd.daemon")

RETRY_S = 1.0
RETRY_MAX_S = 30.0
"""The back-off of attempts to reach the state database (SPEC §14: 1 s doubling to 30 s)."""


def retry_delays() -> Iterator[float]:
    """1, 2, 4, … seconds, capped at 30 s, forever."""
    return backoff(RETRY_S, RETRY_MAX_S)


async def open_database(
    db: StateBackend,
    *,
    health: Health,
    clock: Clock,
    stop: asyncio.Event,
    on_waiting: Callable[[str, float], Awaitable[None]],
) -> bool:
    """Open (and migrate) ``db``, retrying transient failures until it answers or ``stop`` is set.

    ``on_waiting(reason, retry_s)`` is awaited after each failed attempt (the daemon serves its
    waiting endpoints and updates ``STATUS=``). Returns False when stopped before the database
    answered.

    :raises DatabaseRejected, SchemaTooNew: configuration; not retried.
    """
    for delay_s in retry_delays():
        try:
            await db.open()
        except DatabaseUnavailable as exc:
            health.observe_database(False, exc.message)
            log.warning("database.waiting", error=exc.message, retry_s=delay_s)
            await on_waiting(exc.message, delay_s)
            if await sleep_unless_set(clock, delay_s, stop):
                return False
            continue
        health.observe_database(True)
        log.info("database.connected", schema="migrated")
        return True
    raise AssertionError("unreachable: retry_delays() never ends")  # pragma: no cover


async def probe_database(db: StateBackend, health: Health, clock: Clock) -> None:
    """Loop forever: while the health state says the database is down, try it with back-off.

    A statement that answers flips the health state (and so status, readiness and the metric)
    back by itself; this loop makes sure one is tried even when nothing else runs.
    """
    changed = asyncio.Event()
    health.subscribe_database(lambda _up: changed.set())
    while True:
        await changed.wait()
        changed.clear()
        delays = retry_delays()
        while not health.database_up:
            await clock.sleep(next(delays))
            try:
                await db.fetchone("SELECT 1")
            except DatabaseUnavailable:
                continue  # reported to the health state by the backend
            except STATE_ERRORS as exc:
                log.warning("database.probe_failed", error=type(exc).__name__)


def waiting_app(health: Health, metrics: Metrics) -> web.Application:
    """What ``serve`` answers while start-up waits for the database: alive, not ready.

    ``/healthz`` 200 (the process is fine; a supervisor must not restart it), ``/readyz`` 503
    naming the database, ``/metrics`` (``warmupd_database_up 0``), anything else 503
    ``unavailable``. Replaced by the real application once the database answered.
    """

    def waiting_for() -> str:
        return f"waiting for the state database ({health.database_error or 'connecting'})"

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        body = {
            "status": "not_ready",
            "db": f"unavailable ({health.database_error or 'connecting'})",
            "redis": health.redis,
        }
        return web.json_response(body, status=503)

    async def metrics_text(_request: web.Request) -> web.Response:
        response = web.Response(text=await metrics.collect())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    async def anything(_request: web.Request) -> web.Response:
        message = f"warmupd is starting: {waiting_for()}"
        return web.json_response(
            {"error": "unavailable", "message": message}, status=503, headers={"Retry-After": "5"}
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_text)
    app.router.add_route("*", "/{tail:.*}", anything)
    return app
