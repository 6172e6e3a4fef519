"""JSONL import and demo data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from warmupd.cli import main
from warmupd.importer import import_lines, load_demo_data
from warmupd.models import data_hash
from warmupd.state.sqlite import SqliteDatabase
from warmupd.state.store import ComparisonStore


def _line(slug: str, n: int = 10) -> str:
    series = [{"date": f"2026-01-{i + 1:02d}", "tea": i, "coffee": 50 + i / 2} for i in range(n)]
    return json.dumps(
        {"slug": slug, "terms": ["tea", "coffee"], "timeframe": "30d", "series": series}
    )


async def test_import_loads_good_lines_and_reports_bad_ones(db: SqliteDatabase) -> None:
    lines = [
        _line("tea-vs-coffee"),
        "{not json",
        json.dumps({"slug": "Bad Slug!", "terms": ["a", "b"], "timeframe": "7d", "series": []}),
        "",
        _line("second-one", 5),
        json.dumps({"slug": "x", "terms": ["a", "b"], "timeframe": "7d", "series": [], "extra": 1}),
        json.dumps(
            {
                "slug": "y",
                "terms": ["a", "b"],
                "timeframe": "7d",
                "series": [
                    {"date": "2026-01-02", "a": 1, "b": 2},
                    {"date": "2026-01-01", "a": 1, "b": 2},
                ],
            }
        ),
        json.dumps(
            {
                "slug": "z",
                "terms": ["a", "b"],
                "timeframe": "7d",
                "series": [{"date": "2026-01-02", "a": 101, "b": 2}],
            }
        ),
        "[1, 2]",
    ]
    report = await import_lines(db, lines, now_ms=1_000)
    assert (report.created, report.updated) == (2, 0)
    reasons = dict(report.errors)
    assert sorted(reasons) == [2, 3, 6, 7, 8, 9]
    assert "invalid JSON" in reasons[2]
    assert reasons[3].startswith("slug:")
    assert reasons[6].startswith("extra:")
    assert reasons[7].startswith("series[1].date:")
    assert reasons[8].startswith("series[0].a:")
    store = ComparisonStore(db)
    loaded = await store.get("tea-vs-coffee")
    assert loaded is not None
    assert loaded.values("tea")[:3] == [0.0, 1.0, 2.0]
    assert loaded.data_hash == data_hash(list(loaded.series), "30d", "tea", "coffee")
    # Re-import updates and keeps the count stable.
    again = await import_lines(db, [_line("tea-vs-coffee")], now_ms=2_000)
    assert (again.created, again.updated) == (0, 1)
    assert await store.count() == 2


def test_import_cli_reports_line_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n')
    data = tmp_path / "in.jsonl"
    data.write_text("\n".join([_line("good-one"), "oops", _line("good-two")]) + "\n")
    assert main(["import", str(data), "-c", str(config)]) == 0
    captured = capsys.readouterr()
    assert f"{data}:2: invalid JSON" in captured.err
    assert "imported 2 comparisons" in captured.out


async def test_demo_data_is_realistic_and_deterministic(db: SqliteDatabase, tmp_path: Path) -> None:
    assert await load_demo_data(db, count=25, seed=3, now_ms=1_767_225_600_000) == 25
    store = ComparisonStore(db)
    comps = await store.select_for_forecasts(1_767_225_600_000, 7 * 86_400_000, 100)
    assert len(comps) == 25
    views = [c.view_count for c in comps]
    assert views == sorted(views, reverse=True)
    assert views[0] > 10 * max(views[-1], 1)  # skewed popularity
    for c in comps:
        values = c.values(c.term_a) + c.values(c.term_b)
        assert max(values) == 100  # one shared 0-100 scale
        assert min(values) >= 0
        assert len(c.series) >= 30
    assert await load_demo_data(db, count=25, seed=3, now_ms=1, only_if_empty=True) == 0
    async with SqliteDatabase(tmp_path / "other.db") as other:
        await load_demo_data(other, count=25, seed=3, now_ms=1_767_225_600_000)
        again = await ComparisonStore(other).get(comps[0].slug)
    assert again is not None
    assert again.data_hash == comps[0].data_hash
