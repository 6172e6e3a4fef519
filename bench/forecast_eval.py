"""P9 — forecast quality: the default engine against seasonal naive on a fixed benchmark set.

Run: ``python -m bench.forecast_eval`` (``--quick`` for a smaller set, ``--workers N``).

The set (all offline, all deterministic):

* real series shipped inside statsmodels: Mauna Loa co2 (weekly; 12-month and 5-year windows at
  several origins), El Niño sea temperatures and euro-area electrical equipment orders (monthly,
  10-year windows). They are affinely rescaled so each whole window spans 5–95, the engine's 0–100
  domain without clamping; MASE is invariant under that map.
* seeded synthetic search-interest-like series: a level, a slow trend, sometimes a level shift,
  weekday (daily) or annual (weekly) pattern, proportional noise, decaying news spikes, normalised
  like Google Trends (the period's maximum is 100) and rounded to integers. Daily 30/90/180/365
  points and weekly 52 ("12m") and 260 ("5y") points.

Each case holds out its last H points (H = the engine's own horizon: 30 days → 30 daily, 5 weekly
steps; monthly cases use 180 days → 6 steps) and forecasts them from the rest. Reported per group
and overall: mean MASE of the engine and of seasonal naive (period 7 daily, 52 weekly and 12 monthly
when at least two cycles exist, else naive — the same period scales MASE), their ratio, empirical
coverage of the engine's 80 %/95 % intervals, and the median and p95 time of one forecast call.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from warmupd.pool import ProcessPool
from warmupd.producers.forecast import forecast_term

_GENERATED_AT_MS = 1_735_689_600_000  # fixed: outputs must not depend on when the bench ran


@dataclass(frozen=True)
class Case:
    """One forecasting problem: training dates/values and the held-out actuals."""

    group: str
    dates: list[str]
    train: list[float]
    actual: list[float]
    horizon_days: int
    season: int


def evaluate_case(case: Case) -> dict[str, Any]:
    """Forecast one case (in a pool worker) and score it against its holdout."""
    started = time.perf_counter()
    out = forecast_term(
        dates=case.dates,
        values=case.train,
        term="termA",
        horizon_days=case.horizon_days,
        min_points=7,
        generated_at_ms=_GENERATED_AT_MS,
        source_updated_ms=None,
    )
    elapsed_ms = (time.perf_counter() - started) * 1000
    points = out["points"]
    if len(points) != len(case.actual):
        raise RuntimeError(f"{case.group}: {len(points)} forecast steps for {len(case.actual)}")
    y, n = case.train, len(case.train)
    m = case.season if n > 2 * case.season else 1
    scale = statistics.fmean(abs(y[t] - y[t - m]) for t in range(m, n)) or 1.0
    snaive = [y[n - m + (h % m)] for h in range(len(case.actual))]
    engine_err = statistics.fmean(
        abs(p["value"] - a) for p, a in zip(points, case.actual, strict=True)
    )
    snaive_err = statistics.fmean(abs(f - a) for f, a in zip(snaive, case.actual, strict=True))
    # The 14-day view: the first two weeks of steps (14 daily, 2 weekly, 1 monthly).
    k14 = {7: 14, 52: 2}.get(case.season, 1)
    engine_err14 = statistics.fmean(
        abs(p["value"] - a) for p, a in zip(points[:k14], case.actual[:k14], strict=True)
    )
    snaive_err14 = statistics.fmean(
        abs(f - a) for f, a in zip(snaive[:k14], case.actual[:k14], strict=True)
    )
    in80 = sum(p["lower80"] <= a <= p["upper80"] for p, a in zip(points, case.actual, strict=True))
    in95 = sum(p["lower95"] <= a <= p["upper95"] for p, a in zip(points, case.actual, strict=True))
    return {
        "group": case.group,
        "model": out["model"],
        "mase": engine_err / scale,
        "mase_snaive": snaive_err / scale,
        "mase14": engine_err14 / scale,
        "mase14_snaive": snaive_err14 / scale,
        "in80": in80,
        "in95": in95,
        "steps": len(points),
        "ms": elapsed_ms,
    }


def _rescale(values: list[float]) -> list[float]:
    low, high = min(values), max(values)
    return [5 + 90 * (v - low) / ((high - low) or 1.0) for v in values]


def _cut(
    group: str, days: list[date], values: list[float], steps: int, horizon: int, season: int
) -> Case:
    scaled = _rescale(values)
    return Case(
        group=group,
        dates=[d.isoformat() for d in days[:-steps]],
        train=scaled[:-steps],
        actual=scaled[-steps:],
        horizon_days=horizon,
        season=season,
    )


def real_cases(origins: int) -> list[Case]:
    """Windows of the real series shipped with statsmodels, ending at evenly spaced origins."""
    from statsmodels.datasets import co2, elec_equip, elnino

    cases: list[Case] = []
    co2_frame = co2.load().data["co2"].interpolate()
    co2_days = [ts.date() for ts in co2_frame.index]
    co2_values = [float(v) for v in co2_frame]
    for label, length in (("12m", 52 + 5), ("5y", 260 + 5)):
        for k in range(origins):
            end = len(co2_values) - k * 97  # origins ~2 years apart, not aligned to a season
            window = slice(end - length, end)
            cases.append(
                _cut(f"real co2 weekly {label}", co2_days[window], co2_values[window], 5, 30, 52)
            )
    nino = elnino.load().data
    nino_days, nino_values = [], []
    for _, row in nino.iterrows():
        for month in range(1, 13):
            nino_days.append(date(int(row["YEAR"]), month, 1))
            nino_values.append(float(row.iloc[month]))
    equip = elec_equip.load().data.iloc[:, 0]
    equip_days = [ts.date() for ts in equip.index]
    equip_values = [float(v) for v in equip]
    for name, days, values in (
        ("elnino", nino_days, nino_values),
        ("elec_equip", equip_days, equip_values),
    ):
        spacing = min(19, (len(values) - 126) // origins)
        for k in range(origins):
            end = len(values) - k * spacing
            window = slice(end - 126, end)
            cases.append(_cut(f"real monthly {name} 10y", days[window], values[window], 6, 180, 12))
    return cases


def synthetic_series(rng: random.Random, n: int, weekly: bool) -> list[float]:
    """One search-interest-like series on Google's 0–100 scale (maximum of the period = 100)."""
    level = rng.uniform(15, 70)
    slope = rng.gauss(0, 0.3) * level / n
    shift_at = rng.randrange(n) if rng.random() < 0.3 else n
    shift = rng.choice((-1, 1)) * rng.uniform(0.2, 0.6) * level
    if weekly:
        amplitude = rng.uniform(0, 0.3) * level
        phase = rng.uniform(0, 2 * math.pi)
        pattern = [amplitude * math.sin(2 * math.pi * t / 52.18 + phase) for t in range(n)]
    else:
        weekday = [rng.gauss(0, 1) for _ in range(7)]
        weekday = [w - statistics.fmean(weekday) for w in weekday]
        strength = rng.uniform(0, 0.15) * level
        offset = rng.randrange(7)
        pattern = [strength * weekday[(t + offset) % 7] for t in range(n)]
    noise_share = rng.uniform(0.04, 0.15)
    spike = [0.0] * n
    for _ in range(sum(rng.random() < 1 / 90 for _ in range(n))):
        at, height = rng.randrange(n), rng.uniform(0.5, 2.5) * level
        decay = rng.uniform(0.2, 0.7)
        for t in range(at, n):
            spike[t] += height * decay ** (t - at)
    raw = []
    for t in range(n):
        base = max(0.5, level + slope * t + (shift if t >= shift_at else 0.0))
        value = base + pattern[t] + spike[t]
        value += rng.gauss(0, noise_share * max(value, 1.0)) + rng.gauss(0, 0.7)
        raw.append(max(0.0, value))
    top = max(raw) or 1.0
    return [float(min(100, max(0, round(100 * v / top)))) for v in raw]


def synthetic_cases(per_group: int) -> list[Case]:
    """Seeded synthetic cases: every group's series come from their own seeds."""
    groups = (
        ("synth daily 30", 30, False),
        ("synth daily 90", 90, False),
        ("synth daily 180", 180, False),
        ("synth daily 365", 365, False),
        ("synth weekly 52 (12m)", 52, True),
        ("synth weekly 260 (5y)", 260, True),
    )
    cases: list[Case] = []
    for g, (group, n, weekly) in enumerate(groups):
        steps, step_days, season = (5, 7, 52) if weekly else (30, 1, 7)
        start = date(2023, 1, 1)
        days = [start + timedelta(days=step_days * t) for t in range(n + steps)]
        for i in range(per_group):
            rng = random.Random(1000 * g + i)
            values = synthetic_series(rng, n + steps, weekly)
            cases.append(
                Case(
                    group=group,
                    dates=[d.isoformat() for d in days[:n]],
                    train=values[:n],
                    actual=values[n:],
                    horizon_days=30,
                    season=season,
                )
            )
    return cases


def summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean MASE of both methods, their ratio, pooled coverage, fit time percentiles."""
    steps = sum(r["steps"] for r in rows)
    mase = statistics.fmean(r["mase"] for r in rows)
    mase_snaive = statistics.fmean(r["mase_snaive"] for r in rows)
    times = sorted(r["ms"] for r in rows)
    mase14 = statistics.fmean(r["mase14"] for r in rows)
    mase14_snaive = statistics.fmean(r["mase14_snaive"] for r in rows)
    return {
        "ratio14": mase14 / mase14_snaive,
        "n": len(rows),
        "mase": mase,
        "mase_snaive": mase_snaive,
        "ratio": mase / mase_snaive,
        "cov80": sum(r["in80"] for r in rows) / steps,
        "cov95": sum(r["in95"] for r in rows) / steps,
        "ms_p50": statistics.median(times),
        "ms_p95": times[min(len(times) - 1, int(0.95 * len(times)))],
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown result table, one line per group and the overall line last."""
    lines = [
        "| group | cases | MASE engine | MASE seasonal naive | ratio | cov 80 % | cov 95 % "
        "| ms p50 | ms p95 | ratio 14 d |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups = sorted({r["group"] for r in rows}, key=lambda g: (g.startswith("real"), g))
    for name in [*groups, "all"]:
        s = summarise([r for r in rows if name in ("all", r["group"])])
        label = f"**{name}**" if name == "all" else name
        lines.append(
            f"| {label} | {s['n']} | {s['mase']:.3f} | {s['mase_snaive']:.3f} | {s['ratio']:.3f} "
            f"| {s['cov80']:.3f} | {s['cov95']:.3f} | {s['ms_p50']:.0f} | {s['ms_p95']:.0f} "
            f"| {s['ratio14']:.3f} |"
        )
    return "\n".join(lines)


async def run_all(cases: list[Case], workers: int) -> list[dict[str, Any]]:
    """Evaluate every case in the process pool, as many at once as there are workers."""
    async with ProcessPool(workers=workers, idle_shutdown_s=600) as pool:
        return await asyncio.gather(*(pool.run(evaluate_case, case) for case in cases))


def main(argv: list[str] | None = None) -> int:
    """Build the benchmark set, evaluate it, print the table and the P9 verdict."""
    parser = argparse.ArgumentParser(prog="python -m bench.forecast_eval", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 synthetic series per group")
    parser.add_argument("--workers", type=int, default=0, help="pool size (0 = CPUs)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    cases = real_cases(origins=4 if args.quick else 8) + synthetic_cases(10 if args.quick else 50)
    rows = asyncio.run(run_all(cases, args.workers))
    wall_s = time.perf_counter() - started
    overall = summarise(rows)
    models: dict[str, int] = {}
    for r in rows:
        models[r["model"]] = models.get(r["model"], 0) + 1
    print(table(rows))
    print()
    print("models used:", ", ".join(f"{k} ×{v}" for k, v in sorted(models.items())))
    print(
        f"machine: {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; wall {wall_s:.1f} s for {len(cases)} cases"
    )
    verdict = (
        overall["ratio"] <= 0.8
        and 0.78 <= overall["cov80"] <= 0.88
        and 0.90 <= overall["cov95"] <= 0.97
    )
    print(
        f"P9: {'met' if verdict else 'NOT met'} (ratio {overall['ratio']:.3f} ≤ 0.8, "
        f"cov80 {overall['cov80']:.3f} in 0.78–0.88, cov95 {overall['cov95']:.3f} in 0.90–0.97)"
    )
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
