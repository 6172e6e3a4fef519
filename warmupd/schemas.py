"""Pure validation of everything that arrives from outside (HTTP bodies, JSONL import lines).

Every function here takes plain decoded JSON and either returns a typed value or raises
:class:`~warmupd.errors.InvalidRequest` naming the offending field, e.g. ``series[3].date``. Nothing here
touches the database, so a rejected input can never have written anything.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from typing import Any

from warmupd.errors import InvalidRequest
from warmupd.models import Comparison

SLUG_RE = re.compile(r"^[a-z0-9-]{1,200}$")
MAX_POINTS = 5_000
MAX_TERM_CHARS = 100
_SHORT_TEXT = 64


def validate_slug(value: object, field: str = "slug") -> str:
    """A slug: 1–200 characters of ``[a-z0-9-]`` (never reaches SQL or a file path otherwise)."""
    if not isinstance(value, str) or not SLUG_RE.match(value):
        raise InvalidRequest(field, "must be 1-200 characters of a-z, 0-9 and '-'")
    return value


def expect_object(
    value: object, field: str, allowed: set[str], required: frozenset[str] | set[str] = frozenset()
) -> dict[str, Any]:
    """A JSON object with only ``allowed`` keys and every ``required`` key."""
    if not isinstance(value, dict):
        raise InvalidRequest(field or "body", "must be a JSON object")
    prefix = f"{field}." if field else ""
    for key in value:
        if key not in allowed:
            raise InvalidRequest(f"{prefix}{key}", "unknown field")
    for key in sorted(required):
        if key not in value:
            raise InvalidRequest(f"{prefix}{key}", "is required")
    return value


def expect_int(value: object, field: str, lo: int, hi: int) -> int:
    """An integer in ``[lo, hi]`` (booleans and floats are rejected)."""
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
    return value


def normalise_date(value: object, field: str) -> str:
    """An ISO date (``YYYY-MM-DD``) or datetime; datetimes are rendered in UTC with ``Z``."""
    if not isinstance(value, str) or len(value) > 40:
        raise InvalidRequest(field, "must be an ISO-8601 date string")
    try:
        if len(value) == 10:
            return date.fromisoformat(value).isoformat()
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(field, f"{value!r} is not an ISO-8601 date") from None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(value: object, field: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(field, "must be a number")
    if not math.isfinite(value) or not 0 <= value <= 100:
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
