"""The numpy side of the built-in insights: facts, peaks and template texts (run in pool workers).

Imported lazily by :mod:`warmupd.producers.insights_builtin` so that only the process pool's
workers pay for numpy.
"""

from __future__ import annotations

import math
from typing import Any

from warmupd.models import Comparison
from warmupd.producers.analysis import Prepared, prepare, relationship, term_figures
from warmupd.producers.insights_text import key_differences, peak_text, summary_text
from warmupd.producers.peaks import detect_peaks

_GRANULARITY = {"D": "daily", "W": "weekly", "M": "monthly"}


def _facts(c: Comparison, p: Prepared) -> dict[str, Any]:
    return {
        "comparison": {
            "termA": c.term_a,
            "termB": c.term_b,
            "timeframe": c.timeframe,
            "granularity": _GRANULARITY[p.step],
            "step": p.step,
            "start": p.date_strs[0],
            "end": p.date_strs[-1],
            "points": p.n,
            "recentPoints": p.k,
        },
        "terms": {
            "termA": term_figures(p, p.a, p.b),
            "termB": term_figures(p, p.b, p.a),
        },
        "relationship": relationship(p),
        "peaks": detect_peaks(p, "termA", c.term_a) + detect_peaks(p, "termB", c.term_b),
    }


def compute_facts(comparison: Comparison) -> dict[str, Any]:
    """The computed facts of a comparison: per-term figures, relationship and peaks.

    JSON-serialisable, rounded, deterministic. It never contains the raw series, which is why the
    LLM provider may send it as the prompt.

    :raises warmupd.errors.InsufficientData: fewer than 4 points.
    :raises warmupd.errors.ProducerError: unusable dates or values.
    """
    return _facts(comparison, prepare(comparison))


def _meaning_confidence(facts: dict[str, Any]) -> int:
    ta, tb = facts["terms"]["termA"], facts["terms"]["termB"]
    pooled = math.sqrt((ta["sd"] ** 2 + tb["sd"] ** 2) / 2)
    effect = min(2.0, facts["relationship"]["marginPts"] / max(pooled, 1.0))
    # A clear separation of the two levels earns confidence, and so does a longer series; a 52-point
    # series is "long enough" on either cadence.
    size = 0.7 + 0.3 * min(1.0, facts["comparison"]["points"] / 52)
    return int(max(5, min(95, round((40 + 25 * effect) * size))))


def analyse(comparison: Comparison) -> dict[str, Any]:
    """Facts plus the built-in texts, without timestamps: ``{facts, meaning, peaks}``.

    ``meaning`` is ``{text, keyDifferences, confidence, winner}``; each of ``peaks`` is
    ``{peakId, term, termName, peakDate, magnitude, prominence, shape, durationDays, startDate,
    endDate, text, confidence}`` in the facts' order (termA's peaks first, best first).
    """
    facts = compute_facts(comparison)
    meaning = {
        "text": summary_text(facts),
        "keyDifferences": key_differences(facts),
        "confidence": _meaning_confidence(facts),
        "winner": facts["relationship"]["leader"],
    }
    peaks = [
        {
            "peakId": pk["peakId"],
            "term": pk["term"],
            "termName": pk["termName"],
            "peakDate": pk["date"],
            "magnitude": pk["value"],
            "prominence": pk["prominence"],
            "shape": pk["shape"],
            "durationDays": pk["durationDays"],
            "startDate": pk["startDate"],
            "endDate": pk["endDate"],
            "text": peak_text(facts, pk),
            "confidence": int(min(95, round(40 + 8 * pk["z"]))),
        }
        for pk in facts["peaks"]
    ]
    return {"facts": facts, "meaning": meaning, "peaks": peaks}
