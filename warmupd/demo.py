"""Realistic synthetic comparisons for trying warmupd out (``warmupd demo-data``).

Each comparison looks like a Google Trends answer: two terms on one shared 0–100 scale (100 = the
highest point of either term), a slow trend, a weekly rhythm for daily data, noise, the occasional
news spike and level shift. Views follow a Zipf-like law, as real popularity does: a few comparisons
get most of the traffic. Stdlib only (the daemon's own process never imports numpy for this).
"""

from __future__ import annotations

import math
import random
from datetime import date, timedelta
from typing import Any

PAIRS = (
    ("iphone", "android"),
    ("coffee", "tea"),
    ("python", "javascript"),
    ("netflix", "youtube"),
    ("bitcoin", "ethereum"),
    ("cats", "dogs"),
    ("pizza", "burger"),
    ("summer", "winter"),
    ("football", "basketball"),
    ("chatgpt", "gemini"),
    ("spotify", "apple music"),
    ("tesla", "toyota"),
    ("yoga", "pilates"),
    ("rust", "go"),
    ("paris", "london"),
    ("running", "cycling"),
    ("xbox", "playstation"),
    ("zoom", "teams"),
    ("vinyl", "cassette"),
    ("marvel", "dc"),
)


def _term_curve(rng: random.Random, n: int, daily: bool) -> list[float]:
    level = rng.uniform(20, 70)
    trend = rng.uniform(-0.4, 0.4) * (1 if daily else 3) / max(n, 1) * 30
    weekly = [rng.uniform(-0.18, 0.12) for _ in range(7)] if daily else [0.0] * 7
    weekly[5] -= rng.uniform(0.05, 0.2) if daily else 0.0  # weekend dip, Saturday
    weekly[6] -= rng.uniform(0.05, 0.2) if daily else 0.0
    noise = rng.uniform(0.03, 0.12)
    spikes = {rng.randrange(n): rng.uniform(1.6, 3.0) for _ in range(rng.randint(0, 3))}
    shift_at = rng.randrange(n) if rng.random() < 0.3 else None
    shift = rng.uniform(0.7, 1.4)
    values = []
    for i in range(n):
        v = level + trend * i
        if shift_at is not None and i >= shift_at:
            v *= shift
        v *= 1 + weekly[i % 7]
        v *= 1 + rng.gauss(0, noise)
        for at, height in spikes.items():
            distance = i - at
            if 0 <= distance <= 4:
                v *= 1 + (height - 1) * math.exp(-distance * 0.9)
        values.append(max(0.0, v))
    return values


def make_comparison(rng: random.Random, index: int, today: date) -> dict[str, Any]:
    """One comparison as an import line: the PUT body plus its ``slug``."""
    term_a, term_b = PAIRS[index % len(PAIRS)]
    suffix = "" if index < len(PAIRS) else f"-{index // len(PAIRS)}"
    daily = rng.random() < 0.6
    n = rng.choice((30, 90, 180)) if daily else 52
    step = timedelta(days=1 if daily else 7)
    start = today - step * n
    a = _term_curve(rng, n, daily)
    b = _term_curve(rng, n, daily)
    top = max(max(a), max(b), 1e-9)
    series = [
        {
            "date": (start + step * (i + 1)).isoformat(),
            term_a: round(a[i] * 100 / top),
            term_b: round(b[i] * 100 / top),
        }
        for i in range(n)
    ]
    return {
        "slug": f"{term_a}-vs-{term_b}{suffix}".replace(" ", "-"),
        "terms": [term_a, term_b],
        "timeframe": "90d" if daily and n == 90 else ("12m" if not daily else f"{n}d"),
        "geo": "",
        "series": series,
    }


def demo_comparisons(count: int, seed: int, today: date) -> list[tuple[dict[str, Any], int]]:
    """``count`` comparisons with a Zipf-like view count each: ``[(body, views), …]``."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        body = make_comparison(rng, i, today)
        # Zipf with s≈1.1 over popularity rank, a long tail of comparisons nobody visited.
        views = int(5000 / (i + 1) ** 1.1 * rng.uniform(0.6, 1.4))
        out.append((body, views if views >= 1 else 0))
    return out
