"""The cache parts of one comparison and how they are made warm.

A comparison has three parts: a forecast for each term and an insight pack. The scheduled jobs and the
on-demand warmup both go through :class:`Warmer`, so "is this part up to date?" and "compute it, write
it with my fence" mean the same thing everywhere.
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from warmupd.clock import Clock
from warmupd.config import CacheConfig, ForecastConfig
from warmupd.errors import LockLost
from warmupd.jobs.base import Fencing, ItemOutcome
from warmupd.jobs.snapshots import PartsRead, PartState, Snapshot, Verdict
from warmupd.models import Comparison, ComparisonHead, Freshness
from warmupd.producers import InsightsProducer
from warmupd.producers.forecast import PREDICTION_ENGINE_VERSION, forecast_term
from warmupd.state.cache import (
    FORECAST,
    INSIGHTS,
    CacheStore,
    StoredEntry,
    forecast_key,
    insights_key,
)

T = TypeVar("T")

__all__ = [
    "CHANGE_CHECK_S",
    "FORECAST_A",
    "FORECAST_B",
    "INSIGHTS_PART",
    "PARTS",
    "CpuRunner",
    "PartState",
    "PartsRead",
    "Snapshot",
    "Verdict",
    "Warmer",
    "part_keys",
]

FORECAST_A = "forecastA"
FORECAST_B = "forecastB"
INSIGHTS_PART = "insights"
PARTS = (FORECAST_A, FORECAST_B, INSIGHTS_PART)
_TERM_LABEL = {FORECAST_A: "termA", FORECAST_B: "termB"}
_NEVER = 2**63 - 1


class CpuRunner(Protocol):
    """Where CPU-heavy functions run (the process pool)."""

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` elsewhere and return its result."""
        ...

    def start(self) -> None:
        """Get ready for :meth:`run` calls soon (start worker processes) without waiting."""
        ...


CHANGE_CHECK_S = 0.1
"""How often kept snapshots are checked against the state version (other processes' writes)."""
SNAPSHOT_BUDGET_BYTES = 8 * 1024 * 1024
"""Stored texts the read snapshots may hold in memory; the oldest are dropped beyond it. The pack
bodies encoded from them (``Snapshot.memo``) take up to about twice as much again."""


def part_keys(slug: str, data_hash: str) -> dict[str, str]:
    """``{part: cache key}`` of a comparison at ``data_hash``."""
    return {
        FORECAST_A: forecast_key(slug, "termA", data_hash),
        FORECAST_B: forecast_key(slug, "termB", data_hash),
        INSIGHTS_PART: insights_key(slug, data_hash),
    }


class Warmer:
    """Reads part states and computes missing parts into the cache."""

    def __init__(
        self,
        *,
        cache: CacheStore,
        cpu: CpuRunner,
        insights: InsightsProducer,
        cache_config: CacheConfig,
        forecast_config: ForecastConfig,
        clock: Clock,
    ) -> None:
        self.cache = cache
        self.cpu = cpu
        self.insights = insights
        self.cache_config = cache_config
        self.forecast_config = forecast_config
        self.clock = clock
        self._batches: dict[bool, dict[str, asyncio.Future[Snapshot | None]]] = {}
        self._in_flight: dict[tuple[str, bool], asyncio.Future[Snapshot | None]] = {}
        self._loading: set[asyncio.Task[None]] = set()
        self._version: asyncio.Future[None] | None = None
        self._seen_version = -1
        self._check_due = 0.0
        """Monotonic time from which a kept snapshot needs a version check first."""
        self._forgets = 0
        self._snapshots: OrderedDict[str, Snapshot] = OrderedDict()
        self._snapshot_bytes = 0

    def start_cpu(self) -> None:
        """A run that computes parts is starting: have the CPU runner start its workers now."""
        self.cpu.start()

    @property
    def insights_version(self) -> str:
        """The version an insight pack must carry to count as current."""
        return f"{self.insights.provider}/{self.insights.model}/{self.insights.prompt_version}"

    def applicable(self, points: int) -> list[str]:
        """The parts a comparison of ``points`` points can have: no forecasts below ``min_points``.

        Reads and on-demand warmups judge "ready" and "needs warmup" on these only, so a short
        comparison does not ask for a forecast warmup on every read.
        """
        if points < self.forecast_config.min_points:
            return [INSIGHTS_PART]
        return list(PARTS)

    def version_of(self, part: str) -> str:
        """The current version of ``part``."""
        return self.insights_version if part == INSIGHTS_PART else PREDICTION_ENGINE_VERSION

    async def read(self, slug: str, *, values: bool = False, join: bool = True) -> PartsRead | None:
        """The comparison's head and its parts' states at the time of this call; None when unknown.

        See :meth:`snapshot` for where the answer comes from.
        """
        snapshot = await self.snapshot(slug, values=values, join=join)
        return None if snapshot is None else self.parts_at(snapshot, self.clock.wall_ms())

    async def snapshot(
        self, slug: str, *, values: bool = False, join: bool = True
    ) -> Snapshot | None:
        """What the state holds for ``slug`` (with the stored texts when ``values``); None when unknown.

        From memory when nothing was written since it was read: this process's own writes drop
        the slug's snapshot at once (:meth:`forget`); other processes' writes move the state
        version, which is checked at most every :data:`CHANGE_CHECK_S` by one small statement
        shared by every reader (so a write by another process is seen within that time), and a
        snapshot is never used past the expiry of one of its entries.

        Otherwise reads are batched: every read asked during one turn of the event loop is
        answered by one statement issued at the next turn (the "data loader" pattern), so
        concurrent requests cost one trip to SQLite's thread per batch, not one each, and two
        readers of one slug share it. ``join=False`` never answers from memory or from a
        statement already in flight: the caller needs a statement issued after its call.
        """
        if join:
            kept = self._snapshots.get(slug)
            if kept is not None and (kept.has_texts or not values):
                if self.clock.monotonic() >= self._check_due:
                    await self._check_version()
                if (
                    kept.state_version == self._seen_version
                    and self.clock.wall_ms() < kept.valid_until_ms
                ):
                    return kept
        return await self._read(slug, values, join)

    def kept(self, slug: str, *, values: bool = False) -> Snapshot | None:
        """What :meth:`snapshot` would answer from memory without waiting for anything, else None.

        The same conditions, minus the wait: None when no snapshot is kept, or a version check is
        due (the caller then awaits :meth:`snapshot`, which makes it). Spares the hot read paths a
        coroutine per request (bench P3/P7).
        """
        kept = self._snapshots.get(slug)
        if (
            kept is not None
            and (kept.has_texts or not values)
            and self.clock.monotonic() < self._check_due
            and kept.state_version == self._seen_version
            and self.clock.wall_ms() < kept.valid_until_ms
        ):
            return kept
        return None

    async def _read(self, slug: str, values: bool, join: bool) -> Snapshot | None:
        loop = asyncio.get_running_loop()
        # A read of this slug already on its way to SQLite answers this caller too, unless the
        # caller needs a statement issued after its call (``join=False``).
        future = self._in_flight.get((slug, values)) if join else None
        if future is None:
            batch = self._batches.get(values)
            if batch is None:
                batch = self._batches[values] = {}
                loop.call_soon(self._flush, values)
            future = batch.get(slug)
            if future is None:
                future = batch[slug] = loop.create_future()
        # Shielded: one caller giving up (a client disconnect) must not cancel the others' read.
        return await asyncio.shield(future)

    def forget(self, slug: str) -> None:
        """This process wrote ``slug``'s state: drop its snapshot and check the version again.

        The check matters for a read that was already in flight: it may land after the write with
        the state from before, tagged with the version from before, which the check then refuses.
        """
        old = self._snapshots.pop(slug, None)
        if old is not None:
            self._snapshot_bytes -= old.size
        self._check_due = 0.0
        self._forgets += 1

    async def _check_version(self) -> None:
        """Learn the state version, by one statement shared by every caller while it is in flight."""
        future = self._version
        if future is None:
            future = self._version = asyncio.get_running_loop().create_future()
            task = asyncio.ensure_future(self._load_version(future))
            self._loading.add(task)
            task.add_done_callback(self._loading.discard)
        await asyncio.shield(future)

    async def _load_version(self, future: asyncio.Future[None]) -> None:
        # Due again counting from before the statement: a write racing it is caught by the next.
        due = self.clock.monotonic() + CHANGE_CHECK_S
        forgets = self._forgets
        try:
            version = await self.cache.state_version()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: an error nobody awaits any more is not "lost"
            if not isinstance(exc, Exception):
                raise
        else:
            self._seen_version = max(self._seen_version, version)
            if forgets == self._forgets:  # no forget() while the statement was on its way
                self._check_due = due
            future.set_result(None)
        finally:
            self._version = None

    def _flush(self, values: bool) -> None:
        batch = self._batches.pop(values)
        for slug, future in batch.items():
            self._in_flight[(slug, values)] = future
            future.add_done_callback(functools.partial(self._landed, (slug, values)))
        task = asyncio.ensure_future(self._load(batch, values))
        self._loading.add(task)
        task.add_done_callback(self._loading.discard)

    def _landed(self, key: tuple[str, bool], _: object) -> None:
        self._in_flight.pop(key, None)

    async def _load(self, batch: dict[str, asyncio.Future[Snapshot | None]], values: bool) -> None:
        try:
            version, found = await self.cache.read_comparisons(
                list(batch), self.clock.wall_ms(), values=values
            )
        except BaseException as exc:
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._seen_version = max(self._seen_version, version)
        for slug, future in batch.items():
            snapshot = self._keep(slug, version, found.get(slug), values)
            if not future.done():
                future.set_result(snapshot)

    def _keep(
        self,
        slug: str,
        version: int,
        found: tuple[ComparisonHead, dict[str, StoredEntry]] | None,
        values: bool,
    ) -> Snapshot | None:
        """Make the snapshot of what one statement found, and keep it for later reads."""
        old = self._snapshots.pop(slug, None)
        if old is not None:
            self._snapshot_bytes -= old.size
        if found is None:
            return None
        head, by_key = found
        entries = {
            part: by_key[key]
            for part, key in part_keys(head.slug, head.data_hash).items()
            if key in by_key
        }
        snapshot = Snapshot(
            state_version=version,
            head=head,
            entries=entries,
            has_texts=values,
            valid_until_ms=min((e.stale_until_ms for e in entries.values()), default=_NEVER),
        )
        if old is not None and (
            old.state_version > version
            or (old.state_version == version and old.has_texts and not values)
        ):
            # A newer snapshot landed first (statements may finish out of order), or the same
            # state with the texts: keep the one that answers more reads.
            self._snapshots[slug] = old
            self._snapshot_bytes += old.size
            return snapshot
        self._snapshots[slug] = snapshot
        self._snapshot_bytes += snapshot.size
        while self._snapshot_bytes > SNAPSHOT_BUDGET_BYTES and len(self._snapshots) > 1:
            _, dropped = self._snapshots.popitem(last=False)
            self._snapshot_bytes -= dropped.size
        return snapshot

    def up_to_date(self, snapshot: Snapshot, now_ms: int) -> bool:
        """Whether every part that applies to the comparison is up to date at ``now_ms``.

        Judged again only when the time passes an entry's ``fresh_until`` or the insights version
        changes: the answer to every warmup request of a warm comparison (bench P3).
        """
        version = self.insights_version
        ready = snapshot.ready
        if ready is None or now_ms >= ready[0] or ready[1] != version:
            states = self.parts_at(snapshot, now_ms).states
            value = all(states[p].up_to_date for p in self.applicable(snapshot.head.points))
            changes = [
                e.fresh_until_ms for e in snapshot.entries.values() if e.fresh_until_ms > now_ms
            ]
            ready = snapshot.ready = (min(changes, default=snapshot.valid_until_ms), version, value)
        return ready[2]

    def parts_at(self, snapshot: Snapshot, now_ms: int) -> PartsRead:
        """The parts' states of ``snapshot`` at ``now_ms`` (freshness is always judged now)."""
        states: dict[str, PartState] = {}
        texts: dict[str, str | None] = {}
        for part in PARTS:
            entry = snapshot.entries.get(part)
            if entry is None:
                states[part], texts[part] = PartState(Freshness.MISSING, False), None
            else:
                current = entry.version == self.version_of(part)
                states[part] = PartState(entry.freshness_at(now_ms), current)
                texts[part] = entry.text
        return PartsRead(head=snapshot.head, states=states, texts=texts)

    async def states(self, slug: str, data_hash: str, now_ms: int) -> dict[str, PartState]:
        """``{part: PartState}`` for the three parts, without loading values."""
        keys = part_keys(slug, data_hash)
        found = await self.cache.freshness(list(keys.values()), now_ms)
        return {
            part: PartState(found[key][0], found[key][1] == self.version_of(part))
            for part, key in keys.items()
        }

    async def warm(self, comparison: Comparison, parts: list[str], fencing: Fencing) -> ItemOutcome:
        """Compute ``parts`` of ``comparison`` and write them with ``fencing``.

        Parts that are up to date are left alone; when none needs work the outcome is skipped
        ``up_to_date``; a series too short for a forecast is skipped ``insufficient_data``.

        :raises WarmupdError: when a producer fails (the caller records the item as failed).
        """
        data_hash = comparison.data_hash
        states = await self.states(comparison.slug, data_hash, self.clock.wall_ms())
        todo = [p for p in parts if not states[p].up_to_date]
        if not todo:
            return ItemOutcome.skipped("up_to_date")
        forecasts = [p for p in todo if p != INSIGHTS_PART]
        if forecasts and len(comparison.series) < self.forecast_config.min_points:
            if INSIGHTS_PART not in todo:
                return ItemOutcome.skipped("insufficient_data")
            forecasts = []
        # A TaskGroup, not gather: when one part fails the others are cancelled, so no part of a
        # failed item keeps computing (and writing) after the item, its run and its lock are gone.
        try:
            async with asyncio.TaskGroup() as group:
                for part in forecasts:
                    group.create_task(self._forecast(comparison, part, fencing))
                if INSIGHTS_PART in todo:
                    group.create_task(self._insights(comparison, fencing))
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return ItemOutcome.processed()

    async def _forecast(self, comparison: Comparison, part: str, fencing: Fencing) -> None:
        term = comparison.term_a if part == FORECAST_A else comparison.term_b
        value = await self.cpu.run(
            forecast_term,
            dates=comparison.dates,
            values=comparison.values(term),
            term=_TERM_LABEL[part],
            horizon_days=self.forecast_config.horizon_days,
            min_points=self.forecast_config.min_points,
            generated_at_ms=self.clock.wall_ms(),
            source_updated_ms=comparison.updated_at_ms or None,
        )
        value["termName"] = term
        await self._put(comparison, part, FORECAST, PREDICTION_ENGINE_VERSION, value, fencing)

    async def _insights(self, comparison: Comparison, fencing: Fencing) -> None:
        value = await self.insights.insights(comparison, now_ms=self.clock.wall_ms())
        await self._put(comparison, INSIGHTS_PART, INSIGHTS, self.insights_version, value, fencing)

    async def _put(
        self,
        comparison: Comparison,
        part: str,
        kind: str,
        version: str,
        value: dict[str, Any],
        fencing: Fencing,
    ) -> None:
        data_hash = comparison.data_hash
        key = part_keys(comparison.slug, data_hash)[part]
        written = await self.cache.put(
            key,
            kind=kind,
            slug=comparison.slug,
            data_hash=data_hash,
            version=version,
            value=value,
            now_ms=self.clock.wall_ms(),
            fresh_ttl_ms=self.cache_config.fresh_ttl_ms,
            stale_ttl_ms=self.cache_config.stale_ttl_ms,
            fence_key=fencing.fence_key,
            fence=fencing.fence,
        )
        self.forget(comparison.slug)
        if not written:
            raise LockLost(f"cache write of {key} rejected: a newer lock holder already wrote it")
