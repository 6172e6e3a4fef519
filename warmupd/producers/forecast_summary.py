"""From a forecast path to the SPEC §8 bundle: clamping, blocks, key points, confidence, warnings.

Standard library only. The rules (notes §2.4) are deliberately simple and monotone: confidence
falls as the 80 % band widens on the fixed 0–100 index, and every warning names a measurable
property of the input or the fit, never an opinion.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from itertools import pairwise
from typing import Any

from warmupd.producers.cadence import Cadence, irregular_share

WARNINGS = (
    "low_confidence",
    "insufficient_data",
    "high_volatility",
    "anomaly_detected",
    "data_quality_concern",
)
"""Every warning code, in the order they are listed in an output."""

_LOW_CONFIDENCE = 70.0  # SPEC §8: "low_confidence" (< 70)
_SHORT_SERIES = 14  # SPEC §8: "insufficient_data" (< 14 points)
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True, kw_only=True)
class Path:
    """A forecast path before clamping: mean and interval bounds per step, and the model name."""

    model: str
    mean: list[float]
    lower80: list[float]
    upper80: list[float]
    lower95: list[float]
    upper95: list[float]
    fallback: bool


def _clamp(value: float, low: float = 0.0, high: float = 100.0) -> float:
    return min(high, max(low, value))


def _r1(value: float) -> float:
    # `+ 0.0` turns -0.0 into 0.0 so that equal forecasts serialise (and hash) equally.
    return round(value, 1) + 0.0


def _mad(values: Sequence[float]) -> float:
    centre = statistics.median(values)
    return statistics.median(abs(v - centre) for v in values)


def clamp_points(days: list[date], path: Path) -> list[dict[str, Any]]:
    """Clamp to 0–100, round to 0.1 and enforce lower95 ≤ lower80 ≤ value ≤ upper80 ≤ upper95.

    Rounding happens before the ordering is enforced, so the ordering also holds on the printed
    numbers.
    """
    points = []
    rows = zip(days, path.mean, path.lower80, path.upper80, path.lower95, path.upper95, strict=True)
    for day, mu, lo80, hi80, lo95, hi95 in rows:
        value = _r1(_clamp(mu))
        lower80 = min(_r1(_clamp(lo80)), value)
        upper80 = max(_r1(_clamp(hi80)), value)
        points.append(
            {
                "date": day.isoformat(),
                "value": value,
                "lower80": lower80,
                "upper80": upper80,
                "lower95": min(_r1(_clamp(lo95)), lower80),
                "upper95": max(_r1(_clamp(hi95)), upper80),
            }
        )
    return points


def point_confidence(point: dict[str, Any]) -> float:
    """Confidence of one step: 100 minus the 80 % band's width in index points, within 5–95."""
    return _clamp(100.0 - (point["upper80"] - point["lower80"]), 5.0, 95.0)


def key_point_indexes(length: int) -> list[int]:
    """Five evenly spaced indexes of a block (every index when the block is that short)."""
    if length <= 5:
        return list(range(length))
    return sorted({j * (length - 1) // 4 for j in range(5)})


def block(points: list[dict[str, Any]], confidences: list[float]) -> dict[str, Any]:
    """One ``forecastXDay`` summary; key points carry the 95 % band as lower/upper bound."""
    out: dict[str, Any] = {
        "averageValue": _r1(statistics.fmean(p["value"] for p in points)),
        "confidence": _r1(statistics.fmean(confidences)),
        "keyPoints": [
            {
                "date": points[i]["date"],
                "value": points[i]["value"],
                "lowerBound": points[i]["lower95"],
                "upperBound": points[i]["upper95"],
                "confidence": _r1(confidences[i]),
            }
            for i in key_point_indexes(len(points))
        ],
    }
    if out["confidence"] < _LOW_CONFIDENCE:
        out["warnings"] = ["low_confidence"]
    return out


def is_high_volatility(y: list[float]) -> bool:
    """CV of the values above 0.5 (the site's rule), or a robust CV of the steps above 0.5.

    The second test catches a noisy series around a stable level, whose plain CV can be small.
    """
    level = statistics.fmean(y)
    if level > 0 and statistics.pstdev(y) / level > 0.5:
        return True
    steps = [b - a for a, b in pairwise(y)]
    return _MAD_TO_SIGMA * _mad(steps) / max(statistics.median(y), 1.0) > 0.5


def has_recent_anomaly(y: list[float], cadence: Cadence) -> bool:
    """Whether one of the last max(3, 10 %) points is over 4 robust σ off its trailing median.

    Such a point (usually a news spike) distorts the level the forecast starts from.
    """
    window = cadence.recent
    residuals = [y[t] - statistics.median(y[max(0, t - window) : t]) for t in range(1, len(y))]
    sigma = max(1.0, _MAD_TO_SIGMA * _mad(residuals))
    tail = max(3, round(0.1 * len(y)))
    return any(abs(r) > 4 * sigma for r in residuals[-tail:])


def has_quality_concern(y: list[float], days: list[date], cadence: Cadence) -> bool:
    """More than 30 % zeros, more than 10 % irregular gaps, or a constant series."""
    zeros = sum(1 for v in y if v == 0) / len(y)
    return zeros > 0.3 or irregular_share(days, cadence) > 0.1 or max(y) == min(y)


def direction(
    *, y: list[float], cadence: Cadence, points: list[dict[str, Any]], volatile: bool
) -> str:
    """rising / falling beyond max(3, 10 % of the recent level), volatile, or stable.

    The forecast's mean over the whole horizon is compared with the mean of the last week (4 weeks,
    3 months): a damped trend adds little per step, so the 14-day mean alone would call clear
    trends stable. ``volatile`` needs the high_volatility warning and a move smaller than the
    band's mean half-width, i.e. a forecast that cannot tell a direction at all.
    """
    recent = statistics.fmean(y[-cadence.recent :])
    delta = statistics.fmean(p["value"] for p in points) - recent
    half_width = statistics.fmean((p["upper80"] - p["lower80"]) / 2 for p in points)
    if volatile and abs(delta) < half_width:
        return "volatile"
    threshold = max(3.0, 0.10 * recent)
    if delta > threshold:
        return "rising"
    if delta < -threshold:
        return "falling"
    return "stable"


def summarise(
    *,
    y: list[float],
    days: list[date],
    cadence: Cadence,
    path: Path,
    fit_failed: bool,
) -> dict[str, Any]:
    """The model-dependent part of the bundle: direction, blocks, points, confidence, warnings."""
    points = clamp_points(cadence.future_dates(days[-1], len(path.mean)), path)
    confidences = [point_confidence(p) for p in points]
    # A block covers its nominal days rounded up to whole steps (weekly: 2 and 5 steps, monthly:
    # 1 and 1), so a block is never empty; it is capped by a horizon shorter than 30 days.
    n14 = min(len(points), cadence.steps_for(14))
    n30 = min(len(points), cadence.steps_for(30))

    flags: set[str] = set()
    if len(y) < _SHORT_SERIES:
        flags.add("insufficient_data")
    if is_high_volatility(y):
        flags.add("high_volatility")
    if has_recent_anomaly(y, cadence):
        flags.add("anomaly_detected")
    if fit_failed or has_quality_concern(y, days, cadence):
        flags.add("data_quality_concern")

    overall = statistics.fmean(confidences[:n30])
    if path.fallback:
        overall *= 0.5
    if "anomaly_detected" in flags:
        overall *= 0.8
    if "high_volatility" in flags:
        overall *= 0.8
    if overall < _LOW_CONFIDENCE:
        flags.add("low_confidence")

    out: dict[str, Any] = {
        "direction": direction(
            y=y, cadence=cadence, points=points[:n30], volatile="high_volatility" in flags
        ),
        "forecast14Day": block(points[:n14], confidences[:n14]),
        "forecast30Day": block(points[:n30], confidences[:n30]),
        "points": points,
        "overallConfidence": _r1(overall),
        "model": f"{path.model}-fallback" if fit_failed else path.model,
    }
    if flags:
        out["warnings"] = [w for w in WARNINGS if w in flags]
    return out
