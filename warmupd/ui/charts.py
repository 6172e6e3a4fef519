"""Geometry of the dashboard's two SVG charts, computed on the server (pure; templates draw it).

Only numbers and the records' own fields come out of here; the templates escape every text, and
the one piece of markup made here (the timeline's bars) escapes its texts itself. Status
is never told by colour alone: each run status has its own shape (see :data:`SHAPES`) and every bar
carries a text title.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from html import escape
from typing import Any

from warmupd.models import RunRecord

DAY_MS = 86_400_000
TIMELINE_WIDTH = 960
LANE_HEIGHT = 46
BAR_HEIGHT = 22
AXIS_HEIGHT = 22
SHAPES = {
    "success": "solid bar",
    "running": "bar with a dot",
    "failed": "bar with a cross above",
    "skipped": "short hollow bar",
    "cancelled": "hollow bar",
    "abandoned": "hollow bar",
}
"""How each status is drawn besides its colour (the legend says the same in words)."""


_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def timeline(
    runs: Sequence[RunRecord], jobs: Sequence[str], now_ms: int, *, days: int = 7
) -> dict[str, Any]:
    """Lanes (one per job), the bars' SVG markup (one link per run) and day ticks of the last
    ``days`` days.

    The bars are written here as markup rather than in the template: a week holds hundreds of runs
    and the template engine's per-value escaping of every coordinate was most of the overview's
    render time (bench P10). Every text (job, status, reason) goes through :func:`html.escape`;
    the rest are numbers this function computed.
    """
    start_ms = now_ms - days * DAY_MS
    scale = TIMELINE_WIDTH / (days * DAY_MS)
    names = list(jobs) + sorted({r.job for r in runs} - set(jobs))
    lane_y = {job: AXIS_HEIGHT + i * LANE_HEIGHT for i, job in enumerate(names)}
    lanes = [{"job": job, "label_y": y + 13, "y": y} for job, y in lane_y.items()]
    parts = []
    for run in runs:
        end_ms = run.finished_at_ms if run.finished_at_ms is not None else now_ms
        width = max(3.0, (end_ms - max(run.started_at_ms, start_ms)) * scale)
        x = min(max(0.0, (run.started_at_ms - start_ms) * scale), TIMELINE_WIDTH - width)
        top, height = lane_y[run.job] + 17.0, float(BAR_HEIGHT)
        status = run.status.value  # one of RunStatus's fixed values: safe in markup as it is
        if status == "skipped":
            top, height = top + BAR_HEIGHT / 2, BAR_HEIGHT / 2
        mark = ""
        if status == "failed":
            mark = f'<path class="mark" d="M{x + width / 2 - 4:.1f} {top - 9:.1f} l8 8 m0 -8 l-8 8"></path>'
        elif status == "running":
            mark = f'<circle class="mark" cx="{x + width / 2:.1f}" cy="{top - 5:.1f}" r="3.5"></circle>'
        parts.append(
            f'<a href="/ui/runs/{run.id}" class="bar st-{status}" data-run-id="{run.id}" '
            f'data-status="{status}"><title>{escape(_bar_title(run))}</title>'
            f'<rect x="{x:.1f}" y="{top:.1f}" width="{width:.1f}" height="{height:.1f}"></rect>'
            f"{mark}</a>"
        )
    first_day = (start_ms // DAY_MS + 1) * DAY_MS
    ticks = [
        {
            "x": round((ms - start_ms) * scale, 1),
            "label": datetime.fromtimestamp(ms / 1000, UTC).strftime("%a %d"),
            # A label that would run past the right edge ends at its tick instead.
            "anchor": "end" if (ms - start_ms) * scale > TIMELINE_WIDTH - 48 else "start",
        }
        for ms in range(first_day, now_ms + 1, DAY_MS)
    ]
    return {
        "width": TIMELINE_WIDTH,
        "height": AXIS_HEIGHT + max(1, len(lanes)) * LANE_HEIGHT + 4,
        "lanes": lanes,
        "bars": "\n".join(parts),
        "count": len(parts),
        "ticks": ticks,
    }


def _bar_title(run: RunRecord) -> str:
    # Formatted by hand: strftime per bar showed in the profile.
    t = datetime.fromtimestamp(run.started_at_ms / 1000, UTC)
    started = (
        f"{_DAY_NAMES[t.weekday()]} {t.day:02d} {_MONTHS[t.month]} {t.hour:02d}:{t.minute:02d} UTC"
    )
    text = f"Run {run.id} of {run.job}: {run.status.value}"
    if run.reason:
        text += f" ({run.reason})"
    return f"{text}, started {started}"


# --------------------------------------------------------------------------- forecast chart

CHART_WIDTH = 900
CHART_HEIGHT = 320
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 36, 12, 12, 28
TERMS = ("termA", "termB")


def _day(text: str) -> int | None:
    try:
        return date.fromisoformat(str(text)[:10]).toordinal()
    except ValueError:
        return None


def _points(coords: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)


def forecast_chart(
    series: Sequence[dict[str, Any]],
    names: dict[str, str],
    forecasts: dict[str, dict[str, Any] | None],
    peaks: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """Polylines of both series, each term's forecast line with its 80 % and 95 % bands, peak marks.

    :param names: ``{"termA": name, "termB": name}`` (the series' value keys).
    :param forecasts: cached forecast values by term label (``None`` when missing).
    :param peaks: peak explanations (``term``, ``peakDate``, ``magnitude``); numbered in order.
    """
    days = [d for d in (_day(p.get("date", "")) for p in series) if d is not None]
    future = [
        d
        for f in forecasts.values()
        if f
        for d in (_day(p.get("date", "")) for p in f.get("points", []))
        if d is not None
    ]
    everything = days + future
    if not everything:
        return {"empty": True, "width": CHART_WIDTH, "height": CHART_HEIGHT}
    first, last = min(everything), max(everything)
    top = max(
        [100.0]
        + [float(p.get("upper95", 0)) for f in forecasts.values() if f for p in f.get("points", [])]
    )
    inner_w = CHART_WIDTH - PAD_LEFT - PAD_RIGHT
    inner_h = CHART_HEIGHT - PAD_TOP - PAD_BOTTOM

    def x_of(day: int) -> float:
        return PAD_LEFT + (day - first) * inner_w / max(1, last - first)

    def y_of(value: float) -> float:
        return PAD_TOP + inner_h * (1 - max(0.0, min(value, top)) / top)

    lines: dict[str, str] = {}
    for term in TERMS:
        coords = []
        for p in series:
            d, v = _day(p.get("date", "")), p.get(names[term])
            if d is not None and isinstance(v, int | float):
                coords.append((x_of(d), y_of(float(v))))
        lines[term] = _points(coords)
    predicted: dict[str, dict[str, str]] = {}
    for term in TERMS:
        f = forecasts.get(term)
        pts = [
            (p, d)
            for p in (f or {}).get("points", [])
            if (d := _day(p.get("date", ""))) is not None
        ]
        if not pts:
            continue
        predicted[term] = {
            "line": _points([(x_of(d), y_of(float(p["value"]))) for p, d in pts]),
            **{
                f"band{level}": _points(
                    [(x_of(d), y_of(float(p[f"upper{level}"]))) for p, d in pts]
                    + [(x_of(d), y_of(float(p[f"lower{level}"]))) for p, d in reversed(pts)]
                )
                for level in ("80", "95")
            },
        }
    marks = []
    for number, peak in enumerate(peaks, start=1):
        d = _day(peak.get("peakDate", ""))
        if d is None or not first <= d <= last:
            continue
        marks.append(
            {
                "number": number,
                "term": peak.get("term", "termA"),
                "x": round(x_of(d), 1),
                "y": round(y_of(float(peak.get("magnitude", 0))), 1),
            }
        )
    tick_days = sorted({first + round(i * (last - first) / 5) for i in range(6)})
    anchors = {tick_days[0]: "start", tick_days[-1]: "end"}
    return {
        "empty": False,
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "lines": lines,
        "forecasts": predicted,
        "peaks": marks,
        "today_x": round(x_of(max(days)), 1) if days else None,
        "x_ticks": [
            {
                "x": round(x_of(d), 1),
                "label": date.fromordinal(d).strftime("%d %b %Y"),
                "anchor": anchors.get(d, "middle"),
            }
            for d in tick_days
        ],
        "y_ticks": [
            {"y": round(y_of(v), 1), "label": str(v)} for v in (0, 25, 50, 75, 100) if v <= top
        ],
        "plot": {"left": PAD_LEFT, "right": CHART_WIDTH - PAD_RIGHT, "bottom": PAD_TOP + inner_h},
    }
