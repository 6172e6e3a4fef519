"""The peak detector (notes §3.5 step 5): the only source of peaks, whichever provider words them.

A peak must stand out twice: topographically (prominence ≥ max(10, 3σ), the definition of
``scipy.signal.peak_prominences``) and against its local level (residual over a centred rolling
median ≥ max(10, 2σ), with σ the robust spread of those residuals). The first rejects small
wiggles, the second rejects the crest of a smooth wave, which is prominent but not a peak anyone
would explain.
Series endpoints are never peaks (as in scipy): their prominence and baseline are one-sided.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from warmupd.producers.analysis import STEP_DAYS, FloatArray, Prepared, Step, r1, r2, robust_sigma

BASELINE_WINDOW: dict[Step, int] = {"D": 15, "W": 9, "M": 5}
MIN_SEPARATION: dict[Step, int] = {"D": 7, "W": 3, "M": 2}
"""Minimum distance between two kept peaks of one term, in steps (7 days, 3 weeks, 2 months)."""
SUSTAINED_STEPS = 4
"""Half-prominence width (in steps) from which a peak is a plateau of high interest, not a spike."""
RECUR_DAYS: dict[Step, int] = {"D": 14, "W": 14, "M": 31}
"""How far apart in the calendar two peaks may be and still count as "the same time of year"."""
MIN_PROMINENCE = 10.0
MIN_RESIDUAL = MIN_PROMINENCE
"""Floor of the residual test. With σ clamped at 1, "residual ≥ 2σ" alone lets the crest of any
smooth wave through once noise adds a couple of points to its curvature (measured: a crest in 45 %
of noisy sine series at noise sd 1.5). A peak worth explaining stands as far above its local
median as the minimum prominence asks; planted +15 spikes on noise sd 2 are still found 96 % of
the time."""
TOP_PEAKS = 3


def rolling_median(y: FloatArray, window: int) -> FloatArray:
    """Centred rolling median; the window shrinks (stays centred where it can) at the edges."""
    n, half = len(y), window // 2
    out = np.empty(n)
    if n >= window:
        out[half : n - half] = np.median(sliding_window_view(y, window), axis=1)
        edges = [*range(half), *range(n - half, n)]
    else:
        edges = list(range(n))
    for i in edges:
        out[i] = np.median(y[max(0, i - half) : i + half + 1])
    return out


def local_maxima(y: FloatArray) -> list[int]:
    """Indices of interior local maxima; a flat top counts once, at its middle (scipy semantics)."""
    peaks: list[int] = []
    i, last = 1, len(y) - 1
    while i < last:
        if y[i - 1] < y[i]:
            ahead = i + 1
            while ahead < last and y[ahead] == y[i]:
                ahead += 1
            if y[ahead] < y[i]:
                peaks.append((i + ahead - 1) // 2)
                i = ahead
        i += 1
    return peaks


def prominence(y: FloatArray, peak: int) -> tuple[float, int, int]:
    """Topographic prominence of ``y[peak]`` and its left and right bases.

    The peak's height minus the higher of the two minima reached on each side before the series
    climbs above the peak (or ends): ``scipy.signal.peak_prominences`` without ``wlen``.
    """
    height = y[peak]
    higher_left = np.flatnonzero(y[:peak] > height)
    start = int(higher_left[-1]) + 1 if len(higher_left) else 0
    higher_right = np.flatnonzero(y[peak + 1 :] > height)
    end = peak + int(higher_right[0]) if len(higher_right) else len(y) - 1
    # argmin returns the first minimum; scipy keeps the one closest to the peak on the left side.
    left_seg = y[start : peak + 1]
    left_base = start + len(left_seg) - 1 - int(np.argmin(left_seg[::-1]))
    right_base = peak + int(np.argmin(y[peak : end + 1]))
    return float(height - max(y[left_base], y[right_base])), left_base, right_base


def _select(cands: list[dict[str, Any]], separation: int) -> list[dict[str, Any]]:
    # Rank by prominence, then height, then the earlier date; a candidate closer than `separation`
    # steps to a better one is dropped (the rule scipy.signal.find_peaks applies for `distance`).
    ranked = sorted(cands, key=lambda c: (-c["_prom"], -c["_value"], c["_i"]))
    kept: list[dict[str, Any]] = []
    for c in ranked:
        if all(abs(c["_i"] - k["_i"]) >= separation for k in kept):
            kept.append(c)
    return kept[:TOP_PEAKS]


def _recurring(p: Prepared, y: FloatArray, resid: FloatArray, sigma: float, peak: int) -> bool:
    span_days = int((p.dates[-1] - p.dates[0]).astype(np.int64))
    if p.step == "D" or span_days < 730:
        return False
    doy = (p.dates - p.dates.astype("datetime64[Y]")).astype(np.int64)
    apart = np.abs((p.dates - p.dates[peak]).astype(np.int64))
    circ = np.abs(doy - doy[peak])
    circ = np.minimum(circ, 365 - circ)
    for j in np.flatnonzero((apart >= 300) & (circ <= RECUR_DAYS[p.step])).tolist():
        left_ok = j == 0 or y[j] >= y[j - 1]
        right_ok = j == len(y) - 1 or y[j] >= y[j + 1]
        if left_ok and right_ok and resid[j] >= 2 * sigma:
            return True
    return False


def detect_peaks(p: Prepared, term_key: str, term_name: str) -> list[dict[str, Any]]:
    """The top peaks of one term, best first, each with the figures the texts need.

    ``term_key`` is ``"termA"`` or ``"termB"``; the other term is the co-movement reference.
    """
    y, other = (p.a, p.b) if term_key == "termA" else (p.b, p.a)
    window = BASELINE_WINDOW[p.step]
    base = rolling_median(y, window)
    resid = y - base
    sigma = max(1.0, robust_sigma(resid))
    o_base = rolling_median(other, window)
    o_resid = other - o_base
    o_sigma = max(1.0, robust_sigma(o_resid))
    threshold = max(MIN_PROMINENCE, 3 * sigma)

    cands: list[dict[str, Any]] = []
    for i in local_maxima(y):
        # The residual test is the cheap one, so it runs first and prominence only on survivors.
        if resid[i] < max(MIN_RESIDUAL, 2 * sigma):
            continue
        prom, lb, rb = prominence(y, i)
        if prom >= threshold:
            cands.append({"_i": i, "_prom": prom, "_value": float(y[i]), "_lb": lb, "_rb": rb})

    out = []
    n, k, ymax = p.n, p.k, float(y.max())
    step_days = STEP_DAYS[p.step]
    for c in _select(cands, MIN_SEPARATION[p.step]):
        i, prom = c["_i"], c["_prom"]
        # The half-prominence extent, bounded by the bases (scipy.signal.peak_widths, rel 0.5).
        line = y[i] - prom / 2
        s = i
        while s - 1 >= c["_lb"] and y[s - 1] >= line:
            s -= 1
        e = i
        while e + 1 <= c["_rb"] and y[e + 1] >= line:
            e += 1
        width = e - s + 1
        rise = i - s + (1 if s > 0 else 0)
        decay = e - i + (1 if e < n - 1 else 0)
        if width <= 2:
            shape = "spike"
        elif width >= SUSTAINED_STEPS:
            shape = "sustained_high"
        elif rise >= 2 * decay:
            shape = "gradual_peak"
        else:
            shape = "sharp_peak"
        lo, hi = max(0, i - 1), min(n, i + 2)
        j = lo + int(np.argmax(o_resid[lo:hi]))
        date = p.date_strs[i]
        out.append(
            {
                "peakId": f"{term_key}-{date}",
                "term": term_key,
                "termName": term_name,
                "date": date,
                "value": r1(y[i]),
                "prominence": r1(prom),
                "baseline": r1(base[i]),
                "ratio": r2(y[i] / max(base[i], 1.0)),
                "z": r2(resid[i] / sigma),
                "startDate": p.date_strs[s],
                "endDate": p.date_strs[e],
                "durationDays": width * step_days,
                "riseSteps": rise,
                "decaySteps": decay,
                "shape": shape,
                "isGlobalMax": bool(y[i] >= ymax),
                "isRecent": i >= n - k,
                "otherTermValue": r1(other[j]),
                "otherTermRatio": r2(other[j] / max(o_base[j], 1.0)),
                "otherTermRose": bool(o_resid[j] >= max(5.0, 2 * o_sigma)),
                "recurring": _recurring(p, y, resid, sigma, i),
            }
        )
    return out
