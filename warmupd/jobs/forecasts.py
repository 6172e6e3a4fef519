"""``warmup-forecasts``: forecasts for the popular comparisons of the last window (SPEC §6)."""

from __future__ import annotations

from warmupd.config import JOB_FORECASTS
from warmupd.jobs.base import Fencing, ItemOutcome, Job, RunSettings
from warmupd.jobs.parts import FORECAST_A, FORECAST_B, Warmer
from warmupd.models import Comparison
from warmupd.state.store import ComparisonStore


class ForecastsJob(Job[Comparison]):
    """Selects by popularity and recency; computes both terms' forecasts in the process pool."""

    name = JOB_FORECASTS
    lock_key = "warmup:forecasts:lock"

    def __init__(self, comparisons: ComparisonStore, warmer: Warmer) -> None:
        self.comparisons = comparisons
        self.warmer = warmer

    async def select(self, settings: RunSettings, now_ms: int) -> list[Comparison]:
        """``created_at ≥ now−window OR last_visited ≥ now−window OR view_count > 0``, most popular first."""
        return await self.comparisons.select_for_forecasts(
            now_ms, settings.window_ms, settings.limit
        )

    async def process(self, item: Comparison, fencing: Fencing, now_ms: int) -> ItemOutcome:
        """Forecast both terms unless they are fresh for this dataHash and engine version."""
        return await self.warmer.warm(item, [FORECAST_A, FORECAST_B], fencing)

    def label(self, item: Comparison) -> str:
        """The slug."""
        return item.slug

    def start_run(self) -> None:
        """Forecasts run in the process pool: start its workers now, not by the first item."""
        self.warmer.start_cpu()
