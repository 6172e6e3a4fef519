"""``warmup-ai-explanations``: insight packs for the most viewed comparisons (SPEC §6)."""

from __future__ import annotations

from warmupd.config import JOB_INSIGHTS
from warmupd.jobs.base import Fencing, ItemOutcome, Job, RunSettings
from warmupd.jobs.parts import INSIGHTS_PART, Warmer
from warmupd.models import Comparison
from warmupd.state.store import ComparisonStore


class InsightsJob(Job[Comparison]):
    """Selects by views; asks the configured insights provider for each pack."""

    name = JOB_INSIGHTS
    lock_key = "warmup:ai-explanations:lock"

    def __init__(self, comparisons: ComparisonStore, warmer: Warmer) -> None:
        self.comparisons = comparisons
        self.warmer = warmer

    async def select(self, settings: RunSettings, now_ms: int) -> list[Comparison]:
        """``view_count ≥ min_views OR last_visited ≥ now−window``, most viewed first."""
        return await self.comparisons.select_for_insights(
            now_ms, settings.window_ms, settings.min_views, settings.limit
        )

    async def process(self, item: Comparison, fencing: Fencing, now_ms: int) -> ItemOutcome:
        """Generate the pack unless it is fresh for this dataHash and prompt version."""
        return await self.warmer.warm(item, [INSIGHTS_PART], fencing)

    def label(self, item: Comparison) -> str:
        """The slug."""
        return item.slug

    def start_run(self) -> None:
        """A 401/403/404 stops AI calls for the rest of a run only: give each run a new chance.

        The facts step of every item runs in the process pool: it starts now, not by the first item.
        """
        self.warmer.insights.reset_breaker()
        self.warmer.start_cpu()
