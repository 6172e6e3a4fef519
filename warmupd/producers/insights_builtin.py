"""The built-in insights provider: deterministic, offline (SPEC §8, notes §3.5).

The numpy analysis lives in :mod:`warmupd.producers.insights_facts`; this module stays free of
numpy so that the daemon's process can import it. :func:`compute_facts` is the analysis both
providers share (the LLM provider sends it as the prompt); :func:`analyse` adds the template texts;
:func:`builtin_insights` stamps and hashes the pack. All three are pure, top-level and picklable,
so the jobs layer runs them in the process pool.
"""

from __future__ import annotations

from typing import Any

from warmupd.clock import ms_to_iso
from warmupd.models import Comparison, short_hash
from warmupd.producers import FactsRunner

BUILTIN_MODEL = "builtin-1"
"""Version of the detector and templates; bump it when their output changes."""


def compute_facts(comparison: Comparison) -> dict[str, Any]:
    """See :func:`warmupd.producers.insights_facts.compute_facts` (imported here on first call)."""
    from warmupd.producers import insights_facts

    return insights_facts.compute_facts(comparison)


def analyse(comparison: Comparison) -> dict[str, Any]:
    """See :func:`warmupd.producers.insights_facts.analyse` (imported here on first call).

    Module-level and picklable: the providers hand this function to the process pool, so numpy is
    imported by the pool's workers and never by the daemon's own process (SPEC P6).
    """
    from warmupd.producers import insights_facts

    return insights_facts.analyse(comparison)


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
