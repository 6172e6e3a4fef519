"""SPEC §12: bad input → a 4xx envelope naming the problem, nothing written, the daemon serving."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from yarl import URL

from tests.http_fakes import JOB_SECRET, WARMUP_SECRET, FakeServices
from warmupd.http import create_app

J = {"X-Job-Secret": JOB_SECRET, "Content-Type": "application/json"}
W = {"X-Warmup-Secret": WARMUP_SECRET, "Content-Type": "application/json"}
MAX_BODY = 1_048_576
PUT = "/api/comparisons/tea-vs-coffee"


def comparison(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "terms": ["tea", "coffee"],
        "timeframe": "today 12-m",
        "series": [
            {"date": "2026-01-01", "tea": 10, "coffee": 20},
            {"date": "2026-01-02", "tea": 11, "coffee": 21},
        ],
    }
    body.update(overrides)
    return body


def point(i: int, **overrides: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"date": f"2026-01-{i + 1:02d}", "tea": 1, "coffee": 2}
    p.update(overrides)
    return p


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


# (id, method, path, headers, raw body, status, error code, text the message must contain)
CASES: list[tuple[str, str, str, dict[str, str], bytes | None, int, str, str]] = [
    # malformed JSON
    ("truncated", "PUT", PUT, J, b'{"terms": ["a"', 400, "invalid_request", "body"),
    ("trailing-comma", "PUT", PUT, J, b'{"terms": [],}', 400, "invalid_request", "body"),
    ("not-json", "PUT", PUT, J, b"terms=a&b", 400, "invalid_request", "body"),
    ("bad-utf8", "PUT", PUT, J, b'{"terms": "\xff\xfe"}', 400, "invalid_request", "body"),
    ("nan-literal", "PUT", PUT, J, b'{"terms": NaN}', 400, "invalid_request", "NaN"),
    (
        "infinity-value",
        "PUT",
        PUT,
        J,
        js(comparison())[:-1].replace(b'"tea": 10', b'"tea": Infinity') + b"}",
        400,
        "invalid_request",
        "Infinity",
    ),
    (
        "neg-infinity",
        "POST",
        "/api/jobs/housekeeping",
        J,
        b'{"limit": -Infinity}',
        400,
        "invalid_request",
        "Infinity",
    ),
    (
        "deep-nesting",
        "PUT",
        PUT,
        J,
        b"[" * 20_000 + b"]" * 20_000,
        400,
        "invalid_request",
        "body",
    ),
    ("body-is-array", "PUT", PUT, J, js([1, 2]), 400, "invalid_request", "body"),
    (
        "body-is-string",
        "POST",
        "/api/comparison/warmup",
        W,
        js("slug"),
        400,
        "invalid_request",
        "body",
    ),
    ("empty-required-body", "PUT", PUT, J, b"", 400, "invalid_request", "body"),
    # wrong types
    (
        "terms-string",
        "PUT",
        PUT,
        J,
        js(comparison(terms="tea,coffee")),
        400,
        "invalid_request",
        "terms",
    ),
    (
        "terms-three",
        "PUT",
        PUT,
        J,
        js(comparison(terms=["a", "b", "c"])),
        400,
        "invalid_request",
        "terms",
    ),
    (
        "term-number",
        "PUT",
        PUT,
        J,
        js(comparison(terms=["a", 5])),
        400,
        "invalid_request",
        "terms[1]",
    ),
    (
        "term-empty",
        "PUT",
        PUT,
        J,
        js(comparison(terms=["", "b"])),
        400,
        "invalid_request",
        "terms[0]",
    ),
    (
        "terms-equal",
        "PUT",
        PUT,
        J,
        js(comparison(terms=["a", "a"])),
        400,
        "invalid_request",
        "terms",
    ),
    (
        "timeframe-int",
        "PUT",
        PUT,
        J,
        js(comparison(timeframe=12)),
        400,
        "invalid_request",
        "timeframe",
    ),
    (
        "series-object",
        "PUT",
        PUT,
        J,
        js(comparison(series={"a": 1})),
        400,
        "invalid_request",
        "series",
    ),
    (
        "value-string",
        "PUT",
        PUT,
        J,
        js(comparison(series=[point(0, tea="10")])),
        400,
        "invalid_request",
        "series[0].tea",
    ),
    (
        "value-bool",
        "PUT",
        PUT,
        J,
        js(comparison(series=[point(0, coffee=True)])),
        400,
        "invalid_request",
        "series[0].coffee",
    ),
    (
        "limit-string",
        "POST",
        "/api/jobs/housekeeping",
        J,
        js({"limit": "10"}),
        400,
        "invalid_request",
        "limit",
    ),
    (
        "limit-float",
        "POST",
        "/api/jobs/housekeeping",
        J,
        js({"limit": 10.5}),
        400,
        "invalid_request",
        "limit",
    ),
    # `null` for an optional field means absent (SPEC §17), so only a required one is refused.
    (
        "slug-null",
        "POST",
        "/api/comparison/warmup",
        W,
        js({"slug": None}),
        400,
        "invalid_request",
        "slug",
    ),
    (
        "at-number",
        "POST",
        "/api/comparisons/tea-vs-coffee/views",
        J,
        js({"at": 12}),
        400,
        "invalid_request",
        "at",
    ),
    (
        "at-garbage",
        "POST",
        "/api/comparisons/tea-vs-coffee/views",
        J,
        js({"at": "yesterday"}),
        400,
        "invalid_request",
        "at",
    ),
    (
        "datahash-short",
        "POST",
        "/api/comparison/warmup",
        W,
        js({"slug": "tea-vs-coffee", "dataHash": "abc"}),
        400,
        "invalid_request",
        "dataHash",
    ),
    # out-of-range numbers
    (
        "value-above-100",
        "PUT",
        PUT,
        J,
        js(comparison(series=[point(0, tea=100.5)])),
        400,
        "invalid_request",
        "series[0].tea",
    ),
    (
        "value-negative",
        "PUT",
        PUT,
        J,
        js(comparison(series=[point(0, coffee=-1)])),
        400,
        "invalid_request",
        "series[0].coffee",
    ),
    (
        "limit-zero",
        "POST",
        "/api/jobs/housekeeping",
        J,
        js({"limit": 0}),
        400,
        "invalid_request",
        "limit",
    ),
    (
        "limit-1001",
        "POST",
        "/api/jobs/housekeeping",
        J,
        js({"limit": 1001}),
        400,
        "invalid_request",
        "limit",
    ),
    (
        "concurrency-65",
        "POST",
        "/api/jobs/housekeeping",
        J,
        js({"concurrency": 65}),
        400,
        "invalid_request",
        "concurrency",
    ),
    (
        "huge-int",
        "POST",
        "/api/jobs/housekeeping",
        J,
        b'{"limit": ' + b"9" * 5000 + b"}",
        400,
        "invalid_request",
        "body",
    ),
    (
        "count-million-plus",
        "POST",
        "/api/comparisons/tea-vs-coffee/views",
        J,
        js({"count": 1_000_001}),
        400,
        "invalid_request",
        "count",
    ),
    (
        "count-negative",
        "POST",
        "/api/comparisons/tea-vs-coffee/views",
        J,
        js({"count": -5}),
        400,
        "invalid_request",
        "count",
    ),
    (
        "runs-limit-501",
        "GET",
        "/api/jobs/runs?limit=501",
        {},
        None,
        400,
        "invalid_request",
        "limit",
    ),
    ("runs-limit-neg", "GET", "/api/jobs/runs?limit=-1", {}, None, 400, "invalid_request", "limit"),
    (
        "runs-before-text",
        "GET",
        "/api/jobs/runs?before=abc",
        {},
        None,
        400,
        "invalid_request",
        "before",
    ),
    (
        "runs-status-bad",
        "GET",
        "/api/jobs/runs?status=exploded",
        {},
        None,
        400,
        "invalid_request",
        "status",
    ),
    (
        "runs-limit-twice",
        "GET",
        "/api/jobs/runs?limit=1&limit=2",
        {},
        None,
        400,
        "invalid_request",
        "limit",
    ),
    ("run-id-zero", "GET", "/api/jobs/runs/0", {}, None, 400, "invalid_request", "id"),
    ("run-id-text", "GET", "/api/jobs/runs/1%20OR%201=1", {}, None, 400, "invalid_request", "id"),
    (
        "wait-bogus",
        "POST",
        "/api/jobs/housekeeping?wait=maybe",
        J,
        None,
        400,
        "invalid_request",
        "wait",
    ),
    # unknown fields
    ("unknown-top", "PUT", PUT, J, js(comparison(color="red")), 400, "invalid_request", "color"),
    (
        "unknown-point",
        "PUT",
        PUT,
        J,
        js(comparison(series=[point(0, milk=3)])),
        400,
        "invalid_request",
        "series[0].milk",
    ),
    (
        "unknown-trigger",
        "POST",
        "/api/jobs/housekeeping",
        J,
        js({"force": True}),
        400,
        "invalid_request",
        "force",
    ),
    (
        "unknown-warmup",
        "POST",
        "/api/comparison/warmup",
        W,
        js({"slug": "a", "x": 1}),
        400,
        "invalid_request",
        "x",
    ),
    (
        "unknown-query",
        "GET",
        "/api/jobs/runs?stauts=failed",
        {},
        None,
        400,
        "invalid_request",
        "stauts",
    ),
    (
        "missing-series",
        "PUT",
        PUT,
        J,
        js({"terms": ["a", "b"], "timeframe": "x"}),
        400,
        "invalid_request",
        "series",
    ),
    ("missing-slug", "POST", "/api/comparison/warmup", W, js({}), 400, "invalid_request", "slug"),
    # bad slugs
    (
        "slug-upper",
        "PUT",
        "/api/comparisons/Tea-vs-Coffee",
        J,
        js(comparison()),
        400,
        "invalid_request",
        "slug",
    ),
    (
        "slug-traversal-encoded",
        "PUT",
        "/api/comparisons/..%2F..%2Fetc%2Fpasswd",
        J,
        js(comparison()),
        400,
        "invalid_request",
        "slug",
    ),
    (
        "slug-traversal-dots",
        "GET",
        "/api/comparison/..%2e/status",
        {},
        None,
        400,
        "invalid_request",
        "slug",
    ),
    (
        "slug-backslash",
        "GET",
        "/api/comparison/..%5C..%5Cwin.ini",
        {},
        None,
        400,
        "invalid_request",
        "slug",
    ),
    (
        "slug-sql",
        "GET",
        "/api/comparison/x%27%20OR%20%271%27=%271",
        {},
        None,
        400,
        "invalid_request",
        "slug",
    ),
    (
        "slug-sql-drop",
        "POST",
        "/api/comparisons/a%3BDROP%20TABLE%20comparisons/views",
        J,
        None,
        400,
        "invalid_request",
        "slug",
    ),
    (
        "slug-too-long",
        "GET",
        "/api/comparison/" + "a" * 201,
        {},
        None,
        400,
        "invalid_request",
        "slug",
    ),
    ("slug-nul", "GET", "/api/comparison/ab%00cd", {}, None, 400, "invalid_request", "slug"),
    ("slug-unicode", "GET", "/api/comparison/caf%C3%A9", {}, None, 400, "invalid_request", "slug"),
    (
        "body-slug-traversal",
        "POST",
        "/api/comparison/warmup",
        W,
        js({"slug": "../../etc/passwd"}),
        400,
        "invalid_request",
        "slug",
    ),
    (
        "body-slug-sql",
        "POST",
        "/api/comparison/warmup",
        W,
        js({"slug": "'; DROP TABLE x;--"}),
        400,
        "invalid_request",
        "slug",
    ),
    (
        "job-traversal",
        "POST",
        "/api/jobs/..%2Fhousekeeping",
        J,
        None,
        400,
        "invalid_request",
        "job",
    ),
    # dates
    (
        "dates-unsorted",
        "PUT",
        PUT,
        J,
        js(comparison(series=[point(1), point(0)])),
        400,
        "invalid_request",
        "series[1].date",
    ),
    (
        "dates-duplicate",
        "PUT",
        PUT,
        J,
        js(comparison(series=[point(0), point(0)])),
        400,
        "invalid_request",
        "series[1].date",
    ),
    (
        "date-invalid",
        "PUT",
        PUT,
        J,
        js(comparison(series=[point(0, date="2026-02-30")])),
        400,
        "invalid_request",
        "series[0].date",
    ),
    (
        "date-missing",
        "PUT",
        PUT,
        J,
        js(comparison(series=[{"tea": 1, "coffee": 2}])),
        400,
        "invalid_request",
        "series[0].date",
    ),
    # huge series
    (
        "series-5001",
        "PUT",
        PUT,
        J,
        js(
            comparison(
                series=[
                    {"date": f"{2000 + i // 365}-01-01", "tea": 1, "coffee": 1} for i in range(5001)
                ]
            )
        ),
        400,
        "invalid_request",
        "series",
    ),
    # content type and size
    (
        "text-plain",
        "PUT",
        PUT,
        {**J, "Content-Type": "text/plain"},
        js(comparison()),
        415,
        "unsupported_media_type",
        "application/json",
    ),
    (
        "form",
        "POST",
        "/api/comparison/warmup",
        {**W, "Content-Type": "application/x-www-form-urlencoded"},
        b"slug=tea-vs-coffee",
        415,
        "unsupported_media_type",
        "application/json",
    ),
    (
        "no-content-type-trigger",
        "POST",
        "/api/jobs/housekeeping",
        {"X-Job-Secret": JOB_SECRET, "Content-Type": "application/octet-stream"},
        b'{"limit": 1}',
        415,
        "unsupported_media_type",
        "application/json",
    ),
    (
        "oversize",
        "PUT",
        PUT,
        J,
        b'{"pad": "' + b"x" * (MAX_BODY + 10) + b'"}',
        413,
        "payload_too_large",
        "bytes",
    ),
]


@pytest.fixture
async def served(aiohttp_client: Any) -> tuple[Any, FakeServices]:
    fakes = FakeServices()
    app = create_app(fakes.status, **fakes.app_kwargs(), max_body_bytes=MAX_BODY)
    return await aiohttp_client(app), fakes


def test_battery_is_big_enough() -> None:
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "code", "names"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_bad_input(
    served: tuple[Any, FakeServices],
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    status: int,
    code: str,
    names: str,
) -> None:
    client, fakes = served
    url = client.make_url("/").join(URL(path, encoded=True))
    data_ = io.BytesIO(body) if body is not None else None
    resp = await client.session.request(method, url, data=data_, headers=headers)
    data = await resp.json()
    assert resp.status == status, data
    assert resp.headers["X-Request-Id"]
    assert set(data) == {"error", "message"}
    assert data["error"] == code
    assert names in data["message"], data["message"]
    assert fakes.recorder.writes == []
    health = await client.get("/healthz")
    assert health.status == 200


async def test_oversize_without_content_length_is_cut_while_reading(
    served: tuple[Any, FakeServices],
) -> None:
    client, fakes = served

    async def chunks() -> Any:
        for _ in range(MAX_BODY // 4096 + 10):
            yield b"x" * 4096

    resp = await client.put(PUT, data=chunks(), headers=J)
    assert resp.status == 413
    assert (await resp.json())["error"] == "payload_too_large"
    assert fakes.recorder.writes == []
