"""``housekeeping``: purge expired cache entries, old runs, dead lock rows and old fire claims."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from warmupd.config import JOB_HOUSEKEEPING
from warmupd.jobs.base import Fencing, ItemOutcome, Job, RunSettings
from warmupd.state.cache import CacheStore
from warmupd.state.runs import NodeStore, RunStore
from warmupd.state.store import WarmupStore

PurgeLocks = Callable[[int], Awaitable[tuple[int, int]]]
"""Deletes expired fire claims and free or expired lock rows without resetting any fence;
returns ``(fire claims, lock rows)`` deleted."""


@dataclass(frozen=True)
class Chore:
    """One purge step; each is an item of the run so its failure is recorded and the rest go on."""

    name: str
    older_than_ms: int


class HousekeepingJob(Job[Chore]):
    """Each chore is one item; the counts end up in the log line of each step."""

    name = JOB_HOUSEKEEPING
    lock_key = "warmup:housekeeping:lock"

    def __init__(
        self,
        *,
        cache: CacheStore,
        runs: RunStore,
        warmups: WarmupStore,
        nodes: NodeStore,
        purge_locks: PurgeLocks | None,
        stale_ttl_ms: int,
        node_stale_ms: int,
    ) -> None:
        self.cache = cache
        self.runs = runs
        self.warmups = warmups
        self.nodes = nodes
        self.purge_locks = purge_locks
        self.stale_ttl_ms = stale_ttl_ms
        self.node_stale_ms = node_stale_ms
        self.purged: dict[str, int] = {}

    def start_run(self) -> None:
        """Each run reports only its own purges."""
        self.purged = {}

    def summary(self) -> dict[str, Any]:
        """``{"purged": {chore: rows deleted}}``."""
        return {"purged": dict(self.purged)}

    async def select(self, settings: RunSettings, now_ms: int) -> list[Chore]:
        """The chores, each with its cut-off instant."""
        chores = [
            Chore("cache", now_ms),
            Chore("runs", now_ms - settings.run_retention_ms),
            Chore("warmups", now_ms - self.stale_ttl_ms),
            Chore("nodes", now_ms - self.node_stale_ms),
        ]
        if self.purge_locks is not None:
            chores.append(Chore("locks", now_ms))
        return chores

    async def process(self, item: Chore, fencing: Fencing, now_ms: int) -> ItemOutcome:
        """Run one purge and remember how many rows it deleted."""
        if item.name == "cache":
            self.purged["cacheEntries"] = await self.cache.purge_expired(item.older_than_ms)
        elif item.name == "runs":
            self.purged["runs"] = await self.runs.purge(item.older_than_ms)
        elif item.name == "warmups":
            self.purged["warmups"] = await self.warmups.purge_before(item.older_than_ms)
        elif item.name == "nodes":
            # Ages, not instants: on PostgreSQL a heartbeat's age is the server's clock's business.
            self.purged["nodes"] = await self.nodes.purge(now_ms, self.node_stale_ms)
        else:
            assert self.purge_locks is not None
            claims, rows = await self.purge_locks(item.older_than_ms)
            self.purged["fireClaims"], self.purged["lockRows"] = claims, rows
        return ItemOutcome.processed()

    def label(self, item: Chore) -> str:
        """The chore's name."""
        return item.name
