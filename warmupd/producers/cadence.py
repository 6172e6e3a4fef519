"""Cadence of a dated series: inferred from the dates, used to step future dates.

Google Trends answers with daily points for short timeframes, weekly points for ``12m``/``5y`` and
monthly points for longer ones. The site this daemon replaces labelled every future step as one day,
so a "30-day forecast" on weekly data was 30 weeks of extrapolation with daily dates; here the step
is read from the data and future dates follow it. Standard library only (the daemon imports this).
"""

from __future__ import annotations

import calendar
import math
import statistics
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import pairwise
from typing import Literal

from warmupd.errors import ProducerError

CadenceName = Literal["daily", "weekly", "monthly"]


@dataclass(frozen=True, kw_only=True)
class Cadence:
    """One sampling cadence and the constants the forecast derives from it."""

    name: CadenceName
    step_days: float
    """Nominal length of one step in days (a month counts as 30.4375)."""
    season: int
    """Seasonal period in steps (a week of days, a year of weeks or months)."""
    min_seasonal_points: int
    """Fewest points for which the seasonal period is fitted."""
    recent: int
    """Points that make up "the recent level" (7 days, 4 weeks, 3 months)."""

    def steps_for(self, days: int) -> int:
        """Whole steps needed to cover ``days`` days (at least one)."""
        # The epsilon keeps 14 days of daily data at 14 steps despite float division.
        return max(1, math.ceil(days / self.step_days - 1e-9))

    def is_regular_gap(self, gap_days: int) -> bool:
        """Whether one gap between consecutive dates is a single regular step."""
        if self.name == "monthly":
            return 28 <= gap_days <= 31
        return gap_days == round(self.step_days)

    def future_dates(self, last: date, steps: int) -> list[date]:
        """The ``steps`` dates after ``last`` at this cadence (months keep the day, clamped)."""
        if self.name != "monthly":
            return [last + timedelta(days=round(self.step_days) * k) for k in range(1, steps + 1)]
        out = []
        for k in range(1, steps + 1):
            month0 = last.month - 1 + k
            year, month = last.year + month0 // 12, month0 % 12 + 1
            day = min(last.day, calendar.monthrange(year, month)[1])
            out.append(date(year, month, day))
        return out


DAILY = Cadence(name="daily", step_days=1.0, season=7, min_seasonal_points=14, recent=7)
WEEKLY = Cadence(name="weekly", step_days=7.0, season=52, min_seasonal_points=104, recent=4)
MONTHLY = Cadence(name="monthly", step_days=30.4375, season=12, min_seasonal_points=24, recent=3)


def parse_dates(texts: list[str]) -> list[date]:
    """Parse ISO dates (a time part, if any, is ignored) that must be strictly ascending.

    :raises ProducerError: on an unparseable date or dates out of order.
    """
    try:
        days = [date.fromisoformat(text[:10]) for text in texts]
    except ValueError as exc:
        raise ProducerError(f"invalid date in series: {exc}") from None
    for before, after in pairwise(days):
        if after <= before:
            raise ProducerError(f"series dates must be strictly ascending ({before} then {after})")
    return days


def infer_cadence(days: list[date]) -> Cadence:
    """Infer the cadence from the median spacing of at least two ascending dates.

    The median rather than the mode or the first gap: a few missing days or a DST-shifted export
    must not turn a daily series into something else.

    :raises ProducerError: with fewer than two dates or a spacing that is none of daily, weekly or
        monthly.
    """
    if len(days) < 2:
        raise ProducerError("at least two dates are needed to infer the cadence")
    median_gap = statistics.median((b - a).days for a, b in pairwise(days))
    if median_gap <= 1.5:
        return DAILY
    if 5 <= median_gap <= 9:
        return WEEKLY
    if 26 <= median_gap <= 33:
        return MONTHLY
    raise ProducerError(f"unsupported cadence: median spacing of {median_gap:g} days")


def irregular_share(days: list[date], cadence: Cadence) -> float:
    """Share of gaps between consecutive dates that are not one regular step (missing dates)."""
    gaps = [(b - a).days for a, b in pairwise(days)]
    if not gaps:
        return 0.0
    return sum(1 for gap in gaps if not cadence.is_regular_gap(gap)) / len(gaps)
