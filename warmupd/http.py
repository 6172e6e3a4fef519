"""The HTTP edge: ``create_app(services) -> web.Application`` (SPEC §9).

Handlers parse → call a service → render. One wrapper around every route, :func:`edge`, maps the
error hierarchy to the envelope ``{"error": code, "message": ...}``, stamps ``X-Request-Id`` on every
response, counts it and never lets a stack trace reach a client; a catch-all route does the same for
requests no route matches. Nothing here writes SQL or knows which lock backend is in use. The service
protocols live in :mod:`warmupd.services` and are re-exported here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from warmupd import render, schemas
from warmupd.auth import Scope, check_secret
from warmupd.config import Secrets
from warmupd.errors import NotFound, PayloadTooLarge, WarmupdError
from warmupd.json_input import decode_body
from warmupd.logs import get_logger
from warmupd.metrics import CONTENT_TYPE, Metrics
from warmupd.models import Trigger
from warmupd.openapi import openapi_document
from warmupd.promtext import CounterChild, HistogramChild
from warmupd.services import ComparisonsService, JobsService, RunHandle, StatusProvider

log = get_logger("warmupd.http")

__all__ = [
    "ROUTES",
    "ComparisonsService",
    "JobsService",
    "RunHandle",
    "Services",
    "StatusProvider",
    "create_app",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Services:
    """Everything the handlers reach, stored once on the application."""

    status: StatusProvider
    jobs: JobsService
    comparisons: ComparisonsService
    secrets: Callable[[], Secrets]
    """Called on every request: a SIGHUP reload may have replaced the secrets."""
    read_auth: Callable[[], bool]
    """Called per request, like ``secrets``: ``http.read_auth`` is reloadable."""
    max_body_bytes: Callable[[], int]
    """Called per request: ``http.max_body_bytes`` is reloadable."""
    metrics: Metrics


SERVICES = web.AppKey("services", Services)
UNMATCHED = "unmatched"
"""The metrics label of requests no route matches (404 and 405)."""

_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}
"""Given as a header, not as ``content_type``/``charset``: aiohttp then skips assembling the same
string for every response (half the cost of building a ``web.Response``, bench P7)."""


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response with ``application/json; charset=utf-8``."""
    return json_bytes_response(json.dumps(data).encode(), status, headers)


def json_bytes_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A response of JSON already encoded."""
    return web.Response(
        body=body, status=status, headers={**_JSON_HEADERS, **headers} if headers else _JSON_HEADERS
    )


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    allow = exc.headers.get("Allow")
    body = render.http_error_body(exc.status, exc.reason, request.method, allow)
    return json_response(body, exc.status, {"Allow": allow} if allow is not None else None)


_PATH_CHECKS: dict[str, Callable[[str], object]] = {
    "slug": schemas.validate_slug,
    "job": schemas.validate_job_name,
}
"""Path parameters validated before anything else runs (the secret check included)."""


def edge(
    services: Services,
    template: str,
    handler: Handler,
    *,
    scope: Scope = Scope.NONE,
    check_path: bool = False,
    headers: Mapping[str, str] | None = None,
) -> Handler:
    """Wrap a route's handler in the edge: request id, path parameters, secret, errors, metrics.

    Every route of the application goes through this, and unmatched requests through
    :func:`add_unmatched`, so the application needs no middleware: aiohttp wraps each request in
    two more coroutines for any middleware (bench P3/P7). Errors become the envelope
    ``{"error", "message"}`` (never a stack trace), every response carries ``X-Request-Id``
    (the client's if printable and at most 64 characters), and each response is counted under
    ``template`` and its status code, the series looked up once per code.

    :param template: the route's path template, its metrics label.
    :param scope: who may call it (:func:`warmupd.auth.check_secret`).
    :param check_path: validate ``{slug}`` and ``{job}`` first (before the secret).
    :param headers: added to every response of the route, errors included.
    """
    checks = [(name, fn) for name, fn in _PATH_CHECKS.items() if f"{{{name}}}" in template]
    checks = checks if check_path else []
    metrics = services.metrics
    counters: dict[int, CounterChild] = {}
    durations: list[HistogramChild] = []
    needs_secret = scope is not Scope.NONE

    async def route(request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        request_id = request.headers.get("X-Request-Id", "")
        if not request_id or len(request_id) > 64 or not request_id.isprintable():
            request_id = render.new_request_id()
        try:
            for name, check in checks:
                check(request.match_info[name])
            # READ routes are open unless read_auth is on: the secrets are then not even fetched.
            if needs_secret and (scope is not Scope.READ or services.read_auth()):
                check_secret(scope, request.headers, services.secrets(), read_auth=True)
            response = await handler(request)
        except Exception as exc:  # noqa: BLE001 - mapped, and logged when not deliberate
            response = _error_response(request, exc, request_id)
        response.headers["X-Request-Id"] = request_id
        if headers:
            response.headers.update(headers)
        status = response.status
        counter = counters.get(status)
        if counter is None:
            counter = counters[status] = metrics.http_requests.labels(
                route=template, code=str(status)
            )
        if not durations:
            durations.append(metrics.http_request_duration.labels(route=template))
        counter.inc()
        durations[0].observe(time.monotonic() - started)
        return response

    return route


def _error_response(request: web.Request, exc: Exception, request_id: str) -> web.Response:
    if isinstance(exc, WarmupdError):
        status, body, headers = render.error_answer(exc)
        return json_response(body, status, headers)
    if isinstance(exc, web.HTTPException):
        return _http_error(request, exc)
    log.exception("http.unhandled_error", request_id=request_id, path=request.path)
    return json_response(
        render.error_body("internal", f"internal error (request id {request_id})"), status=500
    )


def add_unmatched(
    app: web.Application, prefix: str = "", headers: Mapping[str, str] | None = None
) -> None:
    """Answer requests no route of ``app`` matches under ``prefix`` (404, or 405 with ``Allow``).

    A catch-all route: aiohttp tries it after every more specific path, so it only sees requests
    that would otherwise be aiohttp's own plain-text 404/405. It finds the methods other routes
    allow for the path (``Allow`` of a 405) by asking each of them; that walk is on the error path
    only.
    """

    async def unmatched(request: web.Request) -> web.StreamResponse:
        allowed: set[str] = set()
        for resource in request.app.router.resources():
            match, methods = await resource.resolve(request)
            if match is None:
                allowed |= methods
        if allowed:
            raise web.HTTPMethodNotAllowed(request.method, allowed)
        raise web.HTTPNotFound

    route = edge(app[SERVICES], UNMATCHED, unmatched, headers=headers)
    app.router.add_route("*", prefix + "/{tail:.*}", route)


def _query(request: web.Request) -> dict[str, list[str]]:
    raw = request.rel_url.raw_query_string
    if "%" in raw:
        schemas.check_query_encoding(raw)
    return {key: request.query.getall(key) for key in set(request.query.keys())}


async def read_body(request: web.Request) -> bytes:
    """The request's body, refused past ``max_body_bytes`` before and while reading.

    :raises PayloadTooLarge:
    """
    limit = request.app[SERVICES].max_body_bytes()
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the request body exceeds {limit} bytes")
    content = request.content
    if content.is_eof():  # all of it has arrived (a small body comes with its headers)
        raw = content.read_nowait()
        if len(raw) > limit:
            raise PayloadTooLarge(f"the request body exceeds {limit} bytes")
        return raw
    # Counted here rather than by aiohttp's client_max_size, which is fixed when the application
    # is built: a SIGHUP may change the limit. What actually arrives is counted, so a chunked
    # body or a lying Content-Length is cut off while being read.
    body = bytearray()
    while chunk := await content.readany():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the request body exceeds {limit} bytes")
    return bytes(body)


async def read_json(request: web.Request, *, required: bool) -> object:
    """Read and decode a JSON body (:func:`read_body`, then :func:`decode_body`)."""
    return decode_body(await read_body(request), request.content_type, required=required)


_WARMUP_BODIES: render.Memo[tuple[str, bytes], tuple[str, str | None]] = render.Memo(4096)
"""Warmup bodies that passed, by ``(Content-Type header, body)``: clients post the same few bodies
again and again, and decoding and validating one is a pure function of those two. Short bodies
only; the size limit and the secret are checked on every request all the same."""


# --------------------------------------------------------------------------- handlers


async def healthz(request: web.Request) -> web.Response:
    """200 while the event loop runs."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when the DB is open and locks are usable; else 503."""
    ready, detail = await request.app[SERVICES].status.ready()
    return json_response(
        {**detail, "status": "ready" if ready else "not_ready"}, status=200 if ready else 503
    )


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    text = await request.app[SERVICES].metrics.collect()
    response = web.Response(text=text)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document."""
    return json_response(openapi_document())


async def status(request: web.Request) -> web.Response:
    """The daemon's status document."""
    return json_response(await request.app[SERVICES].status.status())


async def trigger_job(request: web.Request) -> web.Response:
    """Start a run: 202 at once, or 200 with the finished record under ``?wait=true``."""
    wait = schemas.parse_flag(_query(request), "wait", {"wait"})
    body = schemas.parse_trigger(await read_json(request, required=False))
    jobs = request.app[SERVICES].jobs
    handle = await jobs.trigger(
        request.match_info["job"], Trigger.HTTP, limit=body.limit, concurrency=body.concurrency
    )
    if wait:
        # shield: if the client goes away and the handler is cancelled, the run is not.
        record = await asyncio.shield(handle.wait())
        return json_response(render.run_json(record))
    url = render.run_url(handle.run_id)
    return json_response(
        render.trigger_accepted(handle.run_id, handle.job), status=202, headers={"Location": url}
    )


async def pause_job(request: web.Request) -> web.Response:
    """Pause a job's scheduled fires (SPEC §15)."""
    body = await request.app[SERVICES].jobs.set_paused(request.match_info["job"], True)
    return json_response(body)


async def resume_job(request: web.Request) -> web.Response:
    """Resume a job's scheduled fires (SPEC §15)."""
    body = await request.app[SERVICES].jobs.set_paused(request.match_info["job"], False)
    return json_response(body)


async def list_jobs(request: web.Request) -> web.Response:
    """Every job with its schedule, next fire and last run."""
    return json_response({"jobs": await request.app[SERVICES].jobs.jobs()})


async def list_runs(request: web.Request) -> web.Response:
    """Run records, newest first, filtered and paged by ``before``."""
    q = schemas.parse_runs_query(_query(request))
    records = await request.app[SERVICES].jobs.runs(
        job=q.job, status=q.status, limit=q.limit, before=q.before
    )
    runs = [render.run_json(r) for r in records]
    next_before = runs[-1]["id"] if len(runs) == q.limit else None
    return json_response({"runs": runs, "nextBefore": next_before})


async def get_run(request: web.Request) -> web.Response:
    """One run record."""
    run_id = schemas.validate_run_id(request.match_info["id"])
    record = await request.app[SERVICES].jobs.run(run_id)
    if record is None:
        raise NotFound(f"no run with id {run_id}")
    return json_response(render.run_json(record))


async def request_warmup(request: web.Request) -> web.Response:
    """Queue an on-demand warmup; never waits for the computation."""
    raw = await read_body(request)
    key = (request.headers.get("Content-Type", ""), raw)
    parsed = _WARMUP_BODIES.get(key)
    if parsed is None:
        parsed = schemas.parse_warmup(decode_body(raw, request.content_type, required=True))
        if len(raw) <= 512:
            _WARMUP_BODIES.put(key, parsed)
    answer = await request.app[SERVICES].comparisons.request_warmup(*parsed)
    code, body = render.warmup_answer_bytes(answer)
    return json_bytes_response(body, status=code)


async def warmup_status(request: web.Request) -> web.Response:
    """The warmup state of one comparison."""
    slug = request.match_info["slug"]
    return json_response(await request.app[SERVICES].comparisons.warmup_status(slug))


async def get_pack(request: web.Request) -> web.Response:
    """The premium pack (a read; may schedule a warmup or a refresh)."""
    slug = request.match_info["slug"]
    body = await request.app[SERVICES].comparisons.pack(slug)
    return web.Response(body=body, headers=_JSON_HEADERS)


async def upsert_comparison(request: web.Request) -> web.Response:
    """Insert or update a comparison: 201 when new, 200 when updated."""
    slug = request.match_info["slug"]
    comparison = schemas.parse_comparison(slug, await read_json(request, required=True))
    created, data_hash = await request.app[SERVICES].comparisons.upsert(comparison)
    return json_response({"slug": slug, "dataHash": data_hash}, status=201 if created else 200)


async def add_views(request: web.Request) -> web.Response:
    """Add views and set ``lastVisited``."""
    slug = request.match_info["slug"]
    count, at_ms = schemas.parse_views(await read_json(request, required=False))
    return json_response(await request.app[SERVICES].comparisons.add_views(slug, count, at_ms))


ROUTES: tuple[tuple[str, str, Handler, Scope], ...] = (
    ("GET", "/healthz", healthz, Scope.NONE),
    ("GET", "/readyz", readyz, Scope.NONE),
    ("GET", "/metrics", metrics, Scope.NONE),
    ("GET", "/api/openapi.json", openapi, Scope.NONE),
    ("GET", "/api/status", status, Scope.READ),
    ("GET", "/api/jobs", list_jobs, Scope.READ),
    ("GET", "/api/jobs/runs", list_runs, Scope.READ),
    ("GET", "/api/jobs/runs/{id}", get_run, Scope.READ),
    ("POST", "/api/jobs/{job}", trigger_job, Scope.JOB),
    ("POST", "/api/jobs/{job}/pause", pause_job, Scope.JOB),
    ("POST", "/api/jobs/{job}/resume", resume_job, Scope.JOB),
    ("POST", "/api/comparison/warmup", request_warmup, Scope.WARMUP),
    # Routes of one prefix are tried in this order: the hot read before its status (bench P7).
    ("GET", "/api/comparison/{slug}", get_pack, Scope.READ),
    ("GET", "/api/comparison/{slug}/status", warmup_status, Scope.READ),
    ("PUT", "/api/comparisons/{slug}", upsert_comparison, Scope.JOB),
    ("POST", "/api/comparisons/{slug}/views", add_views, Scope.JOB),
)
"""Every route: method, path template, handler, who may call it (SPEC §9)."""

# SPEC §9 puts fixed paths beside templates of other methods (``GET /api/jobs/runs`` next to
# ``POST /api/jobs/{job}``, ``POST /api/comparison/warmup`` next to ``GET /api/comparison/{slug}``).
# Excluding the fixed segment from the template keeps ``Allow`` exact and makes ``POST
# /api/jobs/runs`` a 405 instead of "unknown job"; the metrics label is still the plain template.
_ROUTE_PATTERNS = {
    "/api/jobs/{job}": "/api/jobs/{job:(?!runs$)[^{}/]+}",
    "/api/comparison/{slug}": "/api/comparison/{slug:(?!warmup$)[^{}/]+}",
}


def create_app(
    status_provider: StatusProvider,
    *,
    jobs: JobsService,
    comparisons: ComparisonsService,
    secrets: Callable[[], Secrets],
    read_auth: bool | Callable[[], bool] = False,
    max_body_bytes: int | Callable[[], int] = 1_048_576,
    metrics: Metrics | None = None,
) -> web.Application:
    """Build the application around its services.

    :param secrets: returns the current secrets; called per request so a reload takes effect at once.
    :param read_auth: a value, or a callable asked per request (the daemon's reloadable setting).
    :param max_body_bytes: a value, or a callable asked per request (ditto).
    :param metrics: where HTTP metrics go and what ``/metrics`` serves (a private one if omitted).
    """
    read_auth_now = read_auth if callable(read_auth) else _constant(read_auth)
    max_body_now = max_body_bytes if callable(max_body_bytes) else _constant(max_body_bytes)
    if max_body_now() < 1:
        raise ValueError("max_body_bytes must be positive")
    metrics = metrics if metrics is not None else Metrics()
    # client_max_size only guards aiohttp's own readers; read_body enforces the live limit.
    # No middleware: every route is wrapped in the edge instead (see edge()).
    app = web.Application(client_max_size=max_body_now())
    services = app[SERVICES] = Services(
        status=status_provider,
        jobs=jobs,
        comparisons=comparisons,
        secrets=secrets,
        read_auth=read_auth_now,
        max_body_bytes=max_body_now,
        metrics=metrics,
    )
    for method, path, handler, scope in ROUTES:
        # HEAD on GET routes would be an undocumented method; 405 keeps the surface exact.
        route = edge(services, path, handler, scope=scope, check_path=True)
        app.router.add_route(method, _ROUTE_PATTERNS.get(path, path), route)
    add_unmatched(app)
    return app


def _constant(value: T) -> Callable[[], T]:
    return lambda: value
