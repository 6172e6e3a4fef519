"""The composition root: picks concrete classes, wires them, owns the lifecycle (SPEC §11).

Start-up order: load config → open DB, migrate → mark orphaned runs abandoned → HTTP → ready.
Every component is entered into one ``AsyncExitStack`` in start-up order, so shutdown runs in reverse
on every path (normal exit, error, signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import sys
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import web

from warmupd import __version__
from warmupd.clock import Clock, SystemClock, ms_to_iso
from warmupd.config import Config
from warmupd.db import Database
from warmupd.http import create_app
from warmupd.runs import NodeStore, RunStore, make_node_id, recover_abandoned
from warmupd.store import CacheStore

log = logging.getLogger("warmupd.daemon")


class StatusService:
    """Builds the ``/api/status`` document and answers readiness."""

    def __init__(
        self, *, config: Config, db: Database, node: str, clock: Clock, started_ms: int
    ) -> None:
        self.config = config
        self.db = db
        self.node = node
        self.clock = clock
        self.started_ms = started_ms

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        """Ready when the DB answers."""
        try:
            await self.db.fetchone("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any DB failure means not ready
            return False, {"db": f"unavailable: {type(exc).__name__}"}
        return True, {"db": "ok"}

    async def status(self) -> dict[str, Any]:
        """SPEC §9 status fields."""
        now = self.clock.wall_ms()
        counts = await CacheStore(self.db).counts(now)
        cache = {"fresh": 0, "stale": 0, "expired": 0}
        for (_, state), n in counts.items():
            cache[state] += n
        return {
            "version": __version__,
            "node": self.node,
            "startedAt": ms_to_iso(self.started_ms),
            "uptimeS": round((now - self.started_ms) / 1000, 3),
            "state": "ok",
            "locks": {
                "backend": "sqlite",
                "redis": "unconfigured" if not self.config.redis.url else "down",
            },
            "db": {
                "path": str(self.db.path),
                "sizeBytes": self.db.size_bytes(),
                "schemaVersion": await self.db.schema_version(),
            },
            "jobs": [],
            "onDemand": {"inFlight": 0, "queued": 0},
            "cache": cache,
        }


async def serve(config: Config, *, log_format: str = "text", log_level: str = "info") -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the exit code."""
    logging.basicConfig(
        stream=sys.stderr,
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    clock = SystemClock()
    node = make_node_id(secrets.token_hex(3))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        db = await stack.enter_async_context(Database(config.daemon.db_path))
        nodes = NodeStore(db)
        await nodes.heartbeat(node, clock.wall_ms())
        stack.push_async_callback(nodes.remove, node)
        abandoned = await recover_abandoned(
            RunStore(db),
            nodes,
            self_node=node,
            now_ms=clock.wall_ms(),
            stale_after_ms=3 * config.locks.lease_ms,
        )
        if abandoned:
            log.warning("runs.abandoned ids=%s", abandoned)
        status = StatusService(
            config=config, db=db, node=node, clock=clock, started_ms=clock.wall_ms()
        )
        runner = web.AppRunner(
            create_app(status, max_body_bytes=config.http.max_body_bytes), handle_signals=False
        )
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, config.http.host, config.http.port)
        await site.start()
        log.info("daemon.ready node=%s http=%s:%s", node, config.http.host, config.http.port)
        await stop.wait()
        log.info("daemon.stopping")
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    log.info("daemon.stopped")
    return 0
