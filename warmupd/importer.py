"""Bulk loading of comparisons: JSONL import and the demo data set."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from warmupd.demo import demo_comparisons
from warmupd.errors import InvalidRequest
from warmupd.json_input import decode_json
from warmupd.schemas import parse_comparison, validate_slug
from warmupd.state import Database
from warmupd.state.store import ComparisonStore


@dataclass
class ImportReport:
    """What an import did: counts and ``(line number, reason)`` of every bad line."""

    created: int = 0
    updated: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


async def import_lines(db: Database, lines: Iterable[str], now_ms: int) -> ImportReport:
    """Upsert one comparison per JSONL line (the PUT body plus ``slug``); bad lines are reported.

    Every line is validated before anything is written; a bad line never stops the good ones.
    """
    report = ImportReport()
    good = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            # The same strict decoding as an HTTP body: duplicate keys, NaN and lone surrogates
            # are this line's error, never a crash of the whole import.
            obj = decode_json(line)
        except InvalidRequest as exc:
            report.errors.append(
                (number, exc.message.replace("body: invalid JSON", "invalid JSON"))
            )
            continue
        if not isinstance(obj, dict):
            report.errors.append((number, "body: must be a JSON object"))
            continue
        try:
            slug = validate_slug(obj.pop("slug", None))
            good.append(parse_comparison(slug, obj))
        except InvalidRequest as exc:
            report.errors.append((number, exc.message))
    store = ComparisonStore(db)
    for comparison in good:
        created, _ = await store.upsert(comparison, now_ms)
        if created:
            report.created += 1
        else:
            report.updated += 1
    return report


async def load_demo_data(
    db: Database, *, count: int, seed: int, now_ms: int, only_if_empty: bool = False
) -> int:
    """Load ``count`` synthetic comparisons with Zipf-like views; returns how many were loaded."""
    store = ComparisonStore(db)
    if only_if_empty and await store.count() > 0:
        return 0
    today = datetime.fromtimestamp(now_ms / 1000, tz=UTC).date()
    loaded = 0
    for i, (body, views) in enumerate(demo_comparisons(count, seed, today)):
        slug = validate_slug(body.pop("slug"))
        await store.upsert(parse_comparison(slug, body), now_ms)
        if views:
            # The most popular were visited most recently: spread last visits over the past days.
            await store.add_views(slug, views, now_ms - i * 3_600_000)
        loaded += 1
    return loaded
