"""Plain data shared across layers: enums, comparisons, leases, fires and run records.

Everything here is a frozen dataclass or an enum with no behaviour beyond small derived properties, so
that every layer can import it without pulling in anything else.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class RunStatus(StrEnum):
    """The status of a job run (SPEC §6)."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"


class Trigger(StrEnum):
    """What started a run."""

    SCHEDULE = "schedule"
    HTTP = "http"
    CLI = "cli"
    ON_DEMAND = "on-demand"
    STARTUP = "startup"


class Freshness(StrEnum):
    """The state of a cache entry at a given instant (SPEC §7)."""

    FRESH = "fresh"
    STALE = "stale"
    MISSING = "missing"


class WarmupState(StrEnum):
    """The on-demand warmup state a client polls."""

    IDLE = "idle"
    QUEUED = "queued"
    RUNNING = "running"
    FAILED = "failed"
    READY = "ready"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the input of every content hash."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def short_hash(value: Any) -> str:
    """First 16 hex chars of SHA-256 over :func:`canonical_json` of ``value``."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Two search terms and their interest series.

    ``series`` is a tuple of ``{"date": "YYYY-MM-DD", term_a: value, term_b: value}`` dicts in
    ascending date order, values normalised (integral floats become ints) so that the hash does not
    depend on how a client spelled a number.
    """

    slug: str
    term_a: str
    term_b: str
    timeframe: str
    geo: str = ""
    category: str = ""
    series: tuple[dict[str, Any], ...] = ()
    view_count: int = 0
    last_visited_ms: int | None = None
    created_at_ms: int = 0
    updated_at_ms: int = 0

    @property
    def data_hash(self) -> str:
        """SPEC §3: hash of ``{"series", "timeframe", "terms": [a, b]}``."""
        return data_hash(list(self.series), self.timeframe, self.term_a, self.term_b)

    @property
    def dates(self) -> list[str]:
        """The series dates."""
        return [p["date"] for p in self.series]

    def values(self, term: str) -> list[float]:
        """The series values of ``term`` (one of the two terms) as floats."""
        return [float(p[term]) for p in self.series]


@dataclass(frozen=True, kw_only=True)
class ComparisonHead:
    """What the read path needs of a comparison: no series."""

    slug: str
    term_a: str
    term_b: str
    data_hash: str
    points: int


def data_hash(series: list[dict[str, Any]], timeframe: str, term_a: str, term_b: str) -> str:
    """The comparison's ``dataHash`` (SPEC §3)."""
    return short_hash({"series": series, "timeframe": timeframe, "terms": [term_a, term_b]})


@dataclass(frozen=True, kw_only=True)
class Lease:
    """A held lock: its key, this acquisition's owner token, backend and fencing token."""

    key: str
    token: str
    fence: int
    backend: str
    lease_ms: int


@dataclass(frozen=True)
class Acquired:
    """The lock was acquired."""

    lease: Lease


@dataclass(frozen=True)
class Held:
    """Another owner holds the lock: its node id and run id when the backend knows them."""

    holder: str | None = None
    """The holder's node id (``host:pid:hex``)."""
    run_id: int | None = None
    """The run the holder recorded for this lock (see ``Locks.tag_run``)."""


@dataclass(frozen=True)
class Unavailable:
    """The lock backend could not be asked (unreachable, timed out, busy)."""

    reason: str


AcquireResult = Acquired | Held | Unavailable


@dataclass(frozen=True, kw_only=True)
class Fire:
    """One scheduled fire of a job: its identity is ``(job, due_ms)``."""

    job: str
    due_ms: int
    trigger: Trigger = Trigger.SCHEDULE
    coalesced: int = 1
    """How many missed fires this one stands for (start-up catch-up coalesces them)."""


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """The log record of one run (SPEC §6)."""

    id: int
    job: str
    status: RunStatus
    trigger: Trigger
    node: str
    started_at_ms: int
    reason: str | None = None
    finished_at_ms: int | None = None
    duration_ms: int | None = None
    processed: int = 0
    skipped: int = 0
    failed: int = 0
    errors: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
