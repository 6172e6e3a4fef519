"""Schedules, instants and durations in words for people (pure functions, time passed in)."""

from __future__ import annotations

from datetime import UTC, datetime

from warmupd.scheduler import CRON_ALIASES

_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


def _num(text: str, low: int, high: int) -> int | None:
    return int(text) if text.isdigit() and low <= int(text) <= high else None


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def cron_in_words(expr: str, timezone: str) -> str:
    """``"0 2 * * *"`` → ``"every day at 02:00 UTC"``; falls back to the expression itself.

    Covers the shapes schedules usually take (fixed minute/hour, one weekday or day of month,
    ``*/n`` steps); anything else is said as "on the schedule <expr>" rather than guessed.
    """
    fields = CRON_ALIASES.get(expr.strip().lower(), expr.strip()).split()
    fallback = f"on the schedule {expr} ({timezone})"
    if len(fields) != 5:
        return fallback
    minute, hour, dom, month, dow = fields
    if month != "*":
        return fallback
    m = _num(minute, 0, 59)
    if m is not None and hour == "*" and dom == "*" and dow == "*":
        return f"every hour at minute {m:02d}" if m else "every hour, on the hour"
    if minute.startswith("*/") and hour == "*" and dom == "*" and dow == "*":
        step = _num(minute[2:], 1, 59)
        return f"every {step} minutes" if step else fallback
    if minute == "*" and hour == "*" and dom == "*" and dow == "*":
        return "every minute"
    h = _num(hour, 0, 23)
    if m is None or h is None:
        return fallback
    at = f"at {h:02d}:{m:02d} {timezone}"
    if dom == "*" and dow == "*":
        return f"every day {at}"
    if dom == "*":
        day = _num(dow, 0, 7)
        if day is not None:
            return f"every {_DAYS[day % 7]} {at}"
        if dow == "1-5":
            return f"every weekday {at}"
        return fallback
    if dow == "*":
        d = _num(dom, 1, 31)
        return f"on the {_ordinal(d)} of every month {at}" if d else fallback
    return fallback


def iso_of(ms: int | None) -> str:
    """``2026-11-30 02:00:00 UTC`` (or an em dash for none)."""
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def relative(ms: int | None, now_ms: int) -> str:
    """``"in 3 h 5 min"`` / ``"12 s ago"`` / ``"now"``."""
    if ms is None:
        return "—"
    delta_s = round((ms - now_ms) / 1000)
    if delta_s == 0:
        return "now"
    text = span(abs(delta_s) * 1000)
    return f"in {text}" if delta_s > 0 else f"{text} ago"


def span(ms: int | None) -> str:
    """A duration: ``"850 ms"``, ``"42 s"``, ``"3 min 5 s"``, ``"2 h 10 min"``, ``"3 d 4 h"``."""
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms} ms"
    s = ms // 1000
    if s < 60:
        return f"{s} s" if ms >= 10_000 else f"{ms / 1000:.1f} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s} s" if s else f"{m} min"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(h, 24)
    return f"{d} d {h} h" if h else f"{d} d"


def size(n: int) -> str:
    """Bytes in binary units: ``"40.0 KiB"``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
