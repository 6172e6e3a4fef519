"""The HTTP edge: ``create_app(services) -> web.Application`` (SPEC §9).

Handlers parse → call a service → render. One middleware maps the error hierarchy to the envelope
``{"error": code, "message": ...}``, stamps ``X-Request-Id`` on every response and never lets a stack
trace reach a client. Nothing here writes SQL or knows which lock backend is in use.
"""

from __future__ import annotations

import logging
import secrets as pysecrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from warmupd.errors import Busy, WarmupdError
from warmupd.models import Comparison, RunRecord, Trigger

log = logging.getLogger("warmupd.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StatusProvider(Protocol):
    """What the status routes need."""

    async def status(self) -> dict[str, Any]:
        """The ``GET /api/status`` document."""
        ...

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        """Readiness and the reasons behind it."""
        ...


class RunHandle(Protocol):
    """A run that was started (or found running)."""

    run_id: int
    job: str

    async def wait(self) -> RunRecord:
        """Wait for the run to finish (shielded: a client disconnect never cancels a job)."""
        ...


class JobsService(Protocol):
    """Job triggers, the job list and the run log."""

    def job_names(self) -> list[str]:
        """Every triggerable job."""
        ...

    async def trigger(
        self,
        job: str,
        trigger: Trigger,
        *,
        limit: int | None = None,
        concurrency: int | None = None,
    ) -> RunHandle:
        """Start a run now (the lock is taken before this returns).

        :raises NotFound: unknown job.
        :raises AlreadyRunning: this process runs it (``run_id`` is the running run).
        :raises LockedElsewhere: another process holds its lock (a skipped run was recorded).
        """
        ...

    async def jobs(self) -> list[dict[str, Any]]:
        """``[{name, schedule, timezone, enabled, nextRunAt, lastRun, running}]`` (rendered)."""
        ...

    async def run(self, run_id: int) -> RunRecord | None:
        """One run record."""
        ...

    async def runs(
        self, *, job: str | None, status: str | None, limit: int, before: int | None
    ) -> list[RunRecord]:
        """Run records, newest first."""
        ...


class ComparisonsService(Protocol):
    """Comparisons: writes, on-demand warmup and cache reads."""

    async def upsert(self, comparison: Comparison) -> tuple[bool, str]:
        """Insert or update; ``(created, dataHash)``."""
        ...

    async def add_views(self, slug: str, count: int, at_ms: int | None) -> dict[str, Any]:
        """Add views; returns ``{slug, viewCount, lastVisited}``. :raises NotFound:"""
        ...

    async def request_warmup(self, slug: str, data_hash: str | None) -> dict[str, Any]:
        """Fire-and-forget warmup; ``{slug, dataHash, status: queued|running|ready}``.

        :raises NotFound: unknown slug.
        :raises StaleDataHash: ``data_hash`` is not the current one.
        :raises QueueFull: ``on_demand.max_queued`` reached.
        """
        ...

    async def warmup_status(self, slug: str) -> dict[str, Any]:
        """``{slug, dataHash, warmup, parts: {forecastA, forecastB, insights}, lastError?, updatedAt}``.

        :raises NotFound:
        """
        ...

    async def pack(self, slug: str) -> dict[str, Any]:
        """The premium pack ``{slug, terms, dataHash, forecasts, insights, freshness, needsWarmup}``.

        Schedules an on-demand warmup for missing parts and a background refresh for stale ones.
        :raises NotFound:
        """
        ...


SERVICES = web.AppKey("services", object)
STATUS = web.AppKey("status", StatusProvider)


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response with ``application/json; charset=utf-8``."""
    return web.json_response(data, status=status, headers=headers)


def error_body(code: str, message: str) -> dict[str, str]:
    """The error envelope."""
    return {"error": code, "message": message}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map errors to the envelope; add ``X-Request-Id``."""
    request_id = request.headers.get("X-Request-Id", "")
    if not request_id or len(request_id) > 64 or not request_id.isprintable():
        request_id = pysecrets.token_hex(8)
    try:
        response = await handler(request)
    except WarmupdError as exc:
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Busy) else None
        body: dict[str, Any] = error_body(exc.code, exc.message)
        if isinstance(exc, Busy) and exc.run_id is not None:
            body["runId"] = exc.run_id
        response = json_response(body, status=exc.http_status, headers=headers)
    except web.HTTPException as exc:
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status, "invalid_request" if exc.status < 500 else "internal"
        )
        response = json_response(error_body(code, exc.reason), status=exc.status)
        for name in ("Allow",):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
    except Exception:
        log.exception("unhandled error", extra={"request_id": request_id, "path": request.path})
        response = json_response(
            error_body("internal", f"internal error (request id {request_id})"), status=500
        )
    response.headers["X-Request-Id"] = request_id
    return response


async def healthz(request: web.Request) -> web.Response:
    """200 while the event loop runs."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when the DB is open and locks are usable; else 503."""
    ready, detail = await request.app[STATUS].ready()
    return json_response(
        {"status": "ready" if ready else "not_ready", **detail}, status=200 if ready else 503
    )


async def status(request: web.Request) -> web.Response:
    """The daemon's status document."""
    return json_response(await request.app[STATUS].status())


def create_app(
    status_provider: StatusProvider, *, max_body_bytes: int = 1_048_576
) -> web.Application:
    """Build the application around its services."""
    app = web.Application(middlewares=[error_middleware], client_max_size=max_body_bytes)
    app[STATUS] = status_provider
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/status", status)
    return app
