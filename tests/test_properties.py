"""Property-based tests (SPEC §12, §17): every body and query parser, and the HTTP application over a
real SQLite file, answer any input with a success or a 4xx envelope naming a field — never a 500,
never another exception, never a write on a 4xx.

Inputs: arbitrary JSON values (huge and tiny numbers, NaN, any Unicode including lone surrogates,
deep nesting), duplicate keys, valid bodies with one field at any depth replaced by anything, and
raw bytes in paths and query strings. The profile (tests/conftest.py) is derandomized in CI.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from yarl import URL

from tests.inprocess import InProcess, J, W, in_process
from warmupd import schemas
from warmupd.errors import InvalidRequest
from warmupd.json_input import decode_json
from warmupd.locks import drain_background
from warmupd.models import canonical_json

# ------------------------------------------------------------------ strategies

SURROGATE = st.characters(categories=["Cs"])
TEXT = st.text(alphabet=st.characters() | SURROGATE, max_size=12) | st.sampled_from(
    ["", " ", "date", "tea", "coffee", "\n", "x\x00y", "\ud800", "\udfff", "a" * 201, "é"]
)
NUMBER = (
    st.integers()
    | st.sampled_from([0, 1, 100, 101, -1, 2**63, -(2**63), 10**400, -(10**400), 10**999])
    | st.floats()  # NaN and ±inf included
    | st.sampled_from([1e-320, 5e-324, 1e308, 1e400, -0.0, 99.99999999999999, 100.00000000000001])
)
SCALAR = st.none() | st.booleans() | NUMBER | TEXT
JSON = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


def valid_comparison() -> dict[str, Any]:
    return {
        "terms": ["tea", "coffee"],
        "timeframe": "today 12-m",
        "geo": "US",
        "category": "food",
        "series": [
            {"date": "2026-01-01", "tea": 10, "coffee": 20},
            {"date": "2026-01-02", "tea": 11.5, "coffee": 21},
        ],
    }


VALID_BODIES: dict[str, Any] = {
    "comparison": valid_comparison(),
    "trigger": {"limit": 5, "concurrency": 2},
    "views": {"count": 3, "at": "2026-01-01T00:00:00Z"},
    "warmup": {"slug": "tea-vs-coffee", "dataHash": "0123456789abcdef"},
}


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a member of ``value`` (object keys and list indexes)."""
    out = []
    if isinstance(value, dict):
        for key, child in value.items():
            out.append((*prefix, key))
            out += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out.append((*prefix, i))
            out += paths(child, (*prefix, i))
    return out


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    copy = json.loads(json.dumps(value))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copy


@st.composite
def mutated(draw: st.DrawFn, kind: str | None = None) -> tuple[str, Any]:
    """A valid body with one member, at any depth, replaced by an arbitrary JSON value."""
    kind = kind or draw(st.sampled_from(sorted(VALID_BODIES)))
    body = VALID_BODIES[kind]
    path = draw(st.sampled_from(paths(body)))
    return kind, replaced(body, path, draw(JSON))


def pairs_text(pairs: list[tuple[str, Any]]) -> str:
    return "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}"


@st.composite
def duplicated(draw: st.DrawFn) -> str:
    """A valid body's text with one of its keys repeated (at the top or in a series point)."""
    kind = draw(st.sampled_from(sorted(VALID_BODIES)))
    body = VALID_BODIES[kind]
    pairs = list(body.items())
    key, _ = draw(st.sampled_from(pairs))
    pairs.insert(draw(st.integers(0, len(pairs))), (key, draw(JSON)))
    return pairs_text(pairs)


def to_text(value: Any) -> str:
    # allow_nan: NaN and Infinity reach the decoder as the tokens a client could send.
    return json.dumps(value, allow_nan=True)


RAW_TEXT = (
    JSON.map(to_text)
    | mutated().map(lambda kv: to_text(kv[1]))
    | duplicated()
    | st.integers(1, 3000).map(lambda n: "[" * n + "]" * n)
    | st.integers(1, 3000).map(lambda n: '{"a":' * n + "1" + "}" * n)
    | st.text(alphabet=st.sampled_from('{}[]":,0123456789.eE+-tfnul \\ud800'), max_size=40)
)


def check_invalid(exc: InvalidRequest) -> None:
    assert exc.field, exc.message
    assert exc.message.startswith(f"{exc.field}: "), exc.message
    json.dumps(exc.message)  # renderable in the envelope


# ------------------------------------------------------------------ the pure parsers


@given(RAW_TEXT)
@settings(max_examples=300)
def test_decode_json_returns_unicode_or_names_the_problem(text: str) -> None:
    try:
        value = decode_json(text)
    except InvalidRequest as exc:
        check_invalid(exc)
        return
    # Whatever it accepts can be hashed and stored: valid Unicode, no NaN, no duplicate keys lost.
    canonical_json(value).encode("utf-8")


PARSERS = {
    "comparison": lambda body: schemas.parse_comparison("tea-vs-coffee", body),
    "trigger": schemas.parse_trigger,
    "views": schemas.parse_views,
    "warmup": schemas.parse_warmup,
}


@given(st.sampled_from(sorted(PARSERS)), JSON | mutated())
@settings(max_examples=400)
def test_body_parsers_accept_or_name_a_field(kind: str, body: Any) -> None:
    if isinstance(body, tuple):
        kind, body = body
    try:
        parsed = PARSERS[kind](body)
    except InvalidRequest as exc:
        check_invalid(exc)
        return
    if kind == "comparison":
        assert parsed.data_hash  # hashable: every string is valid Unicode, every number finite
        for point in parsed.series:
            assert all(math.isfinite(v) and 0 <= v <= 100 for k, v in point.items() if k != "date")


@given(mutated())
@settings(max_examples=300)
def test_a_wrong_value_is_named_by_its_own_path(kind_body: tuple[str, Any]) -> None:
    kind, body = kind_body
    try:
        PARSERS[kind](body)
    except InvalidRequest as exc:
        error: InvalidRequest | None = exc
    else:
        return
    assert error is not None
    check_invalid(error)
    original = VALID_BODIES[kind]
    changed = {str(p[0]) for p in paths(original) if _get(body, p) != _get(original, p)}
    # The field named is where the change is — or, when the terms changed, the series points
    # whose keys no longer match them.
    assert error.field.split(".")[0].split("[")[0] in changed | {"series"}, (error, changed)


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        try:
            value = value[step]
        except (KeyError, IndexError, TypeError):
            return "<absent>"
    return value


QUERY_TEXT = st.text(alphabet=st.characters() | SURROGATE, max_size=8) | st.sampled_from(
    ["job", "status", "limit", "before", "wait", "1", "0", "500", "501", "-1", "true", "9" * 25]
)


@given(st.dictionaries(QUERY_TEXT, st.lists(QUERY_TEXT, min_size=1, max_size=3), max_size=4))
@settings(max_examples=300)
def test_query_parsers_accept_or_name_a_parameter(query: dict[str, list[str]]) -> None:
    for parse in (
        schemas.parse_runs_query,
        lambda q: schemas.parse_flag(q, "wait", {"wait"}),
    ):
        try:
            parse(query)
        except InvalidRequest as exc:
            check_invalid(exc)


@given(st.binary(max_size=24) | st.text(max_size=24).map(str.encode))
@settings(max_examples=300)
def test_path_and_query_text_validators(raw: bytes) -> None:
    text = raw.decode("utf-8", "surrogateescape")
    for check in (
        schemas.validate_slug,
        schemas.validate_job_name,
        schemas.validate_run_id,
        lambda v: schemas.check_query_encoding(quote_from_bytes(raw, safe="=&")),
    ):
        try:
            check(text)
        except InvalidRequest as exc:
            check_invalid(exc)


# ------------------------------------------------------------------ the HTTP application

TABLES = ("comparisons", "cache_entries", "job_runs", "locks", "fire_claims", "warmups")
SLUG = st.sampled_from(["tea-vs-coffee", "new-one", "a"]) | st.binary(max_size=12)
JOB = st.sampled_from(["housekeeping", "warmup-forecasts", "nope"]) | st.binary(max_size=8)


def segment(value: str | bytes) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return quote_from_bytes(raw, safe="")


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes | None]:
    """(method, already-encoded path and query, headers, body) for any route, mostly authorised."""
    slug, job = segment(draw(SLUG)), segment(draw(JOB))
    routes = [
        ("PUT", f"/api/comparisons/{slug}", J, "comparison"),
        ("POST", f"/api/comparisons/{slug}/views", J, "views"),
        ("POST", "/api/comparison/warmup", W, "warmup"),
        ("POST", f"/api/jobs/{job}", J, "trigger"),
        ("GET", "/api/jobs/runs", {}, ""),
        ("GET", f"/api/jobs/runs/{segment(draw(st.binary(max_size=6)))}", {}, ""),
        ("GET", f"/api/comparison/{slug}/status", {}, ""),
        ("GET", f"/api/comparison/{slug}", {}, ""),
        ("GET", "/api/status", {}, ""),
    ]
    method, path, headers, kind = draw(st.sampled_from(routes))
    body = draw(
        st.one_of(
            valid_body(kind or "trigger").map(to_text),
            mutated(kind or None).map(lambda kv: to_text(kv[1])),
            RAW_TEXT,
        )
    )
    if draw(st.booleans()):
        params = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["job", "status", "limit", "before", "wait"])
                    | st.binary(max_size=4).map(segment),
                    st.binary(max_size=6).map(segment) | st.sampled_from(["true", "1", "x"]),
                ),
                max_size=3,
            )
        )
        path += "?" + "&".join(f"{k}={v}" for k, v in params)
    if method == "GET" or draw(st.integers(0, 9)) == 9:
        return method, path, headers, None
    return method, path, headers, body.encode("utf-8", "surrogatepass")


@st.composite
def valid_body(draw: st.DrawFn, kind: str) -> Any:
    """The route's valid body, some optional members null (absent) or left out."""
    body = dict(VALID_BODIES[kind])
    if kind == "warmup":
        body["slug"] = draw(st.sampled_from(["tea-vs-coffee", "new-one"]))
        body.pop("dataHash")  # the current hash is not known here
    optional = {"comparison": ["geo", "category"], "trigger": ["limit", "concurrency"]}
    optional |= {"views": ["count", "at"], "warmup": ["dataHash"]}
    for key in optional[kind]:
        choice = draw(st.sampled_from(["keep", "null", "drop"]))
        if choice == "null":
            body[key] = None
        elif choice == "drop":
            body.pop(key, None)
    return body


@pytest.fixture
async def real_app(tmp_path: Path, aiohttp_client: Any) -> AsyncIterator[InProcess]:
    """The real application over a real SQLite file; computations fail at once, so the work a
    success starts in the background ends quickly and can be waited for."""
    async with in_process(tmp_path, aiohttp_client, demo=2) as d:
        d.cpu.fail = True
        yield d


async def quiesce(d: InProcess) -> None:
    """Wait until no background work (warmups, runs, lock releases) can still write."""
    for _ in range(2000):
        busy = d.core.on_demand.in_flight() + d.core.on_demand.queued()
        busy += sum(1 for j in d.core.runner.job_names() if d.core.runner.running_run_id(j))
        if not busy:
            await drain_background()
            return
        await asyncio.sleep(0.005)
    pytest.fail("background work did not finish")


async def snapshot(d: InProcess) -> dict[str, list[tuple[Any, ...]]]:
    return {t: [tuple(r) for r in await d.core.db.fetchall(f"SELECT * FROM {t}")] for t in TABLES}


@given(requests())
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_http_app_answers_anything_without_500_or_a_write_on_4xx(
    real_app: InProcess, request_: tuple[str, str, dict[str, str], bytes | None]
) -> None:
    d = real_app
    method, path, headers, body = request_
    await quiesce(d)
    before = await snapshot(d)
    url = d.client.make_url("/").join(URL(path, encoded=True))
    resp = await d.client.session.request(method, url, data=body, headers=headers)
    answer = await resp.json()
    event(f"{method} {resp.status}")  # --hypothesis-show-statistics shows the mix reached
    assert resp.status < 500, (resp.status, answer)
    if resp.status >= 400:
        assert {"error", "message"} <= set(answer) <= {"error", "message", "runId", "node"}
        assert answer["message"]
        if resp.status == 400:
            field, sep, _ = answer["message"].partition(": ")
            assert sep, answer["message"]
            assert field, answer["message"]
        await quiesce(d)
        # 429 is the one refusal SPEC §6 records (a skipped run); quiescing first makes it rare.
        if resp.status != 429:
            assert await snapshot(d) == before, (method, path, answer)
    await quiesce(d)
