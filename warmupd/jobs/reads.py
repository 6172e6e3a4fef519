"""The comparisons service behind the HTTP API: writes, warmup requests and cache reads (SPEC §7, §9).

Reads never compute. A read that finds a part missing schedules an on-demand warmup; one that finds a
part stale serves it and, with ``cache.stale_while_revalidate``, schedules a background refresh. Both
are fire-and-forget: the read answers with what the cache holds now.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from warmupd.clock import Clock, ms_to_iso
from warmupd.config import Config
from warmupd.errors import NotFound, QueueFull
from warmupd.jobs.ondemand import OnDemand
from warmupd.jobs.parts import (
    FORECAST_A,
    FORECAST_B,
    INSIGHTS_PART,
    PartsRead,
    Snapshot,
    Verdict,
    Warmer,
)
from warmupd.logs import get_logger
from warmupd.models import Comparison, Freshness, WarmupState
from warmupd.state.store import ComparisonStore, WarmupStore

log = get_logger("warmupd.reads")


_PACK = "pack"
_PACK_TAIL = {
    (overall, missing): (
        f'"freshness": "{overall.value}", "needsWarmup": {"true" if missing else "false"}}}'
    ).encode()
    for overall in Freshness
    for missing in (False, True)
}
"""The pack's last two fields, which a read computes at its own time: every variant, encoded once."""


def _pack_head(read: PartsRead) -> bytes:
    """The pack up to its time-dependent fields, encoded."""
    head = read.head

    def part(name: str) -> str:
        return read.texts[name] or "null"

    return (
        f'{{"slug": {json.dumps(head.slug)}, "terms": {json.dumps([head.term_a, head.term_b])}, '
        f'"dataHash": {json.dumps(head.data_hash)}, '
        f'"forecasts": {{"termA": {part(FORECAST_A)}, "termB": {part(FORECAST_B)}}}, '
        f'"insights": {part(INSIGHTS_PART)}, '
    ).encode()


class ComparisonService:
    """Implements :class:`warmupd.http.ComparisonsService`."""

    def __init__(
        self,
        *,
        config: Callable[[], Config],
        comparisons: ComparisonStore,
        warmups: WarmupStore,
        warmer: Warmer,
        on_demand: OnDemand,
        clock: Clock,
    ) -> None:
        self._config = config
        self.comparisons = comparisons
        self.warmups = warmups
        self.warmer = warmer
        self.on_demand = on_demand
        self.clock = clock

    async def upsert(self, comparison: Comparison) -> tuple[bool, str]:
        """Insert or update a comparison; ``(created, dataHash)``."""
        try:
            return await self.comparisons.upsert(comparison, self.clock.wall_ms())
        finally:
            self.warmer.forget(comparison.slug)

    async def add_views(self, slug: str, count: int, at_ms: int | None) -> dict[str, Any]:
        """Add views and move ``lastVisited`` forward."""
        result = await self.comparisons.add_views(slug, count, at_ms or self.clock.wall_ms())
        if result is None:
            raise NotFound(f"unknown comparison {slug!r}")
        return {"slug": slug, "viewCount": result[0], "lastVisited": ms_to_iso(result[1])}

    async def request_warmup(self, slug: str, data_hash: str | None) -> dict[str, Any]:
        """See :meth:`OnDemand.request`."""
        return await self.on_demand.request(slug, data_hash)

    async def warmup_status(self, slug: str) -> dict[str, Any]:
        """The on-demand status a client polls, with each part's freshness."""
        now = self.clock.wall_ms()
        read = await self._read(slug, values=False)
        head, states = read.head, read.states
        row = await self.warmups.get(slug, head.data_hash)
        flight = self.on_demand.flight_state(slug, head.data_hash)
        # The parts are the truth: a row says what the last on-demand warmup did, which a nightly
        # run may have made moot since (ready), and a queued/running row older than the longest a
        # warmup may take was left by a process that stopped or died (idle).
        horizon_ms = self._config().on_demand.max_duration_ms
        if flight is not None:
            state = flight
        elif all(states[p].up_to_date for p in self.warmer.applicable(head.points)):
            state = WarmupState.READY
        elif row is None or (
            row.status in (WarmupState.QUEUED, WarmupState.RUNNING)
            and now - row.updated_at_ms > horizon_ms
        ):
            state = WarmupState.IDLE
        elif row.status is WarmupState.READY:
            state = WarmupState.IDLE  # ready then, but a part has gone stale or missing since
        else:
            state = row.status
        body: dict[str, Any] = {
            "slug": slug,
            "dataHash": head.data_hash,
            "warmup": state.value,
            "parts": {part: s.shown.value for part, s in states.items()},
            "updatedAt": ms_to_iso(row.updated_at_ms if row else now),
        }
        if row is not None and row.error and state is WarmupState.FAILED:
            body["lastError"] = row.error
        return body

    async def pack(self, slug: str) -> bytes:
        """The premium pack as encoded JSON; schedules a warmup for missing parts, a refresh for stale.

        The cached parts are spliced in as the text they were stored as: decoding three values only
        to encode them again was most of the cost of this read (bench P7). ``CacheStore.put`` wrote
        them with ``json.dumps``, so they are valid JSON by construction. Everything but the two
        fields that depend on the time of the read (``freshness``, ``needsWarmup``) is encoded once
        per snapshot of the comparison's state and kept with it; those two are judged again
        whenever the time passes a part's ``fresh_until`` or the insights version changes.
        """
        snapshot = self.warmer.kept(slug, values=True)
        if snapshot is None:
            snapshot = await self.warmer.snapshot(slug, values=True)
        if snapshot is None:
            raise NotFound(f"unknown comparison {slug!r}")
        now_ms = self.clock.wall_ms()
        insights_version = self.warmer.insights_version
        verdict = snapshot.verdict
        if verdict is None or now_ms >= verdict.until_ms or verdict.insights != insights_version:
            verdict = snapshot.verdict = self._verdict(snapshot, now_ms, insights_version)
        if verdict.missing or (verdict.stale and self._config().cache.stale_while_revalidate):
            try:
                self.on_demand.schedule(slug, snapshot.head.data_hash)
            except QueueFull:
                log.warning("pack.refresh_not_queued", slug=slug, reason="queue_full")
        memo = snapshot.memo
        body = memo.get(verdict.tail_name)
        if body is None:
            head = memo.get(_PACK)
            if head is None:
                head = memo[_PACK] = _pack_head(self.warmer.parts_at(snapshot, now_ms))
            body = memo[verdict.tail_name] = head + verdict.tail
        return body

    def _verdict(self, snapshot: Snapshot, now_ms: int, insights_version: str) -> Verdict:
        """The pack's freshness at ``now_ms``, and until when it holds."""
        states = self.warmer.parts_at(snapshot, now_ms).states
        wanted = self.warmer.applicable(snapshot.head.points)
        missing = any(states[p].shown is Freshness.MISSING for p in wanted)
        stale = any(states[p].shown is Freshness.STALE for p in wanted)
        overall = Freshness.MISSING if missing else Freshness.STALE if stale else Freshness.FRESH
        # Freshness changes only when the time passes an entry's fresh_until (stale_until ends
        # the snapshot itself).
        changes = [e.fresh_until_ms for e in snapshot.entries.values() if e.fresh_until_ms > now_ms]
        return Verdict(
            until_ms=min(changes, default=snapshot.valid_until_ms),
            insights=insights_version,
            missing=missing,
            stale=stale,
            tail=_PACK_TAIL[overall, missing],
            tail_name=f"pack:{overall.value}:{missing}",
        )

    async def search(self, prefix: str, limit: int) -> list[dict[str, Any]]:
        """Comparisons by slug or term prefix, most viewed first, each with its parts' freshness.

        A read only: nothing is scheduled (the dashboard shows what the cache holds).
        """
        found = await self.comparisons.search(prefix, limit)
        reads = await asyncio.gather(*(self.warmer.read(c.slug) for c in found))
        out = []
        for comparison, read in zip(found, reads, strict=True):
            parts = {p: s.shown.value for p, s in read.states.items()} if read else {}
            out.append(
                {
                    "slug": comparison.slug,
                    "terms": [comparison.term_a, comparison.term_b],
                    "viewCount": comparison.view_count,
                    "points": len(comparison.series),
                    "lastVisited": ms_to_iso(comparison.last_visited_ms),
                    "parts": parts,
                }
            )
        return out

    async def detail(self, slug: str) -> dict[str, Any]:
        """A comparison with its series, its parts' freshness and their cached values, decoded.

        A read only: unlike :meth:`pack` it schedules nothing, so the dashboard shows plainly what
        is missing and leaves the choice to warm it to the operator.
        :raises NotFound:
        """
        comparison = await self.comparisons.get(slug)
        read = await self.warmer.read(slug, values=True, join=False)
        if comparison is None or read is None:
            raise NotFound(f"unknown comparison {slug!r}")
        return {
            "comparison": comparison,
            "dataHash": read.head.data_hash,
            "applicable": self.warmer.applicable(read.head.points),
            "parts": {p: s.shown.value for p, s in read.states.items()},
            "values": {p: json.loads(t) if t else None for p, t in read.texts.items()},
            "status": await self.warmup_status(slug),
        }

    async def _read(self, slug: str, *, values: bool) -> PartsRead:
        read = await self.warmer.read(slug, values=values)
        if read is None:
            raise NotFound(f"unknown comparison {slug!r}")
        return read
