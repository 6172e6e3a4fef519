"""The HTTP edge: ``create_app(services) -> web.Application`` (SPEC §9).

Handlers parse → call a service → render. One middleware maps the error hierarchy to the envelope
``{"error": code, "message": ...}``, stamps ``X-Request-Id`` on every response and never lets a stack
trace reach a client. Nothing here writes SQL or knows which lock backend is in use. The service
protocols live in :mod:`warmupd.services` and are re-exported here.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets as pysecrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aiohttp import web

from warmupd import render, schemas
from warmupd.auth import Scope, check_secret
from warmupd.config import Secrets
from warmupd.errors import (
    Busy,
    InvalidRequest,
    LockedElsewhere,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    WarmupdError,
)
from warmupd.json_input import decode_json
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


class Middleware(Protocol):
    """What ``web.Application(middlewares=…)`` takes."""

    def __call__(
        self, request: web.Request, handler: Handler
    ) -> Awaitable[web.StreamResponse]: ...  # pragma: no cover


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
_UNMATCHED = "unmatched"


_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}
"""Given as a header, not as ``content_type``/``charset``: aiohttp then skips assembling the same
string for every response (half the cost of building a ``web.Response``, bench P7)."""


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response with ``application/json; charset=utf-8``."""
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={**_JSON_HEADERS, **headers} if headers else _JSON_HEADERS,
    )


def error_body(code: str, message: str) -> dict[str, str]:
    """The error envelope."""
    return {"error": code, "message": message}


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    if exc.status == 404:
        body = error_body("not_found", "no route matches this path")
    elif exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        body = error_body(
            "method_not_allowed", f"{request.method} is not allowed here (allowed: {allowed})"
        )
    elif exc.status == 413:
        body = error_body("payload_too_large", "the request body is too large")
    else:
        code = "invalid_request" if exc.status < 500 else "internal"
        body = error_body(code, exc.reason)
    response = json_response(body, status=exc.status)
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


_REQUEST_ID_PREFIX = pysecrets.token_hex(4)
_request_numbers = itertools.count(1)


def new_request_id() -> str:
    """16 hex digits, unique per process: a random prefix drawn at start and a counter.

    A request id needs to be unique, not unguessable; the counter spares every request a
    ``getrandom`` system call (bench P3/P7).
    """
    return f"{_REQUEST_ID_PREFIX}{next(_request_numbers) & 0xFFFFFFFF:08x}"


def edge_middleware(metrics: Metrics) -> Middleware:
    """The one middleware: map errors to the envelope, stamp ``X-Request-Id``, count and time.

    One layer instead of two (each costs aiohttp a wrapper per request), and the metric series of
    each (route template, code) are looked up once, then kept.
    """
    series: dict[tuple[str, int], tuple[CounterChild, HistogramChild]] = {}

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        request_id = request.headers.get("X-Request-Id", "")
        if not request_id or len(request_id) > 64 or not request_id.isprintable():
            request_id = new_request_id()
        try:
            response = await handler(request)
        except WarmupdError as exc:
            headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Busy) else None
            body: dict[str, Any] = error_body(exc.code, exc.message)
            if isinstance(exc, Busy) and exc.run_id is not None:
                body["runId"] = exc.run_id
            if isinstance(exc, LockedElsewhere) and exc.node is not None:
                body["node"] = exc.node
            response = json_response(body, status=exc.http_status, headers=headers)
        except web.HTTPException as exc:
            response = _http_error(request, exc)
        except Exception:
            log.exception("http.unhandled_error", request_id=request_id, path=request.path)
            response = json_response(
                error_body("internal", f"internal error (request id {request_id})"), status=500
            )
        response.headers["X-Request-Id"] = request_id
        resource = request.match_info.route.resource
        key = (resource.canonical if resource is not None else _UNMATCHED, response.status)
        pair = series.get(key)
        if pair is None:
            pair = series[key] = (
                metrics.http_requests.labels(route=key[0], code=str(key[1])),
                metrics.http_request_duration.labels(route=key[0]),
            )
        pair[0].inc()
        pair[1].observe(time.monotonic() - started)
        return response

    return edge


def _query(request: web.Request) -> dict[str, list[str]]:
    raw = request.rel_url.raw_query_string
    if "%" in raw:
        schemas.check_query_encoding(raw)
    return {key: request.query.getall(key) for key in set(request.query.keys())}


async def read_json(request: web.Request, *, required: bool) -> object:
    """Read and decode a JSON body, enforcing ``max_body_bytes`` before and while reading.

    :returns: the decoded value, or ``None`` for an absent body when ``required`` is false.
    :raises PayloadTooLarge, UnsupportedMediaType, InvalidRequest:
    """
    limit = request.app[SERVICES].max_body_bytes()
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the request body exceeds {limit} bytes")
    # Counted here rather than by aiohttp's client_max_size, which is fixed when the application
    # is built: a SIGHUP may change the limit. What actually arrives is counted, so a chunked
    # body or a lying Content-Length is cut off while being read.
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the request body exceeds {limit} bytes")
    raw = bytes(body)
    ctype = request.content_type
    is_json = ctype == "application/json" or ctype.endswith("+json")
    if not raw.strip():
        # An empty body declared as JSON is invalid JSON, not "no body" (clients such as aiohttp
        # label a bodiless POST application/octet-stream, which stays "no body").
        if required or is_json:
            raise InvalidRequest("body", "a JSON object is required")
        return None
    if not is_json:
        raise UnsupportedMediaType(f"the body must be application/json, not {ctype[:80]}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("body", "is not valid UTF-8") from None
    value = decode_json(text)
    if value is None:
        # An explicit ``null`` is a body, and not an object; only an absent body means "defaults".
        raise InvalidRequest("body", "must be a JSON object")
    return value


def _guarded(scope: Scope, handler: Handler) -> Handler:
    """Validate path parameters, then check the secret, then run ``handler``."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        if "slug" in request.match_info:
            schemas.validate_slug(request.match_info["slug"])
        if "job" in request.match_info:
            schemas.validate_job_name(request.match_info["job"])
        services = request.app[SERVICES]
        check_secret(scope, request.headers, services.secrets(), read_auth=services.read_auth())
        return await handler(request)

    return guarded


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
    slug, data_hash = schemas.parse_warmup(await read_json(request, required=True))
    answer = await request.app[SERVICES].comparisons.request_warmup(slug, data_hash)
    code, body = render.warmup_answer(answer)
    return json_response(body, status=code)


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
    ("GET", "/api/comparison/{slug}/status", warmup_status, Scope.READ),
    ("GET", "/api/comparison/{slug}", get_pack, Scope.READ),
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
    # client_max_size only guards aiohttp's own readers; read_json enforces the live limit.
    app = web.Application(middlewares=[edge_middleware(metrics)], client_max_size=max_body_now())
    app[SERVICES] = Services(
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
        app.router.add_route(method, _ROUTE_PATTERNS.get(path, path), _guarded(scope, handler))
    return app


def _constant(value: T) -> Callable[[], T]:
    return lambda: value
