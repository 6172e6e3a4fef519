"""The cache entries: fresh/stale/missing, fenced writes, and the read paths' joined read (SPEC §7)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from warmupd.models import ComparisonHead, Freshness
from warmupd.state import Database

_READ_BATCH = 500
"""Slugs per statement of :meth:`CacheStore.read_comparisons` (well under SQLite's variable limit)."""

FORECAST = "forecast"
INSIGHTS = "insights"


def forecast_key(slug: str, term_label: str, data_hash: str) -> str:
    """Cache key of one term's forecast (SPEC §7)."""
    return f"forecast:{slug}:{term_label}:{data_hash}"


def insights_key(slug: str, data_hash: str) -> str:
    """Cache key of a comparison's insight pack (SPEC §7)."""
    return f"insights:{slug}:{data_hash}"


def freshness_at(fresh_until_ms: int, stale_until_ms: int, now_ms: int) -> Freshness:
    """SPEC §7: fresh while now < fresh_until, stale while now < stale_until, else missing."""
    if now_ms < fresh_until_ms:
        return Freshness.FRESH
    if now_ms < stale_until_ms:
        return Freshness.STALE
    return Freshness.MISSING


@dataclass(frozen=True)
class StoredEntry:
    """A live cache entry as the read paths need it: version, expiry times, stored JSON text.

    Freshness is not stored here: it depends on the time of each read (:meth:`freshness_at`).
    """

    version: str
    text: str | None
    fresh_until_ms: int
    stale_until_ms: int

    def freshness_at(self, now_ms: int) -> Freshness:
        """Fresh, stale or missing at ``now_ms`` (SPEC §7)."""
        return freshness_at(self.fresh_until_ms, self.stale_until_ms, now_ms)


class CacheStore:
    """The ``cache_entries`` table with fenced writes."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(
        self,
        key: str,
        *,
        kind: str,
        slug: str,
        data_hash: str,
        version: str,
        value: dict[str, Any],
        now_ms: int,
        fresh_ttl_ms: int,
        stale_ttl_ms: int,
        fence_key: str,
        fence: int,
    ) -> bool:
        """Write an entry unless a newer holder of the same lock already wrote it.

        ``fence_key`` names the lock lineage (backend and lock key) and ``fence`` the writer's fencing
        token. A write is rejected when the stored entry came from the same lineage with a *higher*
        token: a stale holder can never overwrite a newer result. Tokens of different locks are not
        comparable, so a write from another lineage (say the nightly job after an on-demand warmup)
        replaces the entry; both computed the same inputs (the key includes the dataHash).

        :returns: True when written.
        """
        changed = await self.db.execute(
            """INSERT INTO cache_entries(key, kind, slug, data_hash, version, value, created_at,
                   fresh_until, stale_until, fence_key, fence)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(key) DO UPDATE SET
                   kind = excluded.kind, slug = excluded.slug, data_hash = excluded.data_hash,
                   version = excluded.version, value = excluded.value,
                   created_at = excluded.created_at, fresh_until = excluded.fresh_until,
                   stale_until = excluded.stale_until, fence_key = excluded.fence_key,
                   fence = excluded.fence
               WHERE cache_entries.fence_key <> excluded.fence_key
                  OR cache_entries.fence <= excluded.fence""",
            (
                key,
                kind,
                slug,
                data_hash,
                version,
                json.dumps(value, separators=(",", ":"), allow_nan=False),
                now_ms,
                now_ms + fresh_ttl_ms,
                now_ms + stale_ttl_ms,
                fence_key,
                fence,
            ),
        )
        return changed > 0

    async def freshness(self, keys: list[str], now_ms: int) -> dict[str, tuple[Freshness, str]]:
        """``{key: (freshness, version)}`` for every key, without loading values."""
        out = dict.fromkeys(keys, (Freshness.MISSING, ""))
        if not keys:
            return out
        marks = ",".join("?" * len(keys))
        rows = await self.db.fetchall(
            f"""SELECT key, version, fresh_until, stale_until FROM cache_entries
                WHERE key IN ({marks})""",
            tuple(keys),
        )
        for r in rows:
            out[r["key"]] = (freshness_at(r["fresh_until"], r["stale_until"], now_ms), r["version"])
        return out

    async def read_comparisons(
        self, slugs: list[str], now_ms: int, *, values: bool
    ) -> tuple[int, dict[str, tuple[ComparisonHead, dict[str, StoredEntry]]]]:
        """Comparisons' heads and their live cache entries at their current dataHash, in one statement.

        The read paths (pack, status, warmup request) answer from this one round trip, for every
        slug asked in the same moment. ``values`` adds each entry's stored JSON text, undecoded, so
        a response can splice it in as it is. Unknown slugs are absent from the result.

        :returns: ``(state version, found)``; the version is read by the same statement as the rows
            (one snapshot), so what was found is exactly the state at that version. With more
            slugs than one statement takes, the lowest version of the statements is returned.
        """
        found: dict[str, tuple[ComparisonHead, dict[str, StoredEntry]]] = {}
        version = -1
        for start in range(0, len(slugs), _READ_BATCH):
            chunk = slugs[start : start + _READ_BATCH]
            # The version rides on a row of its own (the UNION's first branch), so that a batch of
            # unknown slugs still learns it.
            rows = await self.db.fetchall(
                f"""SELECT CAST(version AS TEXT) AS slug, NULL AS term_a, NULL AS term_b, NULL AS data_hash,
                       NULL AS points, NULL AS key, NULL AS version, NULL AS value,
                       NULL AS fresh_until, NULL AS stale_until, 1 AS is_version
                    FROM state_version WHERE id = 1
                    UNION ALL
                    SELECT c.slug, c.term_a, c.term_b, c.data_hash, c.points, e.key, e.version,
                       {"e.value" if values else "NULL"} AS value, e.fresh_until, e.stale_until,
                       0 AS is_version
                    FROM comparisons c LEFT JOIN cache_entries e
                      ON e.key IN ('forecast:' || c.slug || ':termA:' || c.data_hash,
                                   'forecast:' || c.slug || ':termB:' || c.data_hash,
                                   'insights:' || c.slug || ':' || c.data_hash)
                     AND e.stale_until > ?
                    WHERE c.slug IN ({",".join("?" * len(chunk))})""",
                (now_ms, *chunk),
            )
            for r in rows:
                slug = r["slug"]
                if r["is_version"]:
                    version = int(slug) if version < 0 else min(version, int(slug))
                    continue
                if slug not in found:
                    head = ComparisonHead(
                        slug=slug,
                        term_a=r["term_a"],
                        term_b=r["term_b"],
                        data_hash=r["data_hash"],
                        points=r["points"],
                    )
                    found[slug] = (head, {})
                if r["key"] is not None:
                    found[slug][1][r["key"]] = StoredEntry(
                        version=r["version"],
                        text=r["value"],
                        fresh_until_ms=r["fresh_until"],
                        stale_until_ms=r["stale_until"],
                    )
        return version, found

    async def state_version(self) -> int:
        """The change counter every write to comparisons or cache entries bumps (any process)."""
        row = await self.db.fetchone("SELECT version FROM state_version WHERE id = 1")
        assert row is not None  # inserted by the migration that made the table
        return int(row[0])

    async def purge_expired(self, now_ms: int) -> int:
        """Delete entries past ``stale_until``; returns how many."""
        return await self.db.execute("DELETE FROM cache_entries WHERE stale_until <= ?", (now_ms,))

    async def totals(self, now_ms: int) -> dict[str, int]:
        """``{fresh, stale, expired}`` over all kinds, counted on the indexes alone.

        Three index counts (``fresh_until``, ``stale_until``, the smallest index for the total)
        never read the table's rows, whose values are the large cached documents.
        """
        row = await self.db.fetchone(
            """SELECT (SELECT count(*) FROM cache_entries WHERE fresh_until > ?) AS fresh,
                      (SELECT count(*) FROM cache_entries WHERE stale_until > ?) AS alive,
                      (SELECT count(*) FROM cache_entries) AS total""",
            (now_ms, now_ms),
        )
        assert row is not None  # an aggregate always yields a row
        fresh, alive, total = row["fresh"], row["alive"], row["total"]
        # An entry is fresh before fresh_until ≤ stale_until, so the fresh ones are alive too.
        return {"fresh": fresh, "stale": max(0, alive - fresh), "expired": total - alive}

    async def counts(self, now_ms: int) -> dict[tuple[str, str], int]:
        """``{(kind, state): n}`` with state fresh, stale or expired (not yet purged)."""
        rows = await self.db.fetchall(
            """SELECT kind,
                   CASE WHEN fresh_until > ? THEN 'fresh'
                        WHEN stale_until > ? THEN 'stale' ELSE 'expired' END AS state,
                   count(*) AS n
               FROM cache_entries GROUP BY kind, state""",
            (now_ms, now_ms),
        )
        return {(r["kind"], r["state"]): r["n"] for r in rows}
