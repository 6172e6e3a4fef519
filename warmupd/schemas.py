"""Pure validation of everything that arrives from outside (HTTP bodies, JSONL import lines).

Every function here takes plain decoded JSON and either returns a typed value or raises
:class:`~warmupd.errors.InvalidRequest` naming the offending field, e.g. ``series[3].date``. Nothing here
touches the database, so a rejected input can never have written anything.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import unquote_to_bytes

from warmupd.clock import iso_to_ms
from warmupd.errors import InvalidRequest
from warmupd.json_input import field_name, is_unicode
from warmupd.models import Comparison

SLUG_RE = re.compile(r"^[a-z0-9-]{1,200}$")
MAX_POINTS = 5_000
MAX_TERM_CHARS = 100
_SHORT_TEXT = 64


def validate_slug(value: object, field: str = "slug") -> str:
    """A slug: 1–200 characters of ``[a-z0-9-]`` (never reaches SQL or a file path otherwise)."""
    # fullmatch: ``$`` alone also matches before a trailing newline ("abc\n").
    if not isinstance(value, str) or not SLUG_RE.fullmatch(value):
        raise InvalidRequest(field, "must be 1-200 characters of a-z, 0-9 and '-'")
    return value


def expect_object(
    value: object, field: str, allowed: set[str], required: frozenset[str] | set[str] = frozenset()
) -> dict[str, Any]:
    """A JSON object with only ``allowed`` keys and every ``required`` key.

    ``null`` for an optional key means absent (SPEC §17: what a JSON client sends for an unset
    field), so the returned object lacks such keys; ``null`` for a required key is left for the
    field's own check to refuse.
    """
    if not isinstance(value, dict):
        raise InvalidRequest(field or "body", "must be a JSON object")
    for key in value:
        if key not in allowed:
            raise InvalidRequest(field_name(field, key), "unknown field")
    if None in value.values():
        value = {k: v for k, v in value.items() if v is not None or k in required}
    for key in sorted(required):
        if key not in value:
            raise InvalidRequest(field_name(field, key), "is required")
    return value


def expect_int(value: object, field: str, lo: int, hi: int) -> int:
    """An integer in ``[lo, hi]``.

    Booleans and fractional numbers are rejected; ``10.0`` is accepted as 10 because JSON Schema
    (and so the OpenAPI document) counts a number with a zero fraction as an integer.
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(field, "must be an integer")
    if not lo <= value <= hi:
        raise InvalidRequest(field, f"must be between {lo} and {hi}")
    return value


def expect_str(
    value: object, field: str, max_len: int = _SHORT_TEXT, *, empty: bool = False
) -> str:
    """A string of at most ``max_len`` characters."""
    if not isinstance(value, str):
        raise InvalidRequest(field, "must be a string")
    if not empty and not value.strip():
        raise InvalidRequest(field, "must not be empty")
    if len(value) > max_len:
        raise InvalidRequest(field, f"must be at most {max_len} characters")
    if any(ord(ch) < 32 for ch in value):
        raise InvalidRequest(field, "must not contain control characters")
    if not is_unicode(value):
        raise InvalidRequest(field, "is not valid Unicode (a lone surrogate)")
    return value


def normalise_date(value: object, field: str) -> str:
    """An ISO date (``YYYY-MM-DD``) or datetime; datetimes are rendered in UTC with ``Z``."""
    if not isinstance(value, str) or len(value) > 40:
        raise InvalidRequest(field, "must be an ISO-8601 date string")
    try:
        if len(value) == 10:
            return date.fromisoformat(value).isoformat()
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if dt.tzinfo is not None:
            # OverflowError: an offset that moves year 1 or 9999 out of range.
            dt = dt.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise InvalidRequest(field, f"{value!r} is not an ISO-8601 date") from None
    # isoformat pads the year to four digits (strftime's %Y does not below 1000), so rendered
    # dates always sort as text.
    return dt.replace(microsecond=0).isoformat() + "Z"


def _number(value: object, field: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(field, "must be a number")
    # Range first: an integer with hundreds of digits does not fit a float (OverflowError).
    if not 0 <= value <= 100 or not math.isfinite(value):
        raise InvalidRequest(field, "must be a finite number between 0 and 100")
    # Integral values are stored as ints so that 50 and 50.0 give the same dataHash.
    return int(value) if float(value).is_integer() else float(value)


def parse_comparison(slug: str, body: object) -> Comparison:
    """Validate a ``PUT /api/comparisons/{slug}`` body (SPEC §9) into a :class:`Comparison`."""
    obj = expect_object(
        body,
        "",
        {"terms", "timeframe", "geo", "category", "series"},
        {"terms", "timeframe", "series"},
    )
    terms = obj["terms"]
    if not isinstance(terms, list) or len(terms) != 2:
        raise InvalidRequest("terms", "must be a list of exactly two terms")
    term_a = expect_str(terms[0], "terms[0]", MAX_TERM_CHARS)
    term_b = expect_str(terms[1], "terms[1]", MAX_TERM_CHARS)
    if term_a == term_b:
        raise InvalidRequest("terms", "the two terms must differ")
    if "date" in (term_a, term_b):
        raise InvalidRequest("terms", "'date' is reserved for the series date field")
    timeframe = expect_str(obj["timeframe"], "timeframe")
    geo = expect_str(obj.get("geo", ""), "geo", empty=True)
    category = expect_str(obj.get("category", ""), "category", empty=True)
    series = obj["series"]
    if not isinstance(series, list):
        raise InvalidRequest("series", "must be a list of points")
    if len(series) > MAX_POINTS:
        raise InvalidRequest("series", f"must have at most {MAX_POINTS} points (got {len(series)})")
    points: list[dict[str, Any]] = []
    previous = ""
    for i, raw in enumerate(series):
        where = f"series[{i}]"
        point = expect_object(raw, where, {"date", term_a, term_b}, {"date", term_a, term_b})
        day = normalise_date(point["date"], f"{where}.date")
        if previous and day <= previous:
            raise InvalidRequest(f"{where}.date", "dates must be strictly ascending")
        previous = day
        points.append(
            {
                "date": day,
                term_a: _number(point[term_a], f"{where}.{term_a}"),
                term_b: _number(point[term_b], f"{where}.{term_b}"),
            }
        )
    return Comparison(
        slug=slug,
        term_a=term_a,
        term_b=term_b,
        timeframe=timeframe,
        geo=geo,
        category=category,
        series=tuple(points),
    )


# --------------------------------------------------------------------------- HTTP bodies and queries

DATA_HASH_RE = re.compile(r"^[0-9a-f]{16}$")
JOB_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_TRIGGER_LIMIT = 1000
MAX_TRIGGER_CONCURRENCY = 64
MAX_VIEWS = 1_000_000
MAX_RUNS_LIMIT = 500
DEFAULT_RUNS_LIMIT = 50
_MAX_RUN_ID = 2**63 - 1
_RUN_STATUSES = ("running", "success", "failed", "skipped", "cancelled", "abandoned")


@dataclass(frozen=True, kw_only=True)
class TriggerBody:
    """A validated ``POST /api/jobs/{job}`` body (both fields optional)."""

    limit: int | None = None
    concurrency: int | None = None


@dataclass(frozen=True, kw_only=True)
class RunsQuery:
    """A validated ``GET /api/jobs/runs`` query."""

    job: str | None = None
    status: str | None = None
    limit: int = DEFAULT_RUNS_LIMIT
    before: int | None = None


def validate_job_name(value: object, field: str = "job") -> str:
    """A job name as the config allows it: 1–64 characters of ``[a-z0-9_-]``."""
    if not isinstance(value, str) or not JOB_NAME_RE.fullmatch(value):
        raise InvalidRequest(field, "must be 1-64 characters of a-z, 0-9, '_' and '-'")
    return value


def validate_run_id(value: str, field: str = "id") -> int:
    """A run id from a path or query string: a positive decimal integer."""
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise InvalidRequest(field, "must be a positive integer")
    run_id = int(value)
    if not 1 <= run_id <= _MAX_RUN_ID:
        raise InvalidRequest(field, "must be a positive integer")
    return run_id


def parse_trigger(body: object) -> TriggerBody:
    """Validate an optional job trigger body ``{limit?: 1–1000, concurrency?: 1–64}``."""
    if body is None:
        return TriggerBody()
    obj = expect_object(body, "", {"limit", "concurrency"})
    return TriggerBody(
        limit=expect_int(obj["limit"], "limit", 1, MAX_TRIGGER_LIMIT) if "limit" in obj else None,
        concurrency=(
            expect_int(obj["concurrency"], "concurrency", 1, MAX_TRIGGER_CONCURRENCY)
            if "concurrency" in obj
            else None
        ),
    )


def parse_views(body: object) -> tuple[int, int | None]:
    """Validate a views body ``{count?: 1–10^6, at?: ISO-8601}`` into ``(count, at_ms)``.

    ``count`` defaults to 1 (one visit); ``at`` defaults to "now" (``None``, decided by the service).
    """
    obj = expect_object({} if body is None else body, "", {"count", "at"})
    count = expect_int(obj["count"], "count", 1, MAX_VIEWS) if "count" in obj else 1
    at_ms: int | None = None
    if "at" in obj:
        at = obj["at"]
        if not isinstance(at, str) or len(at) > 40:
            raise InvalidRequest("at", "must be an ISO-8601 timestamp string")
        try:
            at_ms = iso_to_ms(at)
        except (ValueError, OverflowError, OSError):
            raise InvalidRequest("at", f"{at!r} is not an ISO-8601 timestamp") from None
    return count, at_ms


def parse_warmup(body: object) -> tuple[str, str | None]:
    """Validate an on-demand warmup body ``{slug, dataHash?}``."""
    obj = expect_object(body, "", {"slug", "dataHash"}, {"slug"})
    slug = validate_slug(obj["slug"])
    data_hash_: str | None = None
    if "dataHash" in obj:
        value = obj["dataHash"]
        if not isinstance(value, str) or not DATA_HASH_RE.fullmatch(value):
            raise InvalidRequest("dataHash", "must be 16 lowercase hexadecimal characters")
        data_hash_ = value
    return slug, data_hash_


def _single(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name, [])
    if len(values) > 1:
        raise InvalidRequest(name, "must be given at most once")
    return values[0] if values else None


def check_query_encoding(raw_query: str) -> None:
    """Refuse a raw query string whose percent-escapes do not decode as UTF-8 (``%ff``, or an
    encoded surrogate such as ``%ED%A0%80``); aiohttp would silently turn them into U+FFFD.

    :raises InvalidRequest: naming the parameter (``query`` when its name is what is broken).
    """
    for part in raw_query.split("&"):
        name, _, value = part.partition("=")
        try:
            field = unquote_to_bytes(name.replace("+", " ")).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest("query", "a parameter name is not valid UTF-8") from None
        try:
            unquote_to_bytes(value.replace("+", " ")).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(field_name("", field), "is not valid UTF-8") from None


def parse_runs_query(query: Mapping[str, list[str]]) -> RunsQuery:
    """Validate the run-list query ``job, status, limit (1–500, default 50), before (runId)``.

    ``query`` maps each parameter to all its values, so a repeated parameter is an error rather than
    silently taking one of them.
    """
    for name in query:
        if name not in {"job", "status", "limit", "before"}:
            raise InvalidRequest(field_name("", name), "unknown query parameter")
    job = _single(query, "job")
    status = _single(query, "status")
    limit_text = _single(query, "limit")
    before_text = _single(query, "before")
    if status is not None and status not in _RUN_STATUSES:
        raise InvalidRequest("status", f"must be one of {', '.join(_RUN_STATUSES)}")
    limit = DEFAULT_RUNS_LIMIT
    if limit_text is not None:
        if not (limit_text.isascii() and limit_text.isdigit()) or len(limit_text) > 6:
            raise InvalidRequest("limit", "must be an integer")
        limit = expect_int(int(limit_text), "limit", 1, MAX_RUNS_LIMIT)
    return RunsQuery(
        job=validate_job_name(job) if job is not None else None,
        status=status,
        limit=limit,
        before=validate_run_id(before_text, "before") if before_text is not None else None,
    )


def parse_flag(query: Mapping[str, list[str]], name: str, allowed: set[str]) -> bool:
    """A boolean query flag (``true``/``false``/``1``/``0``); other parameters than ``allowed`` are errors."""
    for key in query:
        if key not in allowed:
            raise InvalidRequest(field_name("", key), "unknown query parameter")
    text = _single(query, name)
    if text is None:
        return False
    if text not in {"true", "false", "1", "0"}:
        raise InvalidRequest(name, "must be true or false")
    return text in {"true", "1"}
