"""The jobs layer: the registry of warmup jobs, the runner, on-demand warmups and cache reads."""

from __future__ import annotations

from typing import Any

from warmupd.clock import Clock, SystemClock
from warmupd.config import Config
from warmupd.jobs.base import Job
from warmupd.jobs.forecasts import ForecastsJob
from warmupd.jobs.housekeeping import HousekeepingJob, PurgeLocks
from warmupd.jobs.insights import InsightsJob
from warmupd.jobs.kinds import build_kind_jobs
from warmupd.jobs.parts import Warmer
from warmupd.state.cache import CacheStore
from warmupd.state.runs import NodeStore, RunStore
from warmupd.state.store import ComparisonStore, WarmupStore


def build_jobs(
    *,
    config: Config,
    comparisons: ComparisonStore,
    cache: CacheStore,
    runs: RunStore,
    warmups: WarmupStore,
    nodes: NodeStore,
    warmer: Warmer,
    purge_locks: PurgeLocks | None,
    clock: Clock | None = None,
) -> dict[str, Job[Any]]:
    """The three built-in jobs and the configured jobs of a kind (SPEC §16), by name."""
    jobs: list[Job[Any]] = [
        ForecastsJob(comparisons, warmer),
        InsightsJob(comparisons, warmer),
        HousekeepingJob(
            cache=cache,
            runs=runs,
            warmups=warmups,
            nodes=nodes,
            purge_locks=purge_locks,
            stale_ttl_ms=config.cache.stale_ttl_ms,
            node_stale_ms=node_stale_ms(config),
        ),
        *build_kind_jobs(config, clock or SystemClock()),
    ]
    return {job.name: job for job in jobs}


def node_stale_ms(config: Config) -> int:
    """After how long without a heartbeat housekeeping forgets a node (3 leases, at least 1 h)."""
    return max(3 * config.locks.lease_ms, 3_600_000)
