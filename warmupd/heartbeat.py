"""One node's heartbeat on the shared state (SPEC §6, §11, §14).

Each beat proves this process alive in the ``nodes`` table, measures its wall clock against the
database's, and marks ``running`` runs of nodes whose heartbeat is older than the stale age
(3 leases) ``abandoned`` — so a daemon that died is noticed by any live one, at every beat, not only
when something starts. On PostgreSQL a heartbeat's instant and its age are the server's clock
(:class:`~warmupd.state.runs.NodeStore`), so a skewed node is neither taken for dead nor kept alive.

Skew is the node's clock minus the database's at the midpoint of the measuring round trip. On
PostgreSQL that is the server's ``clock_timestamp()``. On SQLite it is *not applicable* (``None``,
``skewMs: null``): a state file is shared only by the processes of one host, whose clock is the
only one there is — nothing to measure against, and nothing that could disagree. Past
:data:`SKEW_LIMIT_MS` the daemon logs one warning when it crosses the limit (and one line when it
comes back), and reports ``degraded`` with the reason: cron fires are computed from the node's own
clock, so an operator must see a node that is off.
"""

from __future__ import annotations

from collections.abc import Callable

from warmupd.clock import Clock
from warmupd.logs import get_logger
from warmupd.state.runs import NodeStore, RunStore, recover_abandoned

log = get_logger("warmupd.heartbeat")

SKEW_LIMIT_MS = 1_000
"""A node's clock further off the database's than this is reported (SPEC §14: past 1 s)."""
HEARTBEAT_MAX_S = 10.0
"""The longest time between two beats; shorter leases beat more often (see :func:`interval_s`)."""


def interval_s(lease_ms: int) -> float:
    """Time between beats: at most :data:`HEARTBEAT_MAX_S`, and a third of a lease, so a live node
    is never 3 leases behind even with a short lease."""
    return min(HEARTBEAT_MAX_S, lease_ms / 3000)


class Heartbeat:
    """The heartbeat of ``node``: :meth:`beat` is one step; the daemon calls it in a loop."""

    def __init__(
        self,
        *,
        nodes: NodeStore,
        runs: RunStore,
        clock: Clock,
        node: str,
        version: str,
        stale_ms: Callable[[], int],
    ) -> None:
        self.nodes = nodes
        self.runs = runs
        self.clock = clock
        self.node = node
        self.version = version
        self.stale_ms = stale_ms
        """How old a heartbeat is when its node counts as dead (3 leases; reloadable)."""
        self.skew_ms: int | None = None
        """This node's skew at the last beat (None before the first)."""
        self._skewed = False

    async def measure_skew(self) -> int | None:
        """This node's wall clock minus the database's, at the midpoint of one round trip (None
        when the database has no clock of its own)."""
        before = self.clock.wall_ms()
        database_ms = await self.nodes.database_ms()
        after = self.clock.wall_ms()
        return None if database_ms is None else (before + after) // 2 - database_ms

    async def beat(self) -> list[int]:
        """Measure the skew, record the heartbeat, mark dead nodes' runs abandoned (their ids)."""
        self._observe(await self.measure_skew())
        now_ms = self.clock.wall_ms()
        await self.nodes.heartbeat(self.node, now_ms, version=self.version, skew_ms=self.skew_ms)
        abandoned = await recover_abandoned(
            self.runs,
            self.nodes,
            self_node=self.node,
            now_ms=now_ms,
            stale_after_ms=self.stale_ms(),
        )
        if abandoned:
            log.warning("runs.abandoned", count=len(abandoned), ids=abandoned)
        return abandoned

    def _observe(self, skew_ms: int | None) -> None:
        self.skew_ms = skew_ms
        skewed = skew_ms is not None and abs(skew_ms) > SKEW_LIMIT_MS
        if skewed and not self._skewed:
            log.warning("clock.skewed", skew_ms=skew_ms, limit_ms=SKEW_LIMIT_MS)
        elif self._skewed and not skewed:
            log.info("clock.skew_ok", skew_ms=skew_ms, limit_ms=SKEW_LIMIT_MS)
        self._skewed = skewed

    def degraded_reason(self) -> str | None:
        """Why this node's clock makes it ``degraded``, or None."""
        if not self._skewed or self.skew_ms is None:
            return None
        return (
            f"clock skew: this node's clock is {self.skew_ms} ms off the database's "
            f"(limit {SKEW_LIMIT_MS} ms)"
        )
