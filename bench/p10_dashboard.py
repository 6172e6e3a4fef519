"""P10 — the dashboard's overview (``GET /ui``, SPEC §15) with 10,000 runs and 1,000,000 comparisons.

Run: ``python -m bench.p10_dashboard`` (``--quick``: 20,000 comparisons, 2,000 runs).

The state file is made by :class:`warmupd.state.sqlite.SqliteDatabase` (the real migrations and indexes) and filled
with stdlib ``sqlite3``: the comparisons of P8 (same generator), 10,000 runs of the three jobs spread
over the 90 days of the default retention (so ~780 fall in the timeline's 7 days; 8 % failed with
errors, 10 % skipped), and three cache entries (both forecasts and the insights) for each of the
100,000 most viewed comparisons, with a mix of fresh, stale and expired. Then the real daemon
(``warmupd serve``) opens it and the overview is fetched sequentially over loopback.

Figure: the median time from request to the last byte of ``GET /ui`` measured by the client (an
upper bound of the server's time: it adds the loopback round trip), p90 beside it, and the server's
own mean from its ``warmupd_http_request_duration_seconds`` histogram. Target: median ≤ 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sqlite3
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import Result, Verdict, describe, finish, machine_line
from bench.p8_selection import NOW_MS as _P8_NOW
from bench.p8_selection import generate
from bench.procs import BenchDaemon
from warmupd.state.sqlite import SqliteDatabase

DAY_MS = 86_400_000
TARGET_MS = 50.0
JOBS = ("warmup-forecasts", "warmup-ai-explanations", "housekeeping")
_RUN = """INSERT INTO job_runs(job, status, reason, trigger, node, started_at, finished_at,
    duration_ms, processed, skipped, failed, errors, metadata) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"""
_ENTRY = """INSERT INTO cache_entries(key, kind, slug, data_hash, version, value, created_at,
    fresh_until, stale_until, fence_key, fence) VALUES (?,?,?,?,?,?,?,?,?,?,?)"""


def fill_runs(path: Path, runs: int, now_ms: int, seed: int = 10) -> None:
    """``runs`` finished runs spread evenly over the 90 days before ``now_ms``."""
    rng = random.Random(seed)
    rows = []
    for i in range(runs):
        started = now_ms - 90 * DAY_MS + i * (90 * DAY_MS // runs)
        roll = rng.random()
        status, reason, errors = "success", None, []
        if roll < 0.08:
            status, reason = "failed", "all_items_failed"
            errors = [f"term-{n}-a-vs-term-{n}-b: HTTP 500 from the model" for n in range(10)]
        elif roll < 0.18:
            status, reason = "skipped", rng.choice(["locked_elsewhere", "misfired", "paused"])
        duration = 0 if status == "skipped" else rng.randrange(200, 600_000)
        rows.append(
            (
                JOBS[i % 3],
                status,
                reason,
                "schedule",
                "bench:1:abcdef",
                started,
                started + duration,
                duration,
                rng.randrange(50),
                rng.randrange(5),
                len(errors),
                json.dumps(errors),
                json.dumps({"limit": 50, "concurrency": 5, "selected": 50}),
            )
        )
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("BEGIN")
        conn.executemany(_RUN, rows)
        conn.execute("COMMIT")
    conn.close()


def fill_cache(path: Path, comparisons: int, now_ms: int, seed: int = 11) -> None:
    """Three entries for each of the ``comparisons`` most viewed comparisons."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        slugs = [
            (r[0], r[1])
            for r in conn.execute(
                "SELECT slug, data_hash FROM comparisons ORDER BY view_count DESC LIMIT ?",
                (comparisons,),
            )
        ]
        conn.execute("BEGIN")
        rows = []
        for slug, data_hash in slugs:
            created = now_ms - rng.randrange(40 * DAY_MS)
            for key, kind in (
                (f"forecast:{slug}:termA:{data_hash}", "forecast"),
                (f"forecast:{slug}:termB:{data_hash}", "forecast"),
                (f"insights:{slug}:{data_hash}", "insights"),
            ):
                rows.append(
                    (
                        key,
                        kind,
                        slug,
                        data_hash,
                        "v",
                        "{}",
                        created,
                        created + 7 * DAY_MS,
                        created + 30 * DAY_MS,
                        "f",
                        1,
                    )
                )
        conn.executemany(_ENTRY, rows)
        conn.execute("COMMIT")
    finally:
        conn.close()


def _get(url: str) -> tuple[float, int, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as resp:  # loopback only
        body = resp.read()
        status = resp.status
    return (time.perf_counter() - started) * 1000, status, body


def _server_mean_ms(url: str) -> float | None:
    _, _, body = _get(url + "/metrics")
    text = body.decode()
    total = re.search(r'warmupd_http_request_duration_seconds_sum\{route="/ui"\} (\S+)', text)
    count = re.search(r'warmupd_http_request_duration_seconds_count\{route="/ui"\} (\S+)', text)
    if not total or not count or float(count.group(1)) == 0:
        return None
    return float(total.group(1)) / float(count.group(1)) * 1000


def run(quick: bool, rows: int | None = None, runs: int | None = None) -> Result:
    """Build the file, start the daemon, time the overview."""
    started = time.perf_counter()
    rows = rows or (20_000 if quick else 1_000_000)
    runs = runs or (2_000 if quick else 10_000)
    repetitions = 20 if quick else 100
    data: dict[str, Any] = {"comparisons": rows, "runs": runs, "machine": machine_line()}
    with tempfile.TemporaryDirectory(prefix="warmupd-p10-") as tmp:
        daemon = BenchDaemon(Path(tmp) / "d", {"daemon": {"pool_workers": 1}})
        db_path = daemon.dir / "state" / "warmupd.db"

        async def migrate() -> None:
            async with SqliteDatabase(db_path):
                pass

        asyncio.run(migrate())
        # The generated comparisons are dated around P8's fixed "now"; the runs and cache
        # entries around the real now, because the daemon renders with its wall clock.
        now_ms = int(time.time() * 1000)
        data["fill_s"] = round(generate(db_path, rows), 1)
        fill_runs(db_path, runs, now_ms)
        fill_cache(db_path, min(rows, 100_000), now_ms)
        data["p8_now_ms"] = _P8_NOW
        with daemon.start():
            for _ in range(5):  # warm: templates compiled, first cache count taken
                _get(daemon.url + "/ui")
            times, size = [], 0
            for _ in range(repetitions):
                ms, status, body = _get(daemon.url + "/ui")
                assert status == 200
                times.append(ms)
                size = len(body)
            server_mean = _server_mean_ms(daemon.url)
    stats = describe(times)
    data.update(client_ms=stats, page_bytes=size, server_mean_ms=server_mean)
    print(
        f"GET /ui: median {stats['p50']:.1f} ms, p90 {stats['p90']:.1f} ms (client); "
        f"server mean {server_mean or float('nan'):.1f} ms; page {size / 1024:.0f} KiB"
    )
    verdict = Verdict(
        target="P10",
        what=f"overview render, {runs:,} runs / {rows:,} comparisons",
        figure=f"median {stats['p50']:.1f} ms (p90 {stats['p90']:.1f} ms) request to last byte",
        reference="50 ms of server time (the client's figure includes loopback)",
        ratio=stats["p50"] / TARGET_MS,
        bound="ratio ≤ 1",
        met=stats["p50"] <= TARGET_MS,
    )
    return finish(Result("p10_dashboard", [verdict], data=data), started)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.p10_dashboard [--quick] [--rows N] [--runs N]``."""
    parser = argparse.ArgumentParser(prog="python -m bench.p10_dashboard", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--runs", type=int)
    args = parser.parse_args(argv)
    result = run(args.quick, args.rows, args.runs)
    return 0 if all(v.met for v in result.verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
