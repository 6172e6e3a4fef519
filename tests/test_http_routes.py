"""Every route of SPEC §9 × every auth case, and every documented status code, against fakes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.http_fakes import JOB_SECRET, KNOWN_JOBS, WARMUP_SECRET, FakeServices
from warmupd.errors import AlreadyRunning, LockedElsewhere, QueueFull
from warmupd.http import create_app
from warmupd.metrics import CONTENT_TYPE, Metrics
from warmupd.models import RunStatus

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]

GOOD_COMPARISON = {
    "terms": ["tea", "coffee"],
    "timeframe": "today 12-m",
    "series": [{"date": "2026-01-01", "tea": 10, "coffee": 20}],
}


@pytest.fixture
def fakes() -> FakeServices:
    return FakeServices()


@pytest.fixture
def make_client(aiohttp_client: Any, fakes: FakeServices) -> ClientFactory:
    async def make(**kwargs: Any) -> TestClient[Any, Any]:
        app = create_app(fakes.status, **fakes.app_kwargs(), **kwargs)
        return await aiohttp_client(app)  # type: ignore[no-any-return]

    return make


# (method, path, json body, auth scope) — one request per route that succeeds with the right secret.
JOB_ROUTES = [
    ("POST", "/api/jobs/warmup-forecasts", None, 202),
    ("PUT", "/api/comparisons/tea-vs-coffee", GOOD_COMPARISON, 200),
    ("POST", "/api/comparisons/tea-vs-coffee/views", {"count": 2}, 200),
    ("POST", "/api/jobs/housekeeping/pause", None, 200),
    ("POST", "/api/jobs/housekeeping/resume", None, 200),
]
WARMUP_ROUTES = [("POST", "/api/comparison/warmup", {"slug": "iphone-vs-android"}, 202)]
READ_ROUTES = [
    ("GET", "/api/status", None, 200),
    ("GET", "/api/jobs", None, 200),
    ("GET", "/api/jobs/runs", None, 200),
    ("GET", "/api/jobs/runs/1", None, 200),
    ("GET", "/api/comparison/iphone-vs-android/status", None, 200),
    ("GET", "/api/comparison/iphone-vs-android", None, 200),
]
OPEN_ROUTES = [
    ("GET", "/healthz", None, 200),
    ("GET", "/readyz", None, 200),
    ("GET", "/metrics", None, 200),
    ("GET", "/api/openapi.json", None, 200),
]


async def call(
    client: TestClient[Any, Any], method: str, path: str, body: Any, headers: dict[str, str]
) -> tuple[int, Any, Any]:
    resp = await client.request(method, path, json=body, headers=headers)
    assert resp.headers.get("X-Request-Id")
    if resp.content_type == "application/json":
        return resp.status, await resp.json(), resp.headers
    return resp.status, await resp.text(), resp.headers


@pytest.mark.parametrize(("method", "path", "body", "ok"), JOB_ROUTES)
@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, 401),
        ({"X-Job-Secret": "wrong"}, 401),
        ({"X-Job-Secret": WARMUP_SECRET}, 401),  # the warmup secret never opens job routes
        ({"Authorization": "Bearer wrong"}, 401),
        ({"X-Job-Secret": JOB_SECRET}, None),
        ({"Authorization": f"Bearer {JOB_SECRET}"}, None),
    ],
)
async def test_job_routes_auth(
    make_client: ClientFactory,
    fakes: FakeServices,
    method: str,
    path: str,
    body: Any,
    ok: int,
    headers: dict[str, str],
    expected: int | None,
) -> None:
    client = await make_client()
    status, data, _ = await call(client, method, path, body, headers)
    assert status == (expected or ok), data
    if expected:
        assert data["error"] == "unauthorized"
        assert JOB_SECRET not in data["message"]
        assert fakes.recorder.writes == []
    else:
        assert len(fakes.recorder.writes) == 1


@pytest.mark.parametrize(("method", "path", "body", "ok"), JOB_ROUTES + WARMUP_ROUTES)
async def test_unset_secret_fails_closed(
    make_client: ClientFactory, fakes: FakeServices, method: str, path: str, body: Any, ok: int
) -> None:
    fakes.unset(job=True, warmup=True)
    client = await make_client()
    for headers in ({}, {"X-Job-Secret": ""}, {"X-Job-Secret": "anything"}):
        status, data, _ = await call(client, method, path, body, headers)
        assert (status, data["error"]) == (503, "secret_not_configured")
    assert fakes.recorder.writes == []


async def test_job_secret_unset_but_warmup_set(
    make_client: ClientFactory, fakes: FakeServices
) -> None:
    fakes.unset(job=True)
    client = await make_client()
    status, data, _ = await call(
        client, "POST", "/api/jobs/housekeeping", None, {"X-Job-Secret": WARMUP_SECRET}
    )
    assert (status, data["error"]) == (503, "secret_not_configured")
    status, _, _ = await call(
        client,
        "POST",
        "/api/comparison/warmup",
        {"slug": "iphone-vs-android"},
        {"X-Warmup-Secret": WARMUP_SECRET},
    )
    assert status == 202


@pytest.mark.parametrize(("method", "path", "body", "ok"), WARMUP_ROUTES)
@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, 401),
        ({"X-Warmup-Secret": "wrong"}, 401),
        ({"X-Warmup-Secret": WARMUP_SECRET}, None),
        ({"X-Warmup-Secret": JOB_SECRET}, None),
        ({"X-Job-Secret": JOB_SECRET}, None),
        ({"Authorization": f"Bearer {WARMUP_SECRET}"}, None),
    ],
)
async def test_warmup_route_auth(
    make_client: ClientFactory,
    fakes: FakeServices,
    method: str,
    path: str,
    body: Any,
    ok: int,
    headers: dict[str, str],
    expected: int | None,
) -> None:
    client = await make_client()
    status, data, _ = await call(client, method, path, body, headers)
    assert status == (expected or ok), data
    assert len(fakes.recorder.writes) == (0 if expected else 1)


@pytest.mark.parametrize(("method", "path", "body", "ok"), READ_ROUTES)
@pytest.mark.parametrize(
    ("read_auth", "headers", "expected"),
    [
        (False, {}, None),
        (False, {"X-Job-Secret": "wrong"}, None),  # read routes ignore headers when open
        (True, {}, 401),
        (True, {"X-Job-Secret": "wrong"}, 401),
        (True, {"X-Job-Secret": JOB_SECRET}, None),
        (True, {"X-Warmup-Secret": WARMUP_SECRET}, None),
        (True, {"Authorization": f"Bearer {JOB_SECRET}"}, None),
    ],
)
async def test_read_routes_auth(
    make_client: ClientFactory,
    method: str,
    path: str,
    body: Any,
    ok: int,
    read_auth: bool,
    headers: dict[str, str],
    expected: int | None,
) -> None:
    client = await make_client(read_auth=read_auth)
    status, data, _ = await call(client, method, path, body, headers)
    assert status == (expected or ok), data


@pytest.mark.parametrize(("method", "path", "body", "ok"), READ_ROUTES)
async def test_read_auth_with_no_secret_fails_closed(
    make_client: ClientFactory, fakes: FakeServices, method: str, path: str, body: Any, ok: int
) -> None:
    fakes.unset(job=True, warmup=True)
    client = await make_client(read_auth=True)
    status, data, _ = await call(client, method, path, body, {"X-Job-Secret": "x"})
    assert (status, data["error"]) == (503, "secret_not_configured")


@pytest.mark.parametrize(("method", "path", "body", "ok"), OPEN_ROUTES)
async def test_open_routes_need_nothing(
    make_client: ClientFactory, fakes: FakeServices, method: str, path: str, body: Any, ok: int
) -> None:
    fakes.unset(job=True, warmup=True)
    client = await make_client(read_auth=True)
    status, _, _ = await call(client, method, path, body, {})
    assert status == ok


async def test_secret_reload_takes_effect_at_once(
    make_client: ClientFactory, fakes: FakeServices
) -> None:
    client = await make_client()
    hdr = {"X-Job-Secret": JOB_SECRET}
    assert (await call(client, "POST", "/api/jobs/housekeeping", None, hdr))[0] == 202
    fakes.secrets = type(fakes.secrets)(job="rotated-secret-value-1234", warmup=None)
    assert (await call(client, "POST", "/api/jobs/housekeeping", None, hdr))[0] == 401


# --------------------------------------------------------------------------- job triggers

J = {"X-Job-Secret": JOB_SECRET}


async def test_trigger_202_location_and_body(
    make_client: ClientFactory, fakes: FakeServices
) -> None:
    client = await make_client()
    status, data, headers = await call(
        client, "POST", "/api/jobs/warmup-forecasts", {"limit": 10, "concurrency": 3}, J
    )
    assert status == 202
    run_id = data["runId"]
    assert data == {
        "runId": run_id,
        "job": "warmup-forecasts",
        "status": "running",
        "statusUrl": f"/api/jobs/runs/{run_id}",
    }
    assert headers["Location"] == f"/api/jobs/runs/{run_id}"
    assert fakes.recorder.writes == [("trigger", ("warmup-forecasts", "http", 10, 3))]


async def test_trigger_wait_returns_finished_record(make_client: ClientFactory) -> None:
    client = await make_client()
    status, data, _ = await call(client, "POST", "/api/jobs/housekeeping?wait=true", None, J)
    assert status == 200
    assert data["status"] == "success"
    assert data["job"] == "housekeeping"
    assert data["startedAt"].endswith("Z")
    assert data["finishedAt"].endswith("Z")
    assert set(data) == {
        "id", "job", "status", "reason", "trigger", "node", "startedAt", "finishedAt",
        "durationMs", "processed", "skipped", "failed", "errors", "metadata",
    }  # fmt: skip


async def test_pause_and_resume_answer_the_state(
    make_client: ClientFactory, fakes: FakeServices
) -> None:
    client = await make_client()
    status, data, _ = await call(client, "POST", "/api/jobs/housekeeping/pause", None, J)
    assert (status, data["paused"], data["job"]) == (200, True, "housekeeping")
    assert data["pausedAt"].endswith("Z")
    status, data, _ = await call(client, "POST", "/api/jobs/housekeeping/resume", None, J)
    assert (status, data["paused"], data["pausedAt"]) == (200, False, None)
    status, data, _ = await call(client, "POST", "/api/jobs/no-such-job/pause", None, J)
    assert (status, data["error"]) == (404, "not_found")
    status, data, _ = await call(client, "GET", "/api/jobs/housekeeping/pause", None, J)
    assert status == 405
    assert fakes.recorder.writes[:2] == [
        ("set_paused", ("housekeeping", True)),
        ("set_paused", ("housekeeping", False)),
    ]


async def test_trigger_unknown_job_404(make_client: ClientFactory) -> None:
    client = await make_client()
    status, data, _ = await call(client, "POST", "/api/jobs/no-such-job", None, J)
    assert (status, data["error"]) == (404, "not_found")


@pytest.mark.parametrize(
    ("exc", "code", "run_id"),
    [
        (AlreadyRunning("busy here", retry_after_s=7, run_id=42), "already_running", 42),
        (LockedElsewhere("held by another node", retry_after_s=30), "locked_elsewhere", None),
    ],
)
async def test_trigger_429(
    make_client: ClientFactory, fakes: FakeServices, exc: Exception, code: str, run_id: int | None
) -> None:
    fakes.recorder.errors["trigger"] = exc  # type: ignore[assignment]
    client = await make_client()
    status, data, headers = await call(client, "POST", "/api/jobs/warmup-forecasts", None, J)
    assert (status, data["error"]) == (429, code)
    assert headers["Retry-After"] == str(exc.retry_after_s)  # type: ignore[attr-defined]
    assert data.get("runId") == run_id


async def test_client_disconnect_never_cancels_the_run(
    make_client: ClientFactory, fakes: FakeServices
) -> None:
    fakes.jobs.block_waits = True
    client = await make_client()
    request = asyncio.ensure_future(client.post("/api/jobs/warmup-forecasts?wait=true", headers=J))
    while not fakes.jobs.handles:
        await asyncio.sleep(0)
    handle = fakes.jobs.handles[0]
    await handle.waiting.wait()
    request.cancel()  # the client gives up and drops the connection
    with pytest.raises(asyncio.CancelledError):
        await request
    # A second trigger meanwhile sees the run still going.
    status, data, _ = await call(client, "POST", "/api/jobs/warmup-forecasts", None, J)
    assert (status, data["runId"]) == (429, handle.run_id)
    assert handle.finish is not None
    handle.finish.set()
    await asyncio.sleep(0)
    assert handle.completed
    assert not handle.cancelled


# --------------------------------------------------------------------------- runs


async def test_runs_list_filters_and_paging(
    make_client: ClientFactory, fakes: FakeServices
) -> None:
    client = await make_client()
    status, data, _ = await call(client, "GET", "/api/jobs/runs?limit=2", None, {})
    assert status == 200
    assert [r["id"] for r in data["runs"]] == [5, 4]
    assert data["nextBefore"] == 4
    status, data, _ = await call(client, "GET", "/api/jobs/runs?limit=2&before=4", None, {})
    assert [r["id"] for r in data["runs"]] == [3, 2]
    q = "/api/jobs/runs?job=housekeeping&status=success"
    status, data, _ = await call(client, "GET", q, None, {})
    assert {r["job"] for r in data["runs"]} == {"housekeeping"}
    assert data["nextBefore"] is None
    assert ("runs", ("housekeeping", "success", 50, None)) in fakes.recorder.calls


async def test_run_detail_and_404(make_client: ClientFactory) -> None:
    client = await make_client()
    status, data, _ = await call(client, "GET", "/api/jobs/runs/3", None, {})
    assert (status, data["id"]) == (200, 3)
    status, data, _ = await call(client, "GET", "/api/jobs/runs/999", None, {})
    assert (status, data["error"]) == (404, "not_found")


async def test_jobs_list(make_client: ClientFactory) -> None:
    client = await make_client()
    status, data, _ = await call(client, "GET", "/api/jobs", None, {})
    assert status == 200
    assert [j["name"] for j in data["jobs"]] == list(KNOWN_JOBS)


# --------------------------------------------------------------------------- comparisons

W = {"X-Warmup-Secret": WARMUP_SECRET}


async def test_warmup_codes(make_client: ClientFactory, fakes: FakeServices) -> None:
    client = await make_client()
    path = "/api/comparison/warmup"
    status, data, _ = await call(client, "POST", path, {"slug": "iphone-vs-android"}, W)
    assert status == 202
    assert data["status"] == "queued"
    assert data["statusUrl"] == "/api/comparison/iphone-vs-android/status"
    status, data, _ = await call(client, "POST", path, {"slug": "tea-vs-coffee"}, W)
    assert (status, data["status"]) == (200, "ready")
    status, data, _ = await call(client, "POST", path, {"slug": "nope"}, W)
    assert (status, data["error"]) == (404, "not_found")
    body = {"slug": "iphone-vs-android", "dataHash": "0" * 16}
    status, data, _ = await call(client, "POST", path, body, W)
    assert (status, data["error"]) == (409, "stale_data_hash")
    fakes.recorder.errors["request_warmup"] = QueueFull("queue full", retry_after_s=2)
    status, data, headers = await call(client, "POST", path, {"slug": "tea-vs-coffee"}, W)
    assert (status, data["error"], headers["Retry-After"]) == (429, "queue_full", "2")


async def test_comparison_reads(make_client: ClientFactory) -> None:
    client = await make_client()
    status, data, _ = await call(client, "GET", "/api/comparison/iphone-vs-android", None, {})
    assert (status, data["needsWarmup"], data["freshness"]) == (200, True, "missing")
    status, data, _ = await call(client, "GET", "/api/comparison/tea-vs-coffee/status", None, {})
    assert (status, data["warmup"]) == (200, "ready")
    for path in ("/api/comparison/nope", "/api/comparison/nope/status"):
        status, data, _ = await call(client, "GET", path, None, {})
        assert (status, data["error"]) == (404, "not_found")


async def test_upsert_201_then_200(make_client: ClientFactory, fakes: FakeServices) -> None:
    client = await make_client()
    status, data, _ = await call(client, "PUT", "/api/comparisons/new-one", GOOD_COMPARISON, J)
    assert status == 201
    assert data["slug"] == "new-one"
    assert len(data["dataHash"]) == 16
    status, data2, _ = await call(client, "PUT", "/api/comparisons/new-one", GOOD_COMPARISON, J)
    assert (status, data2["dataHash"]) == (200, data["dataHash"])


async def test_views(make_client: ClientFactory, fakes: FakeServices) -> None:
    client = await make_client()
    path = "/api/comparisons/tea-vs-coffee/views"
    status, data, _ = await call(client, "POST", path, None, J)
    assert (status, data["viewCount"]) == (200, 1)
    body = {"count": 5, "at": "2026-01-02T03:04:05Z"}
    status, data, _ = await call(client, "POST", path, body, J)
    assert (status, data["viewCount"]) == (200, 6)
    assert fakes.recorder.writes[-1] == ("add_views", ("tea-vs-coffee", 5, 1767323045000))
    status, data, _ = await call(client, "POST", "/api/comparisons/nope/views", None, J)
    assert (status, data["error"]) == (404, "not_found")


# --------------------------------------------------------------------------- edges


async def test_readyz_503_and_healthz(make_client: ClientFactory, fakes: FakeServices) -> None:
    client = await make_client()
    fakes.status.is_ready = False
    status, data, _ = await call(client, "GET", "/readyz", None, {})
    assert (status, data["status"]) == (503, "not_ready")
    status, data, _ = await call(client, "GET", "/healthz", None, {})
    assert (status, data) == (200, {"status": "ok"})


async def test_internal_error_hides_the_trace(
    make_client: ClientFactory, fakes: FakeServices, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom() -> dict[str, Any]:
        raise RuntimeError("secret-internals")

    fakes.status.status = boom  # type: ignore[method-assign]
    client = await make_client()
    status, data, headers = await call(client, "GET", "/api/status", None, {})
    assert (status, data["error"]) == (500, "internal")
    assert "secret-internals" not in data["message"]
    assert headers["X-Request-Id"] in data["message"]


async def test_404_405_envelopes_and_request_id(make_client: ClientFactory) -> None:
    client = await make_client()
    status, data, _ = await call(client, "GET", "/nope", None, {})
    assert (status, data["error"]) == (404, "not_found")
    status, data, headers = await call(client, "DELETE", "/api/jobs/housekeeping", None, {})
    assert (status, data["error"], headers["Allow"]) == (405, "method_not_allowed", "POST")
    resp = await client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert resp.headers["X-Request-Id"] == "abc-123"
    resp = await client.get("/healthz", headers={"X-Request-Id": "x" * 100})
    assert len(resp.headers["X-Request-Id"]) == 16


async def test_metrics_count_route_templates(make_client: ClientFactory) -> None:
    metrics = Metrics()
    client = await make_client(metrics=metrics)
    await client.get("/api/comparison/iphone-vs-android")
    await client.get("/api/comparison/nope")
    await client.get("/definitely/not/here")
    resp = await client.get("/metrics")
    assert resp.headers["Content-Type"] == CONTENT_TYPE
    text = await resp.text()
    assert 'warmupd_http_requests_total{route="/api/comparison/{slug}",code="200"} 1' in text, text
    assert 'warmupd_http_requests_total{route="/api/comparison/{slug}",code="404"} 1' in text
    assert 'route="unmatched",code="404"' in text
    assert "iphone-vs-android" not in text
    assert 'warmupd_http_request_duration_seconds_count{route="/api/comparison/{slug}"} 2' in text


def test_run_status_values_match_the_document() -> None:
    from warmupd.openapi import openapi_document

    doc = openapi_document()
    assert doc["components"]["schemas"]["RunRecord"]["properties"]["status"]["enum"] == [
        s.value for s in RunStatus
    ]
