"""What a read of a comparison's parts found, and how fresh each part is at a given time.

A :class:`Snapshot` is one statement's view of a comparison and its cache entries, kept in memory
by :class:`~warmupd.jobs.parts.Warmer` while nothing changes; :class:`PartsRead` is that view judged
at the time of one read. Freshness is never stored: it is computed per read from expiry times.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from warmupd.models import ComparisonHead, Freshness
from warmupd.state.cache import StoredEntry


@dataclass(frozen=True)
class PartState:
    """A part's freshness, counting an entry made by another engine/prompt version as stale."""

    freshness: Freshness
    current_version: bool

    @property
    def up_to_date(self) -> bool:
        """Fresh and made by the current engine or prompt version."""
        return self.freshness is Freshness.FRESH and self.current_version

    @property
    def shown(self) -> Freshness:
        """The freshness reported to clients (an old version is served as stale)."""
        if self.freshness is Freshness.FRESH and not self.current_version:
            return Freshness.STALE
        return self.freshness


@dataclass(frozen=True)
class Verdict:
    """A pack's freshness judged at some time, valid until ``until_ms`` (for one insights version)."""

    until_ms: int
    insights: str
    missing: bool
    stale: bool
    tail: bytes
    """The encoded ``"freshness": …, "needsWarmup": …}`` that ends the pack."""
    tail_name: str
    """Names the whole pack with this tail in the snapshot's ``memo``."""


@dataclass
class Snapshot:
    """What one statement found for a comparison, tagged with the state version it saw.

    Freshness is not part of it: every read computes it at its own time from the expiry times, so a
    snapshot kept in memory never freezes ``fresh``/``stale``. It is valid until the state version
    moves (any process wrote) or one of its entries expires (the statement would not return it).
    """

    state_version: int
    head: ComparisonHead
    entries: dict[str, StoredEntry]
    """By part; an absent part had no live entry."""
    has_texts: bool
    valid_until_ms: int
    memo: dict[str, bytes] = field(default_factory=dict)
    """Renderings of this snapshot (the pack's encoded body), made once by the read paths."""
    verdict: Verdict | None = None
    """The pack's last freshness verdict on this snapshot (see ``ComparisonService.pack``)."""
    ready: tuple[int, str, bool] | None = None
    """``(until_ms, insights version, every applicable part up to date)``, last judged."""

    @property
    def size(self) -> int:
        """Roughly the memory its texts take."""
        return sum(len(e.text or "") for e in self.entries.values())


@dataclass(frozen=True)
class PartsRead:
    """A comparison's head with its parts' states (and, when asked, their stored JSON texts)."""

    head: ComparisonHead
    states: dict[str, PartState]
    texts: dict[str, str | None]
