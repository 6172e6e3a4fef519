"""The dashboard's routes (SPEC §15): ``/ui`` pages rendered on the server, static files, the login.

Handlers read through the same services as the JSON API (:class:`warmupd.http.Services`) and never
touch storage. Every response under ``/ui`` carries the security headers of SPEC §15; every value
from data reaches the page through the autoescaping templates; the buttons call the existing API from
``static/app.js`` with the secret the operator typed into that tab (never sent in a page).
"""

from __future__ import annotations

import asyncio
import importlib.resources
import mimetypes
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from warmupd import __version__, schemas
from warmupd.auth import Scope, check_secret
from warmupd.clock import Clock, iso_to_ms
from warmupd.errors import NotFound, WarmupdError
from warmupd.http import SERVICES, Services, add_unmatched, edge
from warmupd.models import RunRecord
from warmupd.ui import charts, session
from warmupd.ui.templating import render

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
STATIC_FILES = ("app.css", "app.js", "favicon.svg")
TIMELINE_DAYS = 7
TIMELINE_MAX_RUNS = 1_500
"""At most this many bars (the newest); the chart says so when the week held more."""
RUNS_PAGE = 50
SEARCH_LIMIT = 50
CLOCK = web.AppKey("ui_clock", Clock)
Page = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _load_static() -> dict[str, tuple[bytes, str]]:
    root = importlib.resources.files("warmupd.ui") / "static"
    out = {}
    for name in STATIC_FILES:
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        out[name] = ((root / name).read_bytes(), ctype)
    return out


STATIC = web.AppKey("ui_static", dict)


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _page(template: str, request: web.Request, code: int = 200, **context: Any) -> web.Response:
    services = request.app[SERVICES]
    return _html(
        render(
            template,
            version=__version__,
            read_auth=services.read_auth(),
            logged_in=services.read_auth() and _has_session(request),
            now_ms=request.app[CLOCK].wall_ms(),
            path=request.path,
            **context,
        ),
        code,
    )


def _see_other(location: str) -> web.Response:
    # Returned, not raised: the API's edge (http.edge) turns raised HTTP exceptions into JSON.
    return web.Response(status=303, headers={"Location": location})


def _has_session(request: web.Request) -> bool:
    services = request.app[SERVICES]
    return session.valid(
        request.cookies.get(session.COOKIE), services.secrets().job, request.app[CLOCK].wall_ms()
    )


def _guard(handler: Page) -> Page:
    """Login redirect (with ``read_auth``), and errors as HTML pages rather than JSON envelopes."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        services = request.app[SERVICES]
        if services.read_auth() and not _has_session(request):
            target = request.path_qs if request.path_qs.startswith("/ui") else "/ui"
            return _see_other("/ui/login?" + urlencode({"next": target}))
        try:
            return await handler(request)
        except WarmupdError as exc:
            return _page(
                "error.html", request, exc.http_status, title=exc.code, message=exc.message
            )

    return guarded


def _iso_ms(text: str | None) -> int | None:
    return iso_to_ms(text) if text else None


# --------------------------------------------------------------------------- pages


def _state_reasons(status: Mapping[str, Any]) -> list[str]:
    reasons = []
    if status["locks"]["redis"] == "down":
        reasons.append("Redis is down: locks fall back to SQLite (or runs are skipped)")
    reasons += [
        f"{job['name']} is overdue: no success within its schedule"
        for job in status["jobs"]
        if job.get("overdue")
    ]
    return reasons


async def overview(request: web.Request) -> web.Response:
    """``/ui``: state, nodes, jobs, on-demand counts, cache freshness, the 7-day timeline."""
    services = request.app[SERVICES]
    now_ms = request.app[CLOCK].wall_ms()
    status, (ready, readiness), nodes, week, latest = await asyncio.gather(
        services.status.status(),
        services.status.ready(),
        services.status.live_nodes(),
        services.jobs.timeline(now_ms - TIMELINE_DAYS * charts.DAY_MS, TIMELINE_MAX_RUNS),
        services.jobs.runs(job=None, status=None, limit=10, before=None),
    )
    jobs = [
        {**job, "nextMs": _iso_ms(job.get("nextRunAt")), "pausedMs": _iso_ms(job.get("pausedAt"))}
        for job in status["jobs"]
    ]
    return _page(
        "overview.html",
        request,
        status=status,
        reasons=_state_reasons(status),
        ready=ready,
        readiness=readiness,
        nodes=nodes,
        jobs=jobs,
        timeline=charts.timeline(week, [j["name"] for j in jobs], now_ms, days=TIMELINE_DAYS),
        timeline_capped=len(week) >= TIMELINE_MAX_RUNS,
        shapes=charts.SHAPES,
        latest=latest,
    )


async def run_log(request: web.Request) -> web.Response:
    """``/ui/runs``: the run log, newest first, by job and status, paged by ``before``."""
    services = request.app[SERVICES]
    query = {k: request.query.getall(k) for k in request.query if request.query.get(k)}
    q = schemas.parse_runs_query({**query, "limit": [str(RUNS_PAGE)]})
    runs = await services.jobs.runs(job=q.job, status=q.status, limit=q.limit, before=q.before)
    next_before = runs[-1].id if len(runs) == q.limit else None
    filters = {k: v for k, v in (("job", q.job), ("status", q.status)) if v}
    return _page(
        "runs.html",
        request,
        runs=runs,
        job=q.job or "",
        status=q.status or "",
        job_names=services.jobs.job_names(),
        statuses=list(charts.SHAPES),
        first_page=q.before is None,
        first_url="/ui/runs?" + urlencode(filters),
        next_url=("/ui/runs?" + urlencode({**filters, "before": next_before}))
        if next_before
        else None,
    )


async def run_detail(request: web.Request) -> web.Response:
    """``/ui/runs/<id>``: every field of one run; a running run refreshes its progress."""
    run_id = schemas.validate_run_id(request.match_info["id"])
    record: RunRecord | None = await request.app[SERVICES].jobs.run(run_id)
    if record is None:
        raise NotFound(f"no run with id {run_id}")
    metadata = dict(record.metadata)
    return _page(
        "run.html",
        request,
        run=record,
        selected=metadata.get("selected"),
        metadata=sorted(metadata.items()),
    )


async def comparison_search(request: web.Request) -> web.Response:
    """``/ui/comparisons?q=``: by slug or term prefix, most viewed first, with part freshness."""
    q = request.query.get("q", "").strip()[:200]
    results = await request.app[SERVICES].comparisons.search(q, SEARCH_LIMIT)
    return _page("comparisons.html", request, q=q, results=results, limit=SEARCH_LIMIT)


async def comparison_page(request: web.Request) -> web.Response:
    """``/ui/comparisons/<slug>``: series, forecasts with bands, peaks, meaning, freshness."""
    slug = schemas.validate_slug(request.match_info["slug"])
    detail = await request.app[SERVICES].comparisons.detail(slug)
    comparison = detail["comparison"]
    names = {"termA": comparison.term_a, "termB": comparison.term_b}
    values = detail["values"]
    insights = values.get("insights") or {}
    peaks = list(insights.get("peakExplanations") or [])
    forecasts = {"termA": values.get("forecastA"), "termB": values.get("forecastB")}
    return _page(
        "comparison.html",
        request,
        c=comparison,
        names=names,
        detail=detail,
        forecasts=forecasts,
        meaning=insights.get("meaningExplanation"),
        insights=insights or None,
        peaks=peaks,
        chart=charts.forecast_chart(comparison.series, names, forecasts, peaks),
    )


# --------------------------------------------------------------------------- login


def _next(value: str | None) -> str:
    # Only a path of the dashboard itself: never an open redirect to another site.
    if value and value.startswith("/ui") and "//" not in value and "\\" not in value:
        return value
    return "/ui"


async def login_form(request: web.Request) -> web.Response:
    """The login form (only meaningful with ``read_auth``)."""
    return _page("login.html", request, next=_next(request.query.get("next")), error=None)


async def login(request: web.Request) -> web.StreamResponse:
    """Check the job secret from the form; set the signed session cookie (HttpOnly, Strict, 12 h)."""
    services = request.app[SERVICES]
    form = await request.post()
    given = form.get("secret")
    target = _next(str(form.get("next", "")))
    try:
        check_secret(
            Scope.JOB,
            {"X-Job-Secret": given if isinstance(given, str) else ""},
            services.secrets(),
            read_auth=True,
        )
    except WarmupdError as exc:
        return _page("login.html", request, exc.http_status, next=target, error=exc.message)
    job_secret = services.secrets().job
    assert job_secret is not None  # check_secret fails closed without it
    response = _see_other(target)
    response.set_cookie(
        session.COOKIE,
        session.issue(job_secret, request.app[CLOCK].wall_ms()),
        max_age=session.MAX_AGE_S,
        path="/ui",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """Clear the session cookie and go back to the login form."""
    response = _see_other("/ui/login")
    response.del_cookie(session.COOKIE, path="/ui")
    return response


async def static(request: web.Request) -> web.Response:
    """A static file of the package (CSS, JS, favicon); unknown names are 404."""
    found = request.app[STATIC].get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound
    body, ctype = found
    return web.Response(body=body, content_type=ctype, headers={"Cache-Control": "max-age=300"})


async def favicon(request: web.Request) -> web.StreamResponse:
    """Browsers ask ``/favicon.ico`` on their own; point them at the SVG icon."""
    return web.Response(status=301, headers={"Location": "/ui/static/favicon.svg"})


def add_ui(app: web.Application, *, clock: Clock) -> None:
    """Mount the dashboard on ``app`` (built by :func:`warmupd.http.create_app`).

    Every route goes through the HTTP edge (request id, errors, metrics) with the security
    headers, and so do requests under ``/ui`` that no route matches.
    """
    app[CLOCK] = clock
    app[STATIC] = _load_static()
    services = app[SERVICES]
    router = app.router

    def add(method: str, path: str, handler: Page, headers: Mapping[str, str] | None) -> None:
        route = edge(services, path, handler, headers=headers)
        if method == "GET":
            router.add_get(path, route)  # and HEAD, as aiohttp's add_get does
        else:
            router.add_route(method, path, route)

    for method, path, handler in (
        ("GET", "/ui", _guard(overview)),
        ("GET", "/ui/runs", _guard(run_log)),
        ("GET", "/ui/runs/{id}", _guard(run_detail)),
        ("GET", "/ui/comparisons", _guard(comparison_search)),
        ("GET", "/ui/comparisons/{slug}", _guard(comparison_page)),
        ("GET", "/ui/login", login_form),
        ("POST", "/ui/login", login),
        ("*", "/ui/logout", logout),
        ("GET", "/ui/static/{name}", static),
    ):
        add(method, path, handler, SECURITY_HEADERS)
    add("GET", "/favicon.ico", favicon, None)
    add_unmatched(app, "/ui", SECURITY_HEADERS)


__all__ = ["SECURITY_HEADERS", "Services", "add_ui"]
