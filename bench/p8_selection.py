"""P8 — the two SPEC §6 selections over 1,000,000 generated comparisons.

Run: ``python -m bench.p8_selection`` (``--rows N``; ``--quick`` for 20,000 rows; ``--backend
sqlite|postgresql|both``, default both).

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

PostgreSQL (SPEC §14): the same rows, the same calls and the same worst cases through the real
:class:`~warmupd.state.postgres.PostgresDatabase` (asyncpg, prepared statements) on a fresh database
created and dropped by the benchmark; the schema by its migrations, the rows loaded with ``COPY``,
then ``ANALYZE`` (what autovacuum does after such a load; ``VACUUM ANALYZE`` after the quiet-site
update, whose dead index entries are a leftover of how the worst case is made: timed both before
and after). The
plans are ``EXPLAIN`` of the statements the store sends, after the timed calls (so after asyncpg's
prepared statements may have moved to PostgreSQL's generic plans).
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

from bench import pg
from bench.common import Result, Verdict, describe, finish, machine_line
from warmupd.state.postgres import PostgresDatabase
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


async def _plans(db: SqliteDatabase | PostgresDatabase, call: Any) -> list[str]:
    """The plans of exactly the statements ``call`` sends through ``db``."""
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
        if isinstance(db, PostgresDatabase):
            lines += [str(r[0]) for r in await original(f"EXPLAIN {sql}", params)]
        else:
            rows = await original(f"EXPLAIN QUERY PLAN {sql}", params)
            lines += [str(r["detail"]) for r in rows]
    return lines


async def _time(call: Any, repetitions: int) -> tuple[list[float], int]:
    times: list[float] = []
    found = 0
    for _ in range(repetitions):
        started = time.perf_counter()
        found = len(await call())
        times.append((time.perf_counter() - started) * 1000)
    return times, found


def _cases(store: ComparisonStore) -> dict[str, Any]:
    return {
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


def _quiet(store: ComparisonStore) -> Any:
    return store.select_for_forecasts(NOW_MS, FORECASTS["window_ms"], FORECASTS["limit"])


async def _measure_db(
    db: SqliteDatabase | PostgresDatabase, repetitions: int, *, quiet: bool
) -> dict[str, Any]:
    """Time the cases (or, ``quiet``, the forecasts worst case) through ``db``."""
    store = ComparisonStore(db)
    out: dict[str, Any] = {}
    cases = {"forecasts_worst": lambda: _quiet(store)} if quiet else _cases(store)
    for name, call in cases.items():
        if isinstance(db, SqliteDatabase):
            out[f"plan_{name}"] = await _plans(db, call)  # also warms the page cache
        else:
            await call()  # warms the cache and prepares the statements
        times, found = await _time(call, repetitions)
        out[name] = describe(times) | {"rows": found}
        if isinstance(db, PostgresDatabase):
            out[f"plan_{name}"] = await _plans(db, call)
    return out


async def measure(path: Path, repetitions: int) -> dict[str, Any]:
    """Time both selections (typical and worst case) on the generated file."""
    async with SqliteDatabase(path) as db:
        out = await _measure_db(db, repetitions, quiet=False)
    out["quiet_s"] = make_quiet(path)
    async with SqliteDatabase(path) as db:
        out |= await _measure_db(db, repetitions, quiet=True)
    return out


_COLUMNS = (
    "slug", "term_a", "term_b", "timeframe", "geo", "category", "series", "points", "data_hash",
    "view_count", "last_visited", "created_at", "updated_at",
)  # fmt: skip


async def generate_postgres(db: PostgresDatabase, rows: int, seed: int = 8) -> float:
    """The rows of :func:`generate` (same seed, same values), by ``COPY``; then ``ANALYZE``."""
    started = time.perf_counter()
    rng = random.Random(seed)
    chunk = 100_000
    async with db.pool.acquire() as conn:
        for start in range(0, rows, chunk):
            records = [
                (slug, a, b, "today 12-m", "", "", series, 1, data_hash, views, visited, c, u)
                for slug, a, b, series, data_hash, views, visited, c, u in _rows(
                    start, min(rows, start + chunk), rng
                )
            ]
            await conn.copy_records_to_table("comparisons", records=records, columns=_COLUMNS)
        await conn.execute("ANALYZE comparisons")
    return time.perf_counter() - started


async def make_quiet_postgres(db: PostgresDatabase) -> float:
    """:func:`make_quiet` on PostgreSQL (same statements), then ``ANALYZE``."""
    started = time.perf_counter()
    since = NOW_MS - FORECASTS["window_ms"]
    async with db.transaction() as tx:
        await tx.execute(
            """UPDATE comparisons SET view_count = 0, last_visited = NULL
               WHERE view_count > 0 AND slug NOT IN (
                   SELECT slug FROM comparisons WHERE view_count > 0 ORDER BY slug LIMIT 5)"""
        )
        await tx.execute(
            """UPDATE comparisons SET created_at = created_at - ?
               WHERE created_at >= ? AND slug NOT IN (
                   SELECT slug FROM comparisons WHERE created_at >= ? ORDER BY slug LIMIT 5)""",
            (30 * DAY_MS, since, since),
        )
    await db.execute("ANALYZE comparisons")
    return time.perf_counter() - started


async def measure_postgres(url: str, rows: int, repetitions: int) -> dict[str, Any]:
    """Load ``rows`` comparisons into the (empty) database at ``url`` and time the selections."""
    async with PostgresDatabase(url) as db:  # the real migrations create the schema
        out: dict[str, Any] = {"generate_s": await generate_postgres(db, rows)}
        print(f"  postgresql: loaded {rows:,} comparisons in {out['generate_s']:.1f} s")
        out |= await _measure_db(db, repetitions, quiet=False)
        out["quiet_s"] = await make_quiet_postgres(db)
        # The update leaves ~300,000 dead index entries at the head of the popularity index until
        # (auto)vacuum removes them; a quiet site is not made by such an update. Measured as it is,
        # then after the VACUUM that autovacuum would run (30 % of the table changed), which is
        # the figure of the verdict.
        before = await _measure_db(db, repetitions, quiet=True)
        out["forecasts_worst_unvacuumed"] = before["forecasts_worst"]
        print(
            "  postgresql: forecasts worst case before VACUUM: median "
            f"{before['forecasts_worst']['p50']:.2f} ms"
        )
        await db.execute("VACUUM ANALYZE comparisons")
        out |= await _measure_db(db, repetitions, quiet=True)
        size = await db.fetchone("SELECT pg_database_size(current_database()) AS size")
        out["size_mb"] = round(int(size["size"]) / 1e6, 1) if size else None
    return out


async def _sqlite(rows: int, repetitions: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="warmupd-bench-p8-") as tmp:
        path = Path(tmp) / "warmupd.db"
        async with SqliteDatabase(path):
            pass  # the real migrations create the schema and its indexes
        generate_s = generate(path, rows)
        print(f"  sqlite: generated {rows:,} comparisons in {generate_s:.1f} s")
        data = await measure(path, repetitions)
        data["size_mb"] = round(path.stat().st_size / 1e6, 1)
    return data | {"generate_s": generate_s}


_WHAT = (
    ("forecasts", "select_for_forecasts (limit 50)"),
    ("insights", "select_for_insights (limit 30)"),
    ("forecasts_worst", "select_for_forecasts, worst case (10 matches)"),
    ("insights_worst", "select_for_insights, worst case (0 matches)"),
)


async def _run(rows: int, repetitions: int, backend: str) -> Result:
    data: dict[str, Any] = {"rows_generated": rows, "repetitions": repetitions}
    verdicts: list[Verdict] = []
    for name in pg.measurable(backend, "P8", verdicts):
        if name == "sqlite":
            data[name] = await _sqlite(rows, repetitions)
        else:
            with pg.fresh_database("p8") as url:
                data[name] = await measure_postgres(url, rows, repetitions)
        for case, what in _WHAT:
            figures = data[name][case]
            verdicts.append(
                Verdict(
                    target="P8",
                    what=f"{what} over {rows:,} rows, {name}",
                    figure=f"median {figures['p50']:.2f} ms (p90 {figures['p90']:.2f} ms), "
                    f"{figures['rows']} rows",
                    reference=f"{TARGET_MS:.0f} ms budget",
                    ratio=figures["p50"] / TARGET_MS,
                    bound=f"≤ {TARGET_MS:.0f} ms",
                    met=figures["p50"] <= TARGET_MS,
                )
            )
    return Result(name="p8_selection", verdicts=verdicts, data=data)


def run(quick: bool = False, rows: int | None = None, backend: str = "both") -> Result:
    """Run P8 on each backend and return its verdicts (printed and saved under ``bench/results/``)."""
    started = time.perf_counter()
    print(f"[p8_selection] machine: {machine_line()}")
    count = rows if rows is not None else (20_000 if quick else 1_000_000)
    result = asyncio.run(_run(count, 5 if quick else 21, backend))
    for name in pg.backends(backend):
        if name not in result.data:
            continue
        for key in (
            "plan_forecasts",
            "plan_insights",
            "plan_forecasts_worst",
            "plan_insights_worst",
        ):
            print(f"  {name}: plan ({key[5:]}):")
            for line in result.data[name][key]:
                print(f"    {line}")
    return finish(result, started)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.p8_selection [--quick | --rows N] [--backend …]``; exit 1 when missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.p8_selection", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20,000 rows only")
    parser.add_argument("--rows", type=int, default=None, help="rows to generate (1,000,000)")
    parser.add_argument("--backend", default="both", choices=["both", *pg.BACKENDS])
    args = parser.parse_args(argv)
    return 0 if all(v.met for v in run(args.quick, args.rows, args.backend).verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
