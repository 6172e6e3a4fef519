"""Cron scheduling (placeholder until the scheduler branch lands: only validation lives here)."""

from __future__ import annotations

from croniter import croniter


def validate_schedule(expr: str) -> None:
    """Raise ``ValueError`` with a human reason when ``expr`` is not a valid schedule."""
    text = expr.strip()
    if text.startswith("@"):
        if text not in (
            "@hourly",
            "@daily",
            "@weekly",
            "@monthly",
            "@yearly",
            "@annually",
            "@midnight",
        ):
            raise ValueError(f"invalid cron expression {expr!r} (unknown alias)")
        return
    parts = text.split()
    if len(parts) == 6:
        parts = parts[1:] + parts[:1]
    if len(parts) not in (5, 6) or not croniter.is_valid(" ".join(parts)):
        raise ValueError(f"invalid cron expression {expr!r}")


def describe_next_fires(expr: str, tz: str, after_ms: int, n: int) -> list[tuple[str, str]]:
    """Next ``n`` fires as (UTC ISO, local ISO) pairs (temporary: no DST rules yet)."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    start = datetime.fromtimestamp(after_ms / 1000, tz=zone)
    parts = expr.split()
    if len(parts) == 6:
        expr = " ".join(parts[1:] + parts[:1])
    it = croniter(expr, start)
    out = []
    for _ in range(n):
        dt = it.get_next(datetime)
        out.append((dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), dt.isoformat()))
    return out
