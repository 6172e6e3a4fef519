"""P8 — the two SPEC §6 selections over 1,000,000 generated comparisons.

Run: ``python -m bench.p8_selection`` (``--rows N``; ``--quick`` for 20,000 rows).

The file is a temporary state database created by :class:`warmupd.state.sqlite.SqliteDatabase` (the real
migrations and indexes), filled with stdlib ``sqlite3`` ``executemany`` in transactions of 100,000
rows. Distributions (seeded): ``created_at`` uniform over the year before "now"; 70 % of the
comparisons were never viewed (``view_count`` 0, ``last_visited`` NULL), the rest have Zipf-like
(Pareto α = 1.1) view counts and a ``last_visited`` exponentially distributed over the last ~60
days (never before ``created_at``); a tiny one-point series.

Timed: :meth:`warmupd.state.store.ComparisonStore.select_for_forecasts` (limit 50, window 7 days) and
:meth:`~warmupd.state.store.ComparisonStore.select_for_insights` (limit 30, window 30 days, min_views 10),
the defaults of ``config.py``, through the real :class:`~warmupd.state.sqlite.SqliteDatabase`; the median over
repetitions, each a complete call including the rows' decoding. Then the worst cases, reported as
measured: insights with nothing matching (``min_views`` above every count, a window that starts
after every visit), and forecasts on the same file after it is turned into a quiet site (views only on 5
comparisons, nothing created in the window), where fewer rows match than the limit, so no plan
can stop early. ``EXPLAIN QUERY PLAN`` of both queries is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Result, Verdict, describe, finish, machine_line
from warmupd.state.sqlite import SqliteDatabase
from warmupd.state.store import ComparisonStore

NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, fixed so the data and the figures repeat
DAY_MS = 86_400_000
TARGET_MS = 50.0
FORECASTS = {"window_ms": 7 * DAY_MS, "limit": 50}
INSIGHTS = {"window_ms": 30 * DAY_MS, "min_views": 10, "limit": 30}
_SERIES = '[{"date":"2025-12-31","a":1,"b":2}]'
_INSERT = """INSERT INTO comparisons(slug, term_a, term_b, timeframe, geo, category, series, points,
    data_hash, view_count, last_visited, created_at, updated_at)
    VALUES (?, ?, ?, 'today 12-m', '', '', ?, 1, ?, ?, ?, ?, ?)"""


def _rows(start: int, stop: int, rng: random.Random) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for i in range(start, stop):
        created = NOW_MS - rng.randrange(365 * DAY_MS)
        if rng.random() < 0.7:
            views, visited = 0, None
        else:
            views = min(10**7, int(rng.paretovariate(1.1)))
            visited = max(created, NOW_MS - int(rng.expovariate(1 / (60 * DAY_MS))))
        out.append(
            (
                f"term-{i}-a-vs-term-{i}-b",
                f"term {i} a",
                f"term {i} b",
                _SERIES,
                f"{i:016x}",
                views,
                visited,
                created,
                created,
            )
        )
    return out


def generate(path: Path, rows: int, seed: int = 8) -> float:
    """Fill ``path`` (already migrated) with ``rows`` comparisons; returns seconds taken."""
    started = time.perf_counter()
    rng = random.Random(seed)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # Bulk-load settings for a throwaway file; the daemon's own pragmas apply when it opens.
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -262144")
        chunk = 100_000
        for start in range(0, rows, chunk):
            conn.execute("BEGIN")
            conn.executemany(_INSERT, _rows(start, min(rows, start + chunk), rng))
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.perf_counter() - started


def make_quiet(path: Path) -> float:
    """Turn the file into a quiet site for the forecasts worst case; returns seconds taken."""
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        # Keep views on 5 comparisons only, and move everything created in the window out of it
        # except 5: 10 matches in total, fewer than the limit of 50.
        conn.execute(
            """UPDATE comparisons SET view_count = 0, last_visited = NULL
               WHERE view_count > 0 AND slug NOT IN (
                   SELECT slug FROM comparisons WHERE view_count > 0 ORDER BY slug LIMIT 5)"""
        )
        conn.execute(
            """UPDATE comparisons SET created_at = created_at - 30 * ?
               WHERE created_at >= ? AND slug NOT IN (
                   SELECT slug FROM comparisons WHERE created_at >= ? ORDER BY slug LIMIT 5)""",
            (DAY_MS, NOW_MS - FORECASTS["window_ms"], NOW_MS - FORECASTS["window_ms"]),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return time.perf_counter() - started


async def _plans(db: SqliteDatabase, call: Any) -> list[str]:
    """``EXPLAIN QUERY PLAN`` of exactly the statements ``call`` sends through ``db``."""
    sent: list[tuple[str, Any]] = []
    original = db.fetchall

    async def recording(sql: str, params: Any = ()) -> Any:
        sent.append((sql, params))
        return await original(sql, params)

    db.fetchall = recording  # type: ignore[method-assign]
    try:
        await call()
    finally:
        del db.fetchall  # back to the class's method
    lines: list[str] = []
    for sql, params in sent:
        lines += [str(r["detail"]) for r in await original(f"EXPLAIN QUERY PLAN {sql}", params)]
    return lines


async def _time(call: Any, repetitions: int) -> tuple[list[float], int]:
    times: list[float] = []
    found = 0
    for _ in range(repetitions):
        started = time.perf_counter()
        found = len(await call())
        times.append((time.perf_counter() - started) * 1000)
    return times, found


async def measure(path: Path, repetitions: int) -> dict[str, Any]:
    """Time both selections (typical and worst case) on the generated file."""
    out: dict[str, Any] = {}
    async with SqliteDatabase(path) as db:
        store = ComparisonStore(db)
        cases = {
            "forecasts": lambda: store.select_for_forecasts(
                NOW_MS, FORECASTS["window_ms"], FORECASTS["limit"]
            ),
            "insights": lambda: store.select_for_insights(
                NOW_MS, INSIGHTS["window_ms"], INSIGHTS["min_views"], INSIGHTS["limit"]
            ),
            # Nothing matches: min_views above every count, the window after every visit.
            "insights_worst": lambda: store.select_for_insights(
                NOW_MS + DAY_MS, 0, 10**9, INSIGHTS["limit"]
            ),
        }
        for name, call in cases.items():
            out[f"plan_{name}"] = await _plans(db, call)  # also warms the page cache
            times, found = await _time(call, repetitions)
            out[name] = describe(times) | {"rows": found}
    out["quiet_s"] = make_quiet(path)
    async with SqliteDatabase(path) as db:
        store = ComparisonStore(db)

        def quiet() -> Any:
            return store.select_for_forecasts(NOW_MS, FORECASTS["window_ms"], FORECASTS["limit"])

        out["plan_forecasts_worst"] = await _plans(db, quiet)
        times, found = await _time(quiet, repetitions)
        out["forecasts_worst"] = describe(times) | {"rows": found}
    return out


async def _run(rows: int, repetitions: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="warmupd-bench-p8-") as tmp:
        path = Path(tmp) / "warmupd.db"
        async with SqliteDatabase(path):
            pass  # the real migrations create the schema and its indexes
        generate_s = generate(path, rows)
        print(f"  generated {rows:,} comparisons in {generate_s:.1f} s")
        data = await measure(path, repetitions)
        data["size_mb"] = round(path.stat().st_size / 1e6, 1)
    data |= {"rows_generated": rows, "generate_s": generate_s, "repetitions": repetitions}
    verdicts = []
    for name, what in (
        ("forecasts", "select_for_forecasts (limit 50)"),
        ("insights", "select_for_insights (limit 30)"),
        ("forecasts_worst", "select_for_forecasts, worst case (10 matches)"),
        ("insights_worst", "select_for_insights, worst case (0 matches)"),
    ):
        p50 = data[name]["p50"]
        verdicts.append(
            Verdict(
                target="P8",
                what=f"{what} over {rows:,} rows",
                figure=f"median {p50:.2f} ms (p90 {data[name]['p90']:.2f} ms), "
                f"{data[name]['rows']} rows",
                reference=f"{TARGET_MS:.0f} ms budget",
                ratio=p50 / TARGET_MS,
                bound=f"≤ {TARGET_MS:.0f} ms",
                met=p50 <= TARGET_MS,
            )
        )
    return Result(name="p8_selection", verdicts=verdicts, data=data)


def run(quick: bool = False, rows: int | None = None) -> Result:
    """Run P8 and return its verdicts (printed and saved under ``bench/results/``)."""
    started = time.perf_counter()
    print(f"[p8_selection] machine: {machine_line()}")
    count = rows if rows is not None else (20_000 if quick else 1_000_000)
    result = asyncio.run(_run(count, 5 if quick else 21))
    for key in ("plan_forecasts", "plan_insights", "plan_forecasts_worst", "plan_insights_worst"):
        print(f"  EXPLAIN QUERY PLAN ({key[5:]}):")
        for line in result.data[key]:
            print(f"    {line}")
    return finish(result, started)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.p8_selection [--quick | --rows N]``; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.p8_selection", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20,000 rows only")
    parser.add_argument("--rows", type=int, default=None, help="rows to generate (1,000,000)")
    args = parser.parse_args(argv)
    return 0 if all(v.met for v in run(args.quick, args.rows).verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
