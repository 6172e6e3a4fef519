"""The dashboard's pure parts: schedules and times in words, the signed session, chart geometry, and
the reads behind the pages (comparison search, cache counts at most a few seconds old)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.fakes import FakeClock
from warmupd.models import Comparison, RunRecord, RunStatus, Trigger
from warmupd.state.cache import CacheStore
from warmupd.state.sqlite import SqliteDatabase
from warmupd.state.store import ComparisonStore
from warmupd.status import CACHE_COUNTS_MAX_AGE_MS, StatusService
from warmupd.ui import charts, session, words

DAY = 86_400_000
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("expr", "said"),
    [
        ("0 2 * * *", "every day at 02:00 UTC"),
        ("0 3 * * 0", "every Sunday at 03:00 UTC"),
        ("30 6 * * 7", "every Sunday at 06:30 UTC"),
        ("0 9 * * 1-5", "every weekday at 09:00 UTC"),
        ("17 * * * *", "every hour at minute 17"),
        ("0 * * * *", "every hour, on the hour"),
        ("@hourly", "every hour, on the hour"),
        ("*/15 * * * *", "every 15 minutes"),
        ("* * * * *", "every minute"),
        ("0 4 1 * *", "on the 1st of every month at 04:00 UTC"),
        ("0 4 22 * *", "on the 22nd of every month at 04:00 UTC"),
        ("0 4 13 * *", "on the 13th of every month at 04:00 UTC"),
        ("0 4 1 1 *", "on the schedule 0 4 1 1 * (UTC)"),
        ("0 4 1 * 1", "on the schedule 0 4 1 * 1 (UTC)"),
        ("0 4 * * 1,3", "on the schedule 0 4 * * 1,3 (UTC)"),
        ("0 */2 * * *", "on the schedule 0 */2 * * * (UTC)"),
        ("*/0 * * * *", "on the schedule */0 * * * * (UTC)"),
        ("*/5 * * * * *", "on the schedule */5 * * * * * (UTC)"),
    ],
)
def test_cron_in_words(expr: str, said: str) -> None:
    assert words.cron_in_words(expr, "UTC") == said


def test_times_and_sizes_in_words() -> None:
    assert words.iso_of(None) == "—"
    assert words.iso_of(NOW) == "2026-01-01 00:00:00 UTC"
    assert words.relative(None, NOW) == "—"
    assert words.relative(NOW + 400, NOW) == "now"
    assert words.relative(NOW + 90_000, NOW) == "in 1 min 30 s"
    assert words.relative(NOW - 5_000, NOW) == "5.0 s ago"
    assert [words.span(ms) for ms in (None, 850, 42_000, 180_000, 7_200_000, 7_500_000)] == [
        "—",
        "850 ms",
        "42 s",
        "3 min",
        "2 h",
        "2 h 5 min",
    ]
    assert words.span(3 * DAY) == "3 d"
    assert words.span(3 * DAY + 3_600_000) == "3 d 1 h"
    assert [words.size(n) for n in (512, 40_960, 5 * 2**30, 3 * 2**40)] == [
        "512 B",
        "40.0 KiB",
        "5.0 GiB",
        "3072.0 GiB",
    ]


def test_session_values_are_signed_expiring_and_tied_to_the_secret() -> None:
    value = session.issue("job-secret-0123456789", NOW)
    assert "job-secret" not in value
    assert session.valid(value, "job-secret-0123456789", NOW + 1)
    assert not session.valid(value, "job-secret-0123456789", NOW + session.MAX_AGE_S * 1000)
    assert not session.valid(value, "another-secret-0123456789", NOW)  # secret rotated
    assert not session.valid(value, None, NOW)  # fails closed
    assert not session.valid(None, "job-secret-0123456789", NOW)
    expiry, nonce, signature = value.split(".")
    forged = f"{int(expiry) + 10**9}.{nonce}.{signature}"
    assert not session.valid(forged, "job-secret-0123456789", NOW)
    assert not session.valid("x.y.z", "job-secret-0123456789", NOW)


def run(run_id: int, job: str, status: RunStatus, start: int, end: int | None) -> RunRecord:
    return RunRecord(
        id=run_id,
        job=job,
        status=status,
        trigger=Trigger.SCHEDULE,
        node="n",
        started_at_ms=start,
        finished_at_ms=end,
        reason="paused" if status is RunStatus.SKIPPED else None,
    )


def test_timeline_has_a_lane_per_job_and_a_bar_per_run() -> None:
    import xml.etree.ElementTree as ET

    runs = [
        run(1, "housekeeping", RunStatus.SUCCESS, NOW - DAY, NOW - DAY + 60_000),
        run(2, "housekeeping", RunStatus.SKIPPED, NOW - 2 * DAY, NOW - 2 * DAY),
        run(3, "warmup-forecasts", RunStatus.RUNNING, NOW - 3_600_000, None),
        run(4, "gone-job", RunStatus.FAILED, NOW - 8 * DAY, NOW - 6 * DAY),
    ]
    runs[0] = RunRecord(**{**runs[0].__dict__, "reason": "<script>alert(1)</script>"})
    t = charts.timeline(runs, ["warmup-forecasts", "housekeeping"], NOW)
    assert [lane["job"] for lane in t["lanes"]] == ["warmup-forecasts", "housekeeping", "gone-job"]
    assert t["count"] == 4
    svg = ET.fromstring(f"<svg>{t['bars']}</svg>")  # well-formed: the reason was escaped
    bars = {int(a.get("data-run-id")): a for a in svg.findall("a")}
    assert bars[1].find("title").text.startswith("Run 1 of housekeeping: success (<script>")
    assert "<script>" not in t["bars"]
    rect = {k: float(v) for k, v in bars[2].find("rect").attrib.items()}
    assert rect["height"] == charts.BAR_HEIGHT / 2  # skipped: a short bar, not only a colour
    running = {k: float(v) for k, v in bars[3].find("rect").attrib.items()}
    assert running["x"] + running["width"] == pytest.approx(charts.TIMELINE_WIDTH, abs=0.2)
    assert bars[3].find("circle") is not None  # running: a dot
    assert bars[4].find("path") is not None  # failed: a cross
    assert float(bars[4].find("rect").get("x")) == 0  # clipped at the window's start
    assert "paused" in bars[2].find("title").text
    assert len(t["ticks"]) == 7
    assert t["ticks"][-1]["anchor"] == "end"


def test_forecast_chart_draws_series_bands_and_peaks() -> None:
    series = [{"date": f"2026-01-{d:02d}", "a": d, "b": 50 - d} for d in range(1, 11)]
    forecast = {
        "points": [
            {
                "date": f"2026-01-{d:02d}",
                "value": 10,
                "lower80": 8,
                "upper80": 12,
                "lower95": 5,
                "upper95": 130,
            }
            for d in range(11, 16)
        ]
    }
    peaks = [
        {"term": "termB", "peakDate": "2026-01-01", "magnitude": 49},
        {"term": "termA", "peakDate": "2025-01-01", "magnitude": 9},  # outside: not drawn
        {"term": "termA", "peakDate": "not a date"},
    ]
    c = charts.forecast_chart(
        series, {"termA": "a", "termB": "b"}, {"termA": forecast, "termB": None}, peaks
    )
    assert not c["empty"]
    assert c["lines"]["termA"].count(",") == 10
    assert set(c["forecasts"]) == {"termA"}
    assert set(c["forecasts"]["termA"]) == {"line", "band80", "band95"}
    assert c["forecasts"]["termA"]["band95"].count(",") == 10  # upper then lower, 5 each
    assert [p["number"] for p in c["peaks"]] == [1]
    assert c["x_ticks"][0]["anchor"] == "start"
    assert c["x_ticks"][-1]["anchor"] == "end"
    assert charts.forecast_chart([], {"termA": "a", "termB": "b"}, {}, [])["empty"]


async def test_search_by_slug_or_term_prefix_most_viewed_first(tmp_path: Path) -> None:
    async with SqliteDatabase(tmp_path / "s.db") as db:
        store = ComparisonStore(db)
        for slug, a, b, views in (
            ("tea-vs-coffee", "tea", "coffee", 5),
            ("coffee-vs-cocoa", "coffee", "cocoa", 50),
            ("rust-vs-go", "rust", "go", 7),
        ):
            comparison = Comparison(
                slug=slug,
                term_a=a,
                term_b=b,
                timeframe="today 1-m",
                series=({"date": "2026-01-01", a: 1, b: 2},),
            )
            await store.upsert(comparison, NOW)
            await store.add_views(slug, views, NOW)
        assert [c.slug for c in await store.search("co", 10)] == [
            "coffee-vs-cocoa",
            "tea-vs-coffee",
        ]
        assert [c.slug for c in await store.search("", 2)] == ["coffee-vs-cocoa", "rust-vs-go"]
        assert [c.slug for c in await store.search("rust-", 10)] == ["rust-vs-go"]
        assert await store.search("zzz", 10) == []


async def test_cache_counts_are_recounted_in_the_background_when_old(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    async with SqliteDatabase(tmp_path / "c.db") as db:
        cache = CacheStore(db)

        async def put(key: str) -> None:
            await cache.put(
                key,
                kind="forecast",
                slug="s",
                data_hash="h",
                version="v",
                value={},
                now_ms=clock.wall_ms(),
                fresh_ttl_ms=DAY,
                stale_ttl_ms=2 * DAY,
                fence_key="f",
                fence=1,
            )

        status = StatusService(
            db=db,
            runs=None,  # type: ignore[arg-type]
            cache=cache,
            job_list=None,  # type: ignore[arg-type]
            on_demand=None,  # type: ignore[arg-type]
            scheduler=lambda: None,
            lock_state=lambda: None,  # type: ignore[arg-type,return-value]
            node="n",
            clock=clock,
            started_ms=NOW,
        )
        await put("a")
        assert await status.cache_counts(clock.wall_ms()) == {"fresh": 1, "stale": 0, "expired": 0}
        await put("b")
        assert (await status.cache_counts(clock.wall_ms()))["fresh"] == 1  # a recent count
        clock.set_wall_ms(NOW + CACHE_COUNTS_MAX_AGE_MS + 1)
        assert (await status.cache_counts(clock.wall_ms()))["fresh"] == 1  # answered at once…
        assert status._counting is not None
        await status._counting  # …while one recount runs
        assert (await status.cache_counts(clock.wall_ms()))["fresh"] == 2
        assert await status.live_nodes() == ["n"]
        await asyncio.sleep(0)


async def test_cache_totals_on_the_indexes_match_the_grouped_counts(tmp_path: Path) -> None:
    async with SqliteDatabase(tmp_path / "t.db") as db:
        cache = CacheStore(db)
        for i, (fresh_ms, stale_ms) in enumerate([(50, 100), (5, 100), (5, 8), (30, 30)]):
            await cache.put(
                f"k{i}",
                kind="insights" if i % 2 else "forecast",
                slug="s",
                data_hash="h",
                version="v",
                value={},
                now_ms=0,
                fresh_ttl_ms=fresh_ms,
                stale_ttl_ms=stale_ms,
                fence_key="f",
                fence=1,
            )
        for now in (0, 10, 40, 200):
            grouped = {"fresh": 0, "stale": 0, "expired": 0}
            for (_, state), n in (await cache.counts(now)).items():
                grouped[state] += n
            assert await cache.totals(now) == grouped, now
        plan = " ".join(
            str(tuple(r))
            for r in await db.fetchall(
                "EXPLAIN QUERY PLAN SELECT count(*) FROM cache_entries WHERE fresh_until > 1"
            )
        )
        assert "COVERING INDEX cache_entries_fresh_until" in plan
