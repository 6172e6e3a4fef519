"""SPEC §17 JSON input: null = absent, duplicate keys and lone surrogates refused, never a 500.

Each test here is a finding of issue #15 (or of the property tests written for it) and failed on
the code before the fix: the note on each says what it answered then.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from tests.http_fakes import JOB_SECRET, WARMUP_SECRET, FakeServices
from warmupd.errors import InvalidRequest
from warmupd.http import create_app
from warmupd.importer import import_lines
from warmupd.json_input import decode_json
from warmupd.state.sqlite import SqliteDatabase
from warmupd.state.store import ComparisonStore

J = {"X-Job-Secret": JOB_SECRET, "Content-Type": "application/json"}
W = {"X-Warmup-Secret": WARMUP_SECRET, "Content-Type": "application/json"}
PUT = "/api/comparisons/tea-or-coffee"  # a new slug: 201
GOOD = (
    '{"terms": ["tea", "coffee"], "timeframe": "today 12-m", "series": ['
    '{"date": "2026-01-01", "tea": 10, "coffee": 20}]}'
)


@pytest.fixture
async def served(aiohttp_client: Any) -> tuple[Any, FakeServices]:
    fakes = FakeServices()
    app = create_app(fakes.status, **fakes.app_kwargs())
    return await aiohttp_client(app), fakes


async def send(
    client: Any, method: str, path: str, body: str | bytes | None, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    url = client.make_url("/").join(URL(path, encoded=True))
    raw = body.encode() if isinstance(body, str) else body
    resp = await client.session.request(
        method, url, data=io.BytesIO(raw) if raw is not None else None, headers=headers
    )
    return resp.status, await resp.json()


def refused(status: int, body: dict[str, Any], field: str) -> None:
    assert status == 400, body
    assert set(body) == {"error", "message"}
    assert body["error"] == "invalid_request"
    assert body["message"].startswith(f"{field}: "), body["message"]


# ------------------------------------------------------------------ lone surrogates (was: 500)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (GOOD.replace('"tea", "coffee"]', '"\\ud800", "coffee"]'), "terms[0]"),
        (GOOD.replace('"today 12-m"', '"x\\udfff"'), "timeframe"),
        (GOOD.replace('"coffee": 20', '"coffee": 20, "\\udc00": 1'), "series[0]"),
        (GOOD[:-1] + ', "geo": "\\uDBFF"}', "geo"),
        ('{"\\ud800": 1}', "body"),
    ],
    ids=["term", "timeframe", "deep-key", "upper-hex", "top-key"],
)
async def test_lone_surrogate_anywhere_is_400_naming_the_field(
    served: tuple[Any, FakeServices], body: str, field: str
) -> None:
    client, fakes = served
    status, answer = await send(client, "PUT", PUT, body, J)
    refused(status, answer, field)
    assert "Unicode" in answer["message"]
    assert fakes.recorder.writes == []


async def test_a_valid_surrogate_pair_is_an_ordinary_character(
    served: tuple[Any, FakeServices],
) -> None:
    client, fakes = served
    status, answer = await send(client, "PUT", PUT, GOOD.replace("today 12-m", "\\ud83d\\ude00"), J)
    assert status == 201, answer
    (call,) = fakes.recorder.writes
    assert call[1][0].timeframe == "\U0001f600"


# ------------------------------------------------------------------ duplicate keys (was: last wins)


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "field"),
    [
        ("PUT", PUT, J, GOOD[:-1] + ', "terms": ["a", "b"]}', "terms"),
        ("PUT", PUT, J, GOOD.replace('"tea": 10', '"tea": 10, "tea": 11'), "series[0].tea"),
        ("POST", "/api/comparison/warmup", W, '{"slug": "tea-vs-coffee", "slug": "x"}', "slug"),
        ("POST", "/api/jobs/housekeeping", J, '{"limit": 1, "limit": 2}', "limit"),
    ],
    ids=["top", "nested", "warmup", "trigger"],
)
async def test_duplicate_key_is_400_naming_it(
    served: tuple[Any, FakeServices],
    method: str,
    path: str,
    headers: dict[str, str],
    body: str,
    field: str,
) -> None:
    client, fakes = served
    status, answer = await send(client, method, path, body, headers)
    refused(status, answer, field)
    assert "duplicate key" in answer["message"]
    assert fakes.recorder.writes == []


# ------------------------------------------------------------------ null = absent (was: 400)


async def test_null_optional_fields_mean_absent(served: tuple[Any, FakeServices]) -> None:
    client, fakes = served
    body = GOOD[:-1] + ', "category": null, "geo": null}'
    status, answer = await send(client, "PUT", PUT, body, J)
    assert status == 201, answer
    comparison = fakes.recorder.writes[0][1][0]
    assert (comparison.category, comparison.geo) == ("", "")

    views = "/api/comparisons/tea-vs-coffee/views"
    status, answer = await send(client, "POST", views, '{"count": null, "at": null}', J)
    assert (status, answer["viewCount"]) == (200, 1)
    status, _ = await send(
        client, "POST", "/api/comparison/warmup", '{"slug": "tea-vs-coffee", "dataHash": null}', W
    )
    assert status == 200
    status, _ = await send(
        client, "POST", "/api/jobs/housekeeping", '{"limit": null, "concurrency": null}', J
    )
    assert status == 202
    assert [c[0] for c in fakes.recorder.writes] == [
        "upsert",
        "add_views",
        "request_warmup",
        "trigger",
    ]
    assert fakes.recorder.writes[-1][1][2:] == (None, None)


async def test_null_for_a_required_field_is_still_refused(
    served: tuple[Any, FakeServices],
) -> None:
    client, fakes = served
    status, answer = await send(client, "PUT", PUT, GOOD.replace('"today 12-m"', "null"), J)
    refused(status, answer, "timeframe")
    status, answer = await send(client, "PUT", PUT, GOOD[:-1] + ', "color": null}', J)
    refused(status, answer, "color")  # an unknown field stays unknown, null or not
    assert fakes.recorder.writes == []


# ------------------------------------------------------------------ found by the property tests


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/comparisons/tea-vs-coffee%0A", "slug"),
        ("/api/comparisons/abc%0A/views", "slug"),
    ],
)
async def test_slug_with_a_trailing_newline_is_refused(
    served: tuple[Any, FakeServices], path: str, field: str
) -> None:
    # Was 201: `^[a-z0-9-]{1,200}$` with re.match lets "$" match before a final newline.
    client, fakes = served
    status, answer = await send(client, "PUT" if "views" not in path else "POST", path, GOOD, J)
    refused(status, answer, field)
    assert fakes.recorder.writes == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (GOOD.replace('"tea": 10', '"tea": 1' + "0" * 400), "series[0].tea"),
        (GOOD.replace('"2026-01-01"', '"0001-01-01T00:00:00+01:00"'), "series[0].date"),
        (GOOD.replace('"2026-01-01"', '"9999-12-31T23:00:00-05:00"'), "series[0].date"),
    ],
    ids=["int-with-401-digits", "date-before-year-1", "date-after-9999"],
)
async def test_numbers_and_dates_out_of_every_range_are_400_not_500(
    served: tuple[Any, FakeServices], body: str, field: str
) -> None:
    # Were 500: float(10**400) overflows; astimezone past year 1 or 9999 overflows.
    client, fakes = served
    status, answer = await send(client, "PUT", PUT, body, J)
    refused(status, answer, field)
    assert fakes.recorder.writes == []


async def test_dates_before_year_1000_render_with_four_digits(
    served: tuple[Any, FakeServices],
) -> None:
    client, fakes = served
    body = GOOD.replace('"2026-01-01"', '"0999-01-01T00:00:00Z"')
    status, _ = await send(client, "PUT", PUT, body, J)
    assert status == 201
    assert fakes.recorder.writes[0][1][0].series[0]["date"] == "0999-01-01T00:00:00Z"


# ------------------------------------------------------------------ query strings


@pytest.mark.parametrize(
    ("query", "field"),
    [("job=%ff", "job"), ("status=%ED%A0%80", "status"), ("%C3=1", "query")],
)
async def test_query_that_is_not_utf8_is_400_naming_the_parameter(
    served: tuple[Any, FakeServices], query: str, field: str
) -> None:
    client, fakes = served
    status, answer = await send(client, "GET", f"/api/jobs/runs?{query}", None, {})
    refused(status, answer, field)
    assert "UTF-8" in answer["message"]
    assert not [c for c in fakes.recorder.calls if c[0] == "runs"]


async def test_wait_flag_with_invalid_utf8_is_refused(served: tuple[Any, FakeServices]) -> None:
    client, fakes = served
    status, answer = await send(client, "POST", "/api/jobs/housekeeping?wait=%ff", None, J)
    refused(status, answer, "wait")
    assert fakes.recorder.writes == []


# ------------------------------------------------------------------ the decoder and the importer


def test_decode_json_names_the_first_problem_in_document_order() -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_json('{"a": [1, {"b": "\\ud800"}], "c": {"d": 1, "d": 2}}')
    assert caught.value.field == "a[1].b"
    with pytest.raises(InvalidRequest) as caught:
        decode_json('{"k' + "x" * 200 + '": 1, "k' + "x" * 200 + '": 2}')
    assert caught.value.field.endswith("…")
    assert len(caught.value.field) < 100
    # Deep but acceptable nesting does not exhaust the stack in the slow path either.
    deep = "[" * 900 + '"\\ud800"' + "]" * 900
    with pytest.raises(InvalidRequest) as caught:
        decode_json(deep)
    assert caught.value.field == "[0]" * 899 + "[0]"
    # An escaped backslash before "ud800" is no surrogate: the slow path finds nothing.
    assert decode_json('["\\\\ud800"]') == ["\\ud800"]


async def test_import_reports_a_surrogate_line_and_loads_the_rest(tmp_path: Path) -> None:
    # Was: UnicodeEncodeError out of the whole import.
    good = json.loads(GOOD)
    lines = [
        json.dumps({**good, "slug": "good-one"}),
        json.dumps({**good, "slug": "bad-one"}).replace('"tea", "coffee"]', '"\\ud800", "x"]'),
        json.dumps({**good, "slug": "dup"})[:-1] + ', "slug": "dup-two"}',
    ]
    async with SqliteDatabase(tmp_path / "w.db") as db:
        report = await import_lines(db, lines, 1_767_225_600_000)
        assert report.created == 1
        assert [n for n, _ in report.errors] == [2, 3]
        assert "terms[0]" in report.errors[0][1]
        assert "slug: duplicate key" in report.errors[1][1]
        assert await ComparisonStore(db).count() == 1


async def test_an_empty_key_or_parameter_name_is_still_named(
    served: tuple[Any, FakeServices],
) -> None:
    # Were 400s whose message named no field at all ("unknown field").
    client, fakes = served
    status, answer = await send(client, "PUT", PUT, GOOD[:-1] + ', "": 1}', J)
    refused(status, answer, '""')
    status, answer = await send(client, "PUT", PUT, GOOD.replace('"tea": 10', '"": 10'), J)
    refused(status, answer, 'series[0].""')
    status, answer = await send(client, "GET", "/api/jobs/runs?=1", None, {})
    refused(status, answer, '""')
    assert fakes.recorder.writes == []
