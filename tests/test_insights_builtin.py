"""The built-in insights provider: peak detector, figures, template text, determinism, shape."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from typing import Any

import numpy as np
import pytest
from scipy.signal import find_peaks, peak_prominences

from warmupd.errors import InsufficientData, ProducerError
from warmupd.models import Comparison
from warmupd.producers import InsightsProducer
from warmupd.producers.analysis import Prepared, prepare
from warmupd.producers.insights_builtin import (
    BuiltinInsights,
    analyse,
    builtin_insights,
    compute_facts,
)
from warmupd.producers.peaks import local_maxima, prominence

NOW = 1_750_000_000_000
A, B = "iphone", "android"


def make(
    a: np.ndarray, b: np.ndarray, *, step_days: int = 1, start: str = "2024-01-01", **kw: Any
) -> Comparison:
    d0 = date.fromisoformat(start)
    series = tuple(
        {
            "date": (d0 + timedelta(days=i * step_days)).isoformat(),
            A: round(float(np.clip(va, 0, 100))),
            B: round(float(np.clip(vb, 0, 100))),
        }
        for i, (va, vb) in enumerate(zip(a, b, strict=True))
    )
    return Comparison(
        slug="iphone-vs-android", term_a=A, term_b=B, timeframe="12m", series=series, **kw
    )


def day(start: str, i: int, step_days: int = 1) -> str:
    return (date.fromisoformat(start) + timedelta(days=i * step_days)).isoformat()


def peak_dates(facts: dict[str, Any], term: str) -> list[str]:
    return [p["date"] for p in facts["peaks"] if p["term"] == term]


def near(found: list[str], planted: list[str], tol_days: int) -> bool:
    """Every planted date has a found date within ``tol_days`` and nothing else was found."""
    f = [date.fromisoformat(x) for x in found]
    p = [date.fromisoformat(x) for x in planted]
    return len(f) == len(p) and all(any(abs((x - y).days) <= tol_days for x in f) for y in p)


def daily_planted() -> tuple[Comparison, list[int], list[int]]:
    rng = np.random.default_rng(7)
    n = 180
    t = np.arange(n)
    a = 50 + 10 * np.sin(2 * np.pi * t / 90) + rng.normal(0, 1.5, n)
    b = 25 + 0.05 * t + rng.normal(0, 1.5, n)
    spikes_a, spikes_b = [30, 95, 150], [60, 120]
    a[30] += 40
    a[95:99] += 25  # a four-day plateau
    a[150] += 30
    b[60] += 35
    b[120] += 20
    return make(a, b), spikes_a, [*spikes_b]


def test_planted_daily_peaks_are_found_within_a_day() -> None:
    comp, _spikes_a, spikes_b = daily_planted()
    facts = compute_facts(comp)
    # The plateau's peak may be any day of the plateau; its middle is within two days of each end.
    found_a = peak_dates(facts, "termA")
    assert near(found_a, [day("2024-01-01", i) for i in (30, 96, 150)], tol_days=2)
    assert near(peak_dates(facts, "termB"), [day("2024-01-01", i) for i in spikes_b], tol_days=1)
    spikes = {p["date"]: p for p in facts["peaks"]}
    assert spikes[day("2024-01-01", 30)]["shape"] == "spike"
    plateau = next(p for p in facts["peaks"] if p["term"] == "termA" and p["shape"] != "spike")
    assert plateau["shape"] == "sustained_high"
    assert plateau["durationDays"] >= 4
    assert spikes[day("2024-01-01", 30)]["isGlobalMax"] is True
    # Each peak records the other term's reaction; B did nothing on day 30.
    assert spikes[day("2024-01-01", 30)]["otherTermRose"] is False


def test_top_three_per_term_ranked_by_prominence_with_separation() -> None:
    rng = np.random.default_rng(3)
    n = 120
    a = 30 + rng.normal(0, 1, n)
    for i, h in [(10, 20), (30, 50), (50, 30), (70, 40), (90, 25)]:
        a[i] += h
    a[33] += 45  # a second spike 3 days after the best: closer than 7 days, so dropped
    comp = make(a, np.full(n, 20.0))
    peaks = [p for p in compute_facts(comp)["peaks"] if p["term"] == "termA"]
    assert [p["date"] for p in peaks] == [day("2024-01-01", i) for i in (30, 70, 50)]
    assert [p["peakId"] for p in peaks] == [f"termA-{day('2024-01-01', i)}" for i in (30, 70, 50)]


def test_weekly_planted_peaks_found_and_yearly_recurrence_flagged() -> None:
    rng = np.random.default_rng(11)
    n = 260  # five years of weeks
    t = np.arange(n)
    a = 40 + 8 * np.sin(2 * np.pi * t / 52) + rng.normal(0, 1.5, n)
    b = 30 + rng.normal(0, 1.5, n)
    for year in range(1, 4):  # the same week in three years
        a[20 + 52 * year] += 35
    b[100] += 40
    comp = make(a, b, step_days=7, start="2020-01-05")
    facts = compute_facts(comp)
    assert facts["comparison"]["granularity"] == "weekly"
    assert near(
        peak_dates(facts, "termA"),
        [day("2020-01-05", 20 + 52 * y, 7) for y in range(1, 4)],
        tol_days=7,
    )
    assert all(p["recurring"] for p in facts["peaks"] if p["term"] == "termA")
    assert near(peak_dates(facts, "termB"), [day("2020-01-05", 100, 7)], tol_days=7)
    (b_peak,) = [p for p in facts["peaks"] if p["term"] == "termB"]
    assert b_peak["recurring"] is False
    pack = builtin_insights(comp, now_ms=NOW, prompt_version="1")
    text = next(p["text"] for p in pack["peakExplanations"] if p["term"] == "termB")
    assert "the week of" in text


@pytest.mark.parametrize("step_days", [1, 7])
def test_smooth_series_have_no_peaks(step_days: int) -> None:
    rng = np.random.default_rng(5)
    n = 200
    t = np.arange(n)
    period = 60 if step_days == 1 else 52
    a = 50 + 25 * np.sin(2 * np.pi * t / period) + rng.normal(0, 1, n)
    b = 30 + 10 * np.cos(2 * np.pi * t / period) + rng.normal(0, 1, n)
    comp = make(a, b, step_days=step_days)
    assert compute_facts(comp)["peaks"] == []
    pack = builtin_insights(comp, now_ms=NOW, prompt_version="1")
    assert pack["peakExplanations"] == []
    assert not any("peak" in k for k in pack["meaningExplanation"]["keyDifferences"])


def test_prominence_and_maxima_match_scipy() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = np.round(rng.normal(50, 15, 150))
        y[rng.integers(1, 149, 10)] = 70  # plateaus and ties exercise the flat-top rule
        ours = local_maxima(y)
        theirs, _ = find_peaks(y)
        assert ours == theirs.tolist()
        proms, left, right = peak_prominences(y, theirs)
        for i, peak in enumerate(ours):
            assert prominence(y, peak) == (proms[i], left[i], right[i])


def test_text_names_both_terms_and_the_correct_leader() -> None:
    rng = np.random.default_rng(1)
    n = 90
    hi, lo = 60 + rng.normal(0, 2, n), 30 + rng.normal(0, 2, n)
    for a, b, leader, other in [(hi, lo, A, B), (lo, hi, B, A)]:
        pack = builtin_insights(make(a, b), now_ms=NOW, prompt_version="1")
        meaning = pack["meaningExplanation"]
        assert meaning["text"].startswith(f"{leader} draws more search interest than {other}: ")
        assert meaning["winner"] == ("termA" if leader == A else "termB")
        assert 3 <= len(meaning["keyDifferences"]) <= 5
        assert meaning["keyDifferences"][0].startswith(
            f"{leader} averages 2.0× the search interest"
        )
        assert A in meaning["text"]
        assert B in meaning["text"]


def test_tie_and_recent_crossover_are_told() -> None:
    rng = np.random.default_rng(2)
    n = 120
    a, b = 40 + rng.normal(0, 3, n), 40 + rng.normal(0, 3, n)
    tie = builtin_insights(make(a, b), now_ms=NOW, prompt_version="1")["meaningExplanation"]
    assert tie["winner"] == "tie"
    assert tie["text"].startswith(f"{A} and {B} draw similar search interest")

    a = np.r_[np.full(100, 60.0), np.full(20, 30.0)] + rng.normal(0, 1, n)
    b = np.full(n, 40.0) + rng.normal(0, 1, n)
    text = builtin_insights(make(a, b), now_ms=NOW, prompt_version="1")["meaningExplanation"][
        "text"
    ]
    assert text.startswith(f"{A} draws more search interest than {B}")
    assert f"But {B} overtook it on Apr 10, 2024" in text  # day 100 of 2024


def test_momentum_and_weekday_pattern_are_reported() -> None:
    n = 84
    t = np.arange(n)
    weekday = (np.array([date(2024, 1, 1).weekday()]) + t) % 7
    a = 50 - np.where(weekday >= 5, 15, 0).astype(float)  # weekends dip
    b = np.r_[np.full(n - 14, 20.0), np.full(7, 20.0), np.full(7, 30.0)]  # +50 % last week
    pack = builtin_insights(make(a, b), now_ms=NOW, prompt_version="1")
    meaning = pack["meaningExplanation"]
    assert f"{B} is gaining: +50% over the last 7 days while {A} is flat." in meaning["text"]
    assert any(f"{A} dips on weekends" in k for k in meaning["keyDifferences"])


def test_hash_is_deterministic_and_excludes_timestamps() -> None:
    comp, _, _ = daily_planted()
    one = builtin_insights(comp, now_ms=NOW, prompt_version="1")
    two = builtin_insights(comp, now_ms=NOW + 3_600_000, prompt_version="1")
    assert one["aiInsightsHash"] == two["aiInsightsHash"]
    assert one["id"] == two["id"]
    assert one["generatedAt"] != two["generatedAt"]
    strip = re.compile(r'"generatedAt":"[^"]*"')
    assert strip.sub("", json.dumps(one, separators=(",", ":"))) == strip.sub(
        "", json.dumps(two, separators=(",", ":"))
    )
    other_prompt = builtin_insights(comp, now_ms=NOW, prompt_version="2")
    assert other_prompt["aiInsightsHash"] != one["aiInsightsHash"]
    series = list(comp.series)
    series[10] = {**series[10], A: series[10][A] + 5}
    changed = Comparison(
        slug=comp.slug, term_a=A, term_b=B, timeframe=comp.timeframe, series=tuple(series)
    )
    assert (
        builtin_insights(changed, now_ms=NOW, prompt_version="1")["aiInsightsHash"]
        != one["aiInsightsHash"]
    )


def test_output_has_the_spec_shape_and_no_placeholders() -> None:
    comp, _, _ = daily_planted()
    pack = builtin_insights(comp, now_ms=NOW, prompt_version="1")
    assert set(pack) >= {
        "id", "meaningExplanation", "peakExplanations", "generatedAt", "provider", "model",
        "promptVersion", "aiInsightsHash", "dataFreshness",
    }  # fmt: skip
    assert pack["provider"] == "builtin"
    assert pack["model"] == "builtin-1"
    assert pack["generatedAt"] == "2025-06-15T15:06:40.000Z"
    assert set(pack["meaningExplanation"]) >= {
        "text", "keyDifferences", "confidence", "generatedAt", "promptVersion",
    }  # fmt: skip
    assert len(pack["peakExplanations"]) == 5
    for pk in pack["peakExplanations"]:
        assert set(pk) >= {
            "peakId", "term", "peakDate", "magnitude", "prominence", "text", "confidence",
            "generatedAt", "promptVersion",
        }  # fmt: skip
        assert 0 <= pk["magnitude"] <= 100
        assert pk["prominence"] >= 10
        assert 5 <= pk["confidence"] <= 95
        assert pk["text"].startswith(f"{pk['termName']} hit {pk['magnitude']:.0f}/100 on ")
    texts = [pack["meaningExplanation"]["text"], *pack["meaningExplanation"]["keyDifferences"]]
    texts += [p["text"] for p in pack["peakExplanations"]]
    for text in texts:
        assert not re.search(r"[{}]|\bNone\b|\bnan\b|\binf\b|TODO|lorem", text), text
    json.dumps(pack, allow_nan=False)  # plain JSON, no NaN


def test_google_values_and_gaps_are_normalised() -> None:
    series = tuple(
        {"date": day("2024-01-01", i), A: v, B: 10}
        for i, v in enumerate(["<1", 4, None, 8, 150, 3, -5, 2])
    )
    prepared = prepare(Comparison(slug="s", term_a=A, term_b=B, timeframe="7d", series=series))
    assert prepared.a.tolist() == [0.5, 4.0, 6.0, 8.0, 100.0, 3.0, 0.0, 2.0]
    assert prepared.step == "D"


def test_bad_series_fail_with_producer_errors() -> None:
    short = tuple({"date": day("2024-01-01", i), A: 1, B: 2} for i in range(3))
    with pytest.raises(InsufficientData):
        compute_facts(Comparison(slug="s", term_a=A, term_b=B, timeframe="7d", series=short))
    unordered = tuple({"date": d, A: 1, B: 2} for d in ["2024-01-02", "2024-01-01"] * 3)
    with pytest.raises(ProducerError, match="ascending"):
        compute_facts(Comparison(slug="s", term_a=A, term_b=B, timeframe="7d", series=unordered))
    empty = tuple({"date": day("2024-01-01", i), A: None, B: 2} for i in range(6))
    with pytest.raises(ProducerError, match="no numeric values"):
        compute_facts(Comparison(slug="s", term_a=A, term_b=B, timeframe="7d", series=empty))


async def test_adapter_matches_the_pure_function_and_uses_the_runner() -> None:
    comp, _, _ = daily_planted()
    calls: list[str] = []

    async def runner(fn: Callable[[Comparison], dict[str, Any]], c: Comparison) -> dict[str, Any]:
        calls.append(fn.__name__)
        return fn(c)

    producers: list[InsightsProducer] = [
        BuiltinInsights(prompt_version="1"),
        BuiltinInsights(prompt_version="1", facts_runner=runner),
    ]
    expected = builtin_insights(comp, now_ms=NOW, prompt_version="1")
    for producer in producers:
        producer.reset_breaker()
        assert (producer.provider, producer.model) == ("builtin", "builtin-1")
        assert await producer.insights(comp, now_ms=NOW) == expected
        await producer.close()
    assert calls == ["analyse"]


async def test_runs_in_a_spawned_process_pool() -> None:
    comp, _, _ = daily_planted()
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        remote = await loop.run_in_executor(pool, analyse, comp)
    assert remote == analyse(comp)


def test_prepared_k_is_bounded_by_half_the_series() -> None:
    p = Prepared(
        dates=np.array(["2024-01-01", "2024-01-02"], dtype="datetime64[D]"),
        date_strs=("2024-01-01", "2024-01-02"),
        a=np.zeros(2),
        b=np.zeros(2),
        step="D",
    )
    assert p.k == 1


def test_monthly_data_yearly_cycle_and_month_dates() -> None:
    n = 60
    t = np.arange(n)
    a = 50 + 20 * np.cos(2 * np.pi * (t - 11) / 12)  # highest every December
    b = np.full(n, 20.0)
    b[30] = 60  # a one-month spike
    d0 = date(2020, 1, 1)
    series = tuple(
        {"date": date(d0.year + i // 12, i % 12 + 1, 1).isoformat(), A: float(a[i]), B: float(b[i])}
        for i in range(n)
    )
    comp = Comparison(slug="s", term_a=A, term_b=B, timeframe="all", series=series)
    facts = compute_facts(comp)
    assert facts["comparison"]["granularity"] == "monthly"
    assert facts["terms"]["termA"]["seasonality"]["kind"] == "annual"
    assert facts["terms"]["termA"]["seasonality"]["peakMonth"] == "December"
    assert peak_dates(facts, "termB") == ["2022-07-01"]
    pack = builtin_insights(comp, now_ms=NOW, prompt_version="1")
    assert any("highest around December" in k for k in pack["meaningExplanation"]["keyDifferences"])
    (peak,) = pack["peakExplanations"]
    assert peak["text"].startswith(f"{B} hit 60/100 in Jul 2022, ")
