"""Template text of the built-in explainer (notes §3.5 step 6), rendered from the facts alone.

Every sentence states something the facts show: names, dates, values, ratios. None names a cause;
where a pattern is typical of something (a one-off spike, a shared driver) it says so as a pattern.
The LLM provider reuses these texts for any peak the model leaves out.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from warmupd.producers.analysis import UNITS, Step


def num(x: float) -> str:
    """A figure on the 0–100 scale: whole numbers from 10 up, one decimal below."""
    return f"{x:.0f}" if abs(x) >= 10 else f"{x:.1f}".replace(".0", "")


def pct(x: float) -> str:
    """A signed percentage, e.g. ``+12%`` or ``−8%``."""
    return f"+{x:.0f}%" if x >= 0 else f"−{abs(x):.0f}%"


def units(step: Step, count: float) -> str:
    """``"day"``/``"days"`` (or weeks, months) agreeing with ``count``."""
    unit = UNITS[step]
    return unit if round(count) == 1 else unit + "s"


def fmt_date(iso: str, step: Step) -> str:
    """``Mar 9, 2025``; ``the week of Mar 9, 2025`` for weekly data; ``Mar 2025`` for monthly."""
    d = date.fromisoformat(iso)
    if step == "M":
        return f"{d:%b} {d.year}"
    text = f"{d:%b} {d.day}, {d.year}"
    return f"the week of {text}" if step == "W" else text


def on_date(iso: str, step: Step) -> str:
    """A date with its preposition: ``on Mar 9, 2025``, ``in the week of …``, ``in Mar 2025``."""
    return ("on " if step == "D" else "in ") + fmt_date(iso, step)


def _change(m: float) -> str:
    if abs(m) < 10:
        return f"roughly flat ({pct(m)})"
    return f"up {m:.0f}%" if m > 0 else f"down {abs(m):.0f}%"


def _names(f: dict[str, Any]) -> tuple[str, str]:
    return f["comparison"]["termA"], f["comparison"]["termB"]


def _second_sentence(f: dict[str, Any], lead: str, other: str) -> str:
    step: Step = f["comparison"]["step"]
    names = dict(zip(("termA", "termB"), _names(f), strict=True))
    rel, terms = f["relationship"], f["terms"]
    k = f["comparison"]["recentPoints"]
    span = f"the last {k} {units(step, k)}"
    if rel["currentLeader"] == other and rel["lastCrossover"]:
        recent = {"termA": rel["recentA"], "termB": rel["recentB"]}
        return (
            f"But {names[other]} overtook it {on_date(rel['lastCrossover'], step)} and leads "
            f"recently ({num(recent[other])} vs {num(recent[lead])})."
        )
    m_lead, m_other = terms[lead]["momentumPct"], terms[other]["momentumPct"]
    if abs(m_lead) < 10 and abs(m_other) < 10:
        return f"Both have been steady over {span}."
    if abs(m_lead) < 10 or abs(m_other) < 10:
        mover, flat = (other, lead) if abs(m_lead) < 10 else (lead, other)
        m = terms[mover]["momentumPct"]
        if mover == other:
            verb = "is gaining" if m > 0 else "is losing ground"
        else:
            verb = "is pulling further ahead" if m > 0 else "is slipping"
        return f"{names[mover]} {verb}: {pct(m)} over {span} while {names[flat]} is flat."
    a, b = _names(f)
    return (
        f"Over {span}, {a} is {_change(terms['termA']['momentumPct'])} and "
        f"{b} is {_change(terms['termB']['momentumPct'])}."
    )


def summary_text(f: dict[str, Any]) -> str:
    """The meaning summary: who leads and by how much, then the most telling recent change."""
    step: Step = f["comparison"]["step"]
    a, b = _names(f)
    rel, terms = f["relationship"], f["terms"]
    avg = {"termA": terms["termA"]["average"], "termB": terms["termB"]["average"]}
    plural = units(step, 2)
    if rel["leader"] == "tie":
        head = (
            f"{a} and {b} draw similar search interest ({num(avg['termA'])} vs "
            f"{num(avg['termB'])} on average on Google's 0–100 scale)"
        )
        if rel["crossovers"]:
            times = "once" if rel["crossovers"] == 1 else f"{rel['crossovers']} times"
            when = on_date(rel["lastCrossover"], step)
            return f"{head}; the lead changed {times}, most recently {when}."
        hi = rel["higherAverage"]
        share = rel["leadShareA"] if hi == "termA" else rel["leadShareB"]
        name = a if hi == "termA" else b
        if rel["marginPts"] < 1:
            return f"{head}, and neither pulled ahead."
        return f"{head}; {name} was slightly higher in {share * 100:.0f}% of the {plural}."
    lead = rel["leader"]
    other = "termB" if lead == "termA" else "termA"
    names = {"termA": a, "termB": b}
    share = rel["leadShareA"] if lead == "termA" else rel["leadShareB"]
    first = (
        f"{names[lead]} draws more search interest than {names[other]}: {num(avg[lead])} vs "
        f"{num(avg[other])} on average on Google's 0–100 scale, ahead in {share * 100:.0f}% of "
        f"the {plural}."
    )
    return f"{first} {_second_sentence(f, lead, other)}"


def _season_bullet(name: str, s: dict[str, Any]) -> str:
    if s["kind"] == "annual":
        return f"{name} follows a yearly cycle, highest around {s['peakMonth']}."
    if s["weekendDip"]:
        return (
            f"{name} dips on weekends ({s['lowDay'][:3]} {pct(s['lowPct'])} against its average)."
        )
    return (
        f"{name} is highest on {s['highDay']}s ({pct(s['highPct'])}) and lowest on "
        f"{s['lowDay']}s ({pct(s['lowPct'])})."
    )


def key_differences(f: dict[str, Any]) -> list[str]:
    """3–5 bullets, most salient first: level, momentum, trend, volatility, seasonality, peaks."""
    step: Step = f["comparison"]["step"]
    a, b = _names(f)
    names = {"termA": a, "termB": b}
    rel, ta, tb = f["relationship"], f["terms"]["termA"], f["terms"]["termB"]
    k = f["comparison"]["recentPoints"]
    bullets: list[tuple[float, str]] = []

    hi = rel["higherAverage"]
    lo = "termB" if hi == "termA" else "termA"
    avg_hi, avg_lo = f["terms"][hi]["average"], f["terms"][lo]["average"]
    if rel["leader"] == "tie":
        level = (
            f"Average interest is close: {a} {num(ta['average'])}, {b} {num(tb['average'])} "
            f"(a {num(rel['marginPts'])}-point gap)."
        )
    elif avg_lo < 1:
        level = (
            f"{names[lo]} barely registers next to {names[hi]} ({num(avg_lo)} vs {num(avg_hi)})."
        )
    else:
        level = (
            f"{names[hi]} averages {rel['ratio']:.1f}× the search interest of {names[lo]} "
            f"({num(avg_hi)} vs {num(avg_lo)})."
        )
    bullets.append((1000.0, level))

    bullets.append(
        (
            max(abs(ta["momentumPct"]), abs(tb["momentumPct"])),
            f"Over the last {k} {units(step, k)}, {a} is {_change(ta['momentumPct'])} and {b} is "
            f"{_change(tb['momentumPct'])}.",
        )
    )
    bullets.append(
        (
            max(abs(ta["trendPct"]), abs(tb["trendPct"])) * 0.8,
            f"Across the whole period, {a} trended {_change(ta['trendPct'])} and {b} "
            f"{_change(tb['trendPct'])}.",
        )
    )

    spiky, calm = ("termA", "termB") if ta["spikiness"] >= tb["spikiness"] else ("termB", "termA")
    ts, tc = f["terms"][spiky], f["terms"][calm]
    if ts["spikiness"] >= 2 and ts["spikiness"] >= 1.2 * tc["spikiness"]:
        bullets.append(
            (
                20 * ts["spikiness"] / max(tc["spikiness"], 1.0),
                f"{names[spiky]} is spikier: its highest point is {ts['spikiness']:.1f}× its "
                f"median, against {tc['spikiness']:.1f}× for {names[calm]}.",
            )
        )
    else:
        bullets.append(
            (
                15.0 if ta["volatilityLabel"] != tb["volatilityLabel"] else 5.0,
                f"{UNITS[step].capitalize()}-to-{UNITS[step]} swings are "
                f"{ta['volatilityLabel']} for {a} and {tb['volatilityLabel']} for {b}.",
            )
        )

    for key in ("termA", "termB"):
        season = f["terms"][key]["seasonality"]
        if season:
            bullets.append((60.0, _season_bullet(names[key], season)))

    if f["peaks"]:
        best = max(f["peaks"], key=lambda p: (p["prominence"], p["value"]))
        bullets.append(
            (
                70.0,
                f"The most prominent peak: {best['termName']} hit {num(best['value'])}/100 "
                f"{on_date(best['date'], step)}, {best['ratio']:.1f}× its usual level.",
            )
        )

    if rel["coMovement"] in ("together", "opposite"):
        how = "move together" if rel["coMovement"] == "together" else "move in opposite directions"
        bullets.append(
            (
                40.0,
                f"Their {UNITS[step]}-to-{UNITS[step]} changes {how} "
                f"(correlation {rel['correlation']:.2f}).",
            )
        )

    # A stable sort keeps the listing order among equally salient bullets: deterministic output.
    ranked = sorted(bullets, key=lambda sb: -sb[0])
    return [text for _, text in ranked[:5]]


def peak_text(f: dict[str, Any], peak: dict[str, Any]) -> str:
    """Explain one detected peak: size, shape, the other term's reaction, recurrence, context."""
    step: Step = f["comparison"]["step"]
    a, b = _names(f)
    term = peak["termName"]
    other = b if peak["term"] == "termA" else a
    parts = [
        f"{term} hit {num(peak['value'])}/100 {on_date(peak['date'], step)}, "
        f"{peak['ratio']:.1f}× its usual level of about {num(peak['baseline'])}."
    ]
    rise, decay = peak["riseSteps"], peak["decaySteps"]
    shape = peak["shape"]
    if shape == "spike":
        parts.append(
            f"It was a short spike that faded within {decay} {units(step, decay)}, the pattern "
            "typical of a one-off news event or announcement."
        )
    elif shape == "sustained_high":
        steps = peak["durationDays"] // {"D": 1, "W": 7, "M": 30}[step]
        parts.append(f"Interest stayed high for about {steps} {units(step, steps)}.")
    elif shape == "gradual_peak":
        parts.append(f"It built up over {rise} {units(step, rise)} before peaking.")
    else:
        parts.append(
            f"It rose within {rise} {units(step, rise)} and eased over "
            f"{decay} {units(step, decay)}."
        )
    if peak["otherTermRose"]:
        parts.append(
            f"{other} rose at the same time ({num(peak['otherTermValue'])}/100, "
            f"{peak['otherTermRatio']:.1f}× its usual level), so a shared driver is likely."
        )
    else:
        parts.append(
            f"{other} did not react ({num(peak['otherTermValue'])}/100), so the driver was "
            f"specific to {term}."
        )
    if peak["recurring"]:
        parts.append("A similar peak appears at this time of year in other years.")
    if peak["isGlobalMax"]:
        parts.append(f"It is {term}'s highest point of the period.")
    elif peak["isRecent"]:
        parts.append("It is among the most recent data points.")
    else:
        latest = f["terms"][peak["term"]]["latest"]
        parts.append(f"Interest has since settled around {num(latest)}.")
    return " ".join(parts)
