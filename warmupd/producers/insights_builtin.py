"""The built-in insights provider: deterministic, offline, numpy only (SPEC §8, notes §3.5).

:func:`compute_facts` is the analysis both providers share (the LLM provider sends it as the
prompt); :func:`analyse` adds the template texts; :func:`builtin_insights` stamps and hashes the
pack. All three are pure, top-level and picklable, so the jobs layer may run them in the process
pool.
"""

from __future__ import annotations

import math
from typing import Any

from warmupd.clock import ms_to_iso
from warmupd.models import Comparison, short_hash
from warmupd.producers import FactsRunner
from warmupd.producers.analysis import Prepared, prepare, relationship, term_figures
from warmupd.producers.insights_text import key_differences, peak_text, summary_text
from warmupd.producers.peaks import detect_peaks

BUILTIN_MODEL = "builtin-1"
"""Version of the detector and templates; bump it when their output changes."""

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


def assemble(
    comparison: Comparison,
    *,
    meaning: dict[str, Any],
    peaks: list[dict[str, Any]],
    provider: str,
    model: str,
    prompt_version: str,
    now_ms: int,
) -> dict[str, Any]:
    """Stamp texts into the SPEC §8 insights shape and hash the content.

    ``aiInsightsHash`` covers the data hash, provider, model, prompt version and every text and
    figure, but no timestamp, so the same input and texts always hash the same.
    """
    meaning_out = {**meaning, "promptVersion": prompt_version}
    peaks_out = [{**pk, "promptVersion": prompt_version} for pk in peaks]
    digest = short_hash(
        {
            "dataHash": comparison.data_hash,
            "provider": provider,
            "model": model,
            "promptVersion": prompt_version,
            "meaning": meaning_out,
            "peaks": peaks_out,
        }
    )
    generated = ms_to_iso(now_ms)
    updated = comparison.updated_at_ms or comparison.created_at_ms
    return {
        "id": f"ai-insights-{comparison.slug}-{digest}",
        "meaningExplanation": {**meaning_out, "generatedAt": generated},
        "peakExplanations": [{**pk, "generatedAt": generated} for pk in peaks_out],
        "generatedAt": generated,
        "provider": provider,
        "model": model,
        "promptVersion": prompt_version,
        "aiInsightsHash": digest,
        "dataFreshness": {
            "lastUpdatedAt": ms_to_iso(updated) if updated else None,
            "source": "warmupd-insights",
            "dataHash": comparison.data_hash,
        },
    }


def _builtin_parts(analysis: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return analysis["meaning"], [{**pk, "source": "builtin"} for pk in analysis["peaks"]]


def builtin_insights(comparison: Comparison, *, now_ms: int, prompt_version: str) -> dict[str, Any]:
    """The built-in insights pack of ``comparison`` (SPEC §8 shape, ``provider = "builtin"``).

    :raises warmupd.errors.ProducerError: the series cannot be analysed (see :func:`compute_facts`).
    """
    meaning, peaks = _builtin_parts(analyse(comparison))
    return assemble(
        comparison,
        meaning=meaning,
        peaks=peaks,
        provider="builtin",
        model=BUILTIN_MODEL,
        prompt_version=prompt_version,
        now_ms=now_ms,
    )


class BuiltinInsights:
    """:class:`~warmupd.producers.InsightsProducer` over the templates; no network, no breaker.

    :param prompt_version: recorded as ``promptVersion`` (part of the insights cache key).
    :param facts_runner: where to run :func:`analyse` (the process pool); inline when ``None``.
    """

    def __init__(self, *, prompt_version: str, facts_runner: FactsRunner | None = None) -> None:
        self.provider = "builtin"
        self.model = BUILTIN_MODEL
        self.prompt_version = prompt_version
        self._runner = facts_runner

    async def insights(self, comparison: Comparison, *, now_ms: int) -> dict[str, Any]:
        """See :meth:`warmupd.producers.InsightsProducer.insights`."""
        if self._runner is None:
            analysis = analyse(comparison)
        else:
            analysis = await self._runner(analyse, comparison)
        meaning, peaks = _builtin_parts(analysis)
        return assemble(
            comparison,
            meaning=meaning,
            peaks=peaks,
            provider=self.provider,
            model=self.model,
            prompt_version=self.prompt_version,
            now_ms=now_ms,
        )

    async def close(self) -> None:
        """Nothing to release."""

    def reset_breaker(self) -> None:
        """The builtin provider has no breaker."""
