"""Figures of a two-term comparison: normalisation, per-term statistics, seasonality, relationship.

This is steps 1–4 of the built-in analyser (notes §3.5). Everything is numpy only, deterministic
and free of I/O, so that it may run in the process pool as well as inline. Numbers leave this module
rounded (values to 0.1, ratios to 0.01) so that the facts, the template text and the content hash
all see the same figures.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from warmupd.errors import InsufficientData, ProducerError
from warmupd.models import Comparison

FloatArray = npt.NDArray[np.float64]
Step = Literal["D", "W", "M"]

MIN_POINTS = 4
"""Fewest points an insight pack is computed from; the jobs skip shorter series earlier anyway."""

RECENT_POINTS: dict[Step, int] = {"D": 7, "W": 4, "M": 3}
STEP_DAYS: dict[Step, int] = {"D": 1, "W": 7, "M": 30}
UNITS: dict[Step, str] = {"D": "day", "W": "week", "M": "month"}
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip

# Below this gap (points of the 0–100 index) a difference between the terms is noise, not a lead.
CROSS_DEADBAND = 2.0


@dataclass(frozen=True)
class Prepared:
    """A comparison's series after normalisation: parallel arrays and the inferred step."""

    dates: npt.NDArray[np.datetime64]
    date_strs: tuple[str, ...]
    a: FloatArray
    b: FloatArray
    step: Step

    @property
    def n(self) -> int:
        """Number of points."""
        return len(self.date_strs)

    @property
    def k(self) -> int:
        """The "recent window" in points (7 days, 4 weeks or 3 months, at most half the series)."""
        return max(1, min(RECENT_POINTS[self.step], self.n // 2))


def r1(x: float) -> float:
    """Round to one decimal (and turn ``-0.0`` into ``0.0`` so hashes do not depend on it)."""
    return round(float(x), 1) + 0.0


def r2(x: float) -> float:
    """Round to two decimals."""
    return round(float(x), 2) + 0.0


def robust_sigma(x: FloatArray) -> float:
    """1.4826 × the median absolute deviation: σ for normal data, blind to a few spikes."""
    if len(x) == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def _coerce(raw: Any) -> float:
    # Google Trends writes "<1" for interest that rounds to zero but is not zero.
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("<"):
            return 0.5
        try:
            return float(text)
        except ValueError:
            return float("nan")
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return float("nan")
    return float(raw)


def _fill(values: FloatArray, term: str) -> FloatArray:
    ok = np.isfinite(values)
    if not ok.any():
        raise ProducerError(f"term {term!r} has no numeric values")
    if not ok.all():
        idx = np.arange(len(values))
        # Linear interpolation inside, nearest value at the ends (np.interp holds the edges).
        values = np.interp(idx, idx[ok], values[ok])
    return np.clip(values, 0.0, 100.0)


def infer_step(dates: npt.NDArray[np.datetime64]) -> Step:
    """The sampling step from the median gap between dates: daily, weekly or monthly."""
    gaps = np.diff(dates).astype(np.int64)
    median_gap = float(np.median(gaps))
    if median_gap <= 3:
        return "D"
    if median_gap <= 10:
        return "W"
    return "M"


def prepare(comparison: Comparison) -> Prepared:
    """Normalise a comparison's series (notes §3.5 step 1).

    Values become floats (``"<1"`` → 0.5), missing or non-numeric ones are interpolated, all are
    clamped to 0–100, and the step is inferred from the dates.

    :raises InsufficientData: with fewer than :data:`MIN_POINTS` points.
    :raises ProducerError: on unparseable, unordered or duplicate dates, or a term with no numbers.
    """
    series = comparison.series
    if len(series) < MIN_POINTS:
        raise InsufficientData(
            f"{len(series)} points; insights need at least {MIN_POINTS}",
        )
    try:
        date_strs = tuple(str(p["date"])[:10] for p in series)
        dates = np.array(date_strs, dtype="datetime64[D]")
    except (KeyError, ValueError) as exc:
        raise ProducerError(f"series has a missing or invalid date: {exc}") from exc
    if np.any(np.diff(dates).astype(np.int64) <= 0):
        raise ProducerError("series dates are not strictly ascending")
    a = np.array([_coerce(p.get(comparison.term_a)) for p in series], dtype=np.float64)
    b = np.array([_coerce(p.get(comparison.term_b)) for p in series], dtype=np.float64)
    return Prepared(
        dates=dates,
        date_strs=date_strs,
        a=_fill(a, comparison.term_a),
        b=_fill(b, comparison.term_b),
        step=infer_step(dates),
    )


THEIL_SEN_POINTS = 200


@functools.lru_cache(maxsize=8)
def _pairs(m: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    i, j = np.triu_indices(m, 1)
    return i, j


def theil_sen_slope(y: FloatArray) -> float:
    """Median of pairwise slopes per step; robust to spikes, unlike least squares."""
    n = len(y)
    x = np.arange(n, dtype=np.float64)
    if n > THEIL_SEN_POINTS:
        # All pairs of n points is n²/2 slopes; an even subsample keeps the cost at ~20k slopes
        # for five years of daily data without changing the estimate materially.
        keep = np.unique(np.linspace(0, n - 1, THEIL_SEN_POINTS).round().astype(np.int64))
        x, y = x[keep], y[keep]
    i, j = _pairs(len(x))
    return float(np.median((y[j] - y[i]) / (x[j] - x[i])))


def volatility_label(vol: float) -> str:
    """Bucket a robust coefficient of variation of the step changes."""
    if vol < 0.15:
        return "low"
    if vol < 0.35:
        return "medium"
    return "high"


def term_figures(p: Prepared, y: FloatArray, other: FloatArray) -> dict[str, Any]:
    """Per-term figures (notes §3.5 step 2) plus the term's seasonality."""
    n, k = p.n, p.k
    mean = float(y.mean())
    median = float(np.median(y))
    imax = int(np.argmax(y))
    latest = float(y[-k:].mean())
    prev_slice = y[-2 * k : -k] if n >= 2 * k else y[: n - k]
    previous = float(prev_slice.mean())
    total = mean + float(other.mean())
    vol = robust_sigma(np.diff(y)) / max(median, 1.0)
    return {
        "average": r1(mean),
        "median": r1(median),
        "sd": r1(float(y.std())),
        "max": r1(y[imax]),
        "maxDate": p.date_strs[imax],
        "share": r2(mean / total) if total > 0 else 0.5,
        "latest": r1(latest),
        "previous": r1(previous),
        "momentumPct": r1((latest - previous) / max(previous, 1.0) * 100),
        "trendPct": r1(theil_sen_slope(y) * (n - 1) / max(mean, 1.0) * 100),
        "volatility": r2(vol),
        "volatilityLabel": volatility_label(vol),
        "spikiness": r2(float(y[imax]) / max(median, 1.0)),
        "zeroShare": r2(float(np.mean(y == 0))),
        "seasonality": seasonality(p, y),
    }


def _weekday(dates: npt.NDArray[np.datetime64]) -> npt.NDArray[np.int64]:
    # 1970-01-01 was a Thursday: day 0 is weekday 3 with Monday = 0.
    return (dates.astype(np.int64) + 3) % 7


def _weekly_pattern(p: Prepared, y: FloatArray) -> dict[str, Any] | None:
    mean = float(y.mean())
    if mean < 1:
        return None
    wd = _weekday(p.dates)
    # Strength against a centred 7-point moving average: the share of the detrended variance that
    # the weekday effect explains (F in STL terms), over the interior where the average exists.
    ma = np.convolve(y, np.ones(7) / 7, mode="valid")
    detrended = y[3:-3] - ma
    wd_in = wd[3:-3]
    effect = np.array(
        [detrended[wd_in == d].mean() if np.any(wd_in == d) else 0.0 for d in range(7)]
    )
    remainder = detrended - effect[wd_in]
    var_d = float(detrended.var())
    strength = max(0.0, 1.0 - float(remainder.var()) / var_d) if var_d > 0 else 0.0
    if strength <= 0.3:
        return None
    profile = np.array([y[wd == d].mean() / mean if np.any(wd == d) else 1.0 for d in range(7)])
    low, high = int(np.argmin(profile)), int(np.argmax(profile))
    return {
        "kind": "weekly",
        "strength": r2(strength),
        "lowDay": WEEKDAYS[low],
        "lowPct": r1((profile[low] - 1) * 100),
        "highDay": WEEKDAYS[high],
        "highPct": r1((profile[high] - 1) * 100),
        "weekendDip": bool(low >= 5 and profile[5] < 1 and profile[6] < 1),
    }


def _annual_pattern(p: Prepared, y: FloatArray, lag: int) -> dict[str, Any] | None:
    centred = y - y.mean()
    denom = float(np.dot(centred, centred))
    if denom == 0:
        return None
    acf = float(np.dot(centred[:-lag], centred[lag:])) / denom
    if acf <= 0.5:
        return None
    month = p.dates.astype("datetime64[M]").astype(np.int64) % 12
    means = np.array([y[month == m].mean() if np.any(month == m) else -1.0 for m in range(12)])
    return {"kind": "annual", "acf": r2(acf), "peakMonth": MONTHS[int(np.argmax(means))]}


def seasonality(p: Prepared, y: FloatArray) -> dict[str, Any] | None:
    """A weekday pattern (daily data, ≥ 28 points) or a yearly cycle (≥ 2 years of weeks/months).

    ``None`` when the data cannot show one or the pattern is too weak to mention.
    """
    if p.step == "D" and p.n >= 28:
        return _weekly_pattern(p, y)
    if p.step == "W" and p.n >= 104:
        return _annual_pattern(p, y, 52)
    if p.step == "M" and p.n >= 24:
        return _annual_pattern(p, y, 12)
    return None


def _median3(d: FloatArray) -> FloatArray:
    if len(d) < 3:
        return d.copy()
    out = d.copy()
    out[1:-1] = np.median(np.stack([d[:-2], d[1:-1], d[2:]]), axis=0)
    return out


def relationship(p: Prepared) -> dict[str, Any]:
    """Between-term figures (notes §3.5 step 4): lead share, crossovers, ratio, co-movement, winner.

    ``leader`` is ``"termA"``/``"termB"`` only when that term's average is at least 10 % higher
    *and* it leads at ≥ 60 % of the points; otherwise ``"tie"``.
    """
    a, b, k = p.a, p.b, p.k
    avg_a, avg_b = float(a.mean()), float(b.mean())
    lead_a = float(np.mean(a > b) + 0.5 * np.mean(a == b))

    diff = _median3(a - b)
    crossovers = 0
    last_cross: str | None = None
    sign = 0
    for i, d in enumerate(diff):
        s = 0 if abs(d) < CROSS_DEADBAND else (1 if d > 0 else -1)
        if s == 0:
            continue
        if sign != 0 and s != sign:
            crossovers += 1
            last_cross = p.date_strs[i]
        sign = s

    recent_a, recent_b = float(a[-k:].mean()), float(b[-k:].mean())
    if abs(recent_a - recent_b) < CROSS_DEADBAND:
        current = "tie"
    else:
        current = "termA" if recent_a > recent_b else "termB"

    higher = "termA" if avg_a >= avg_b else "termB"
    hi, lo = max(avg_a, avg_b), min(avg_a, avg_b)
    margin_rel = (hi - lo) / hi if hi > 0 else 0.0
    higher_share = lead_a if higher == "termA" else 1.0 - lead_a
    winner = higher if margin_rel >= 0.10 and higher_share >= 0.60 else "tie"

    da, db = np.diff(a), np.diff(b)
    corr: float | None = None
    if len(da) >= 3 and da.std() > 0 and db.std() > 0:
        corr = float(np.corrcoef(da, db)[0, 1])
    if corr is None:
        co_movement = "unknown"
    elif corr >= 0.5:
        co_movement = "together"
    elif corr <= -0.3:
        co_movement = "opposite"
    else:
        co_movement = "independent"

    return {
        "leader": winner,
        "higherAverage": higher,
        "marginPts": r1(hi - lo),
        "marginPct": r1(margin_rel * 100),
        "ratio": r2(hi / max(lo, 0.5)),
        "leadShareA": r2(lead_a),
        "leadShareB": r2(1.0 - lead_a),
        "crossovers": crossovers,
        "lastCrossover": last_cross,
        "currentLeader": current,
        "recentA": r1(recent_a),
        "recentB": r1(recent_b),
        "correlation": None if corr is None else r2(corr),
        "coMovement": co_movement,
    }
