"""Repositories over the state database: comparisons, cache entries, schedule state and warmups.

Job runs live in :mod:`warmupd.runs`. Every timestamp is integer epoch milliseconds; every method takes
``now_ms`` where time matters, so tests decide what "now" is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from warmupd.db import Database, Row
from warmupd.models import Comparison, Freshness, WarmupState

_READ_BATCH = 500
"""Slugs per statement of :meth:`CacheStore.read_comparisons` (well under SQLite's variable limit)."""

FORECAST = "forecast"
INSIGHTS = "insights"
TERM_LABELS = ("termA", "termB")


def forecast_key(slug: str, term_label: str, data_hash: str) -> str:
    """Cache key of one term's forecast (SPEC §7)."""
    return f"forecast:{slug}:{term_label}:{data_hash}"


def insights_key(slug: str, data_hash: str) -> str:
    """Cache key of a comparison's insight pack (SPEC §7)."""
    return f"insights:{slug}:{data_hash}"


# --------------------------------------------------------------------------- comparisons

_COMPARISON_COLUMNS = (
    "slug, term_a, term_b, timeframe, geo, category, series, view_count, last_visited, "
    "created_at, updated_at"
)


def _comparison(row: Row) -> Comparison:
    return Comparison(
        slug=row["slug"],
        term_a=row["term_a"],
        term_b=row["term_b"],
        timeframe=row["timeframe"],
        geo=row["geo"],
        category=row["category"],
        series=tuple(json.loads(row["series"])),
        view_count=row["view_count"],
        last_visited_ms=row["last_visited"],
        created_at_ms=row["created_at"],
        updated_at_ms=row["updated_at"],
    )


@dataclass(frozen=True, kw_only=True)
class ComparisonHead:
    """What the read path needs of a comparison: no series."""

    slug: str
    term_a: str
    term_b: str
    data_hash: str
    points: int


class ComparisonStore:
    """The ``comparisons`` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def upsert(self, comparison: Comparison, now_ms: int) -> tuple[bool, str]:
        """Insert or replace a comparison's definition and series, keeping its views.

        :returns: ``(created, data_hash)``.
        """
        data_hash = comparison.data_hash
        row = await self.db.fetchone(
            """INSERT INTO comparisons(slug, term_a, term_b, timeframe, geo, category, series, points,
                   data_hash, view_count, last_visited, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, ?, ?)
               ON CONFLICT(slug) DO UPDATE SET
                   term_a = excluded.term_a, term_b = excluded.term_b,
                   timeframe = excluded.timeframe, geo = excluded.geo,
                   category = excluded.category, series = excluded.series,
                   points = excluded.points, data_hash = excluded.data_hash,
                   updated_at = excluded.updated_at
               RETURNING created_at""",
            (
                comparison.slug,
                comparison.term_a,
                comparison.term_b,
                comparison.timeframe,
                comparison.geo,
                comparison.category,
                json.dumps(list(comparison.series), separators=(",", ":")),
                len(comparison.series),
                data_hash,
                now_ms,
                now_ms,
            ),
        )
        created = row is not None and row["created_at"] == now_ms
        return created, data_hash

    async def get(self, slug: str) -> Comparison | None:
        """One comparison, or None."""
        row = await self.db.fetchone(
            f"SELECT {_COMPARISON_COLUMNS} FROM comparisons WHERE slug = ?", (slug,)
        )
        return _comparison(row) if row else None

    async def add_views(self, slug: str, count: int, at_ms: int) -> tuple[int, int] | None:
        """Add ``count`` views and move ``last_visited`` forward to ``at_ms``.

        :returns: ``(view_count, last_visited_ms)`` after the change, or None for an unknown slug.
        """
        row = await self.db.fetchone(
            """UPDATE comparisons SET view_count = view_count + ?,
                   last_visited = max(coalesce(last_visited, 0), ?)
               WHERE slug = ? RETURNING view_count, last_visited""",
            (count, at_ms, slug),
        )
        return (row["view_count"], row["last_visited"]) if row else None

    async def head(self, slug: str) -> ComparisonHead | None:
        """A comparison's terms and current dataHash without its series (the read path's query)."""
        row = await self.db.fetchone(
            "SELECT term_a, term_b, data_hash, points FROM comparisons WHERE slug = ?", (slug,)
        )
        if row is None:
            return None
        return ComparisonHead(
            slug=slug,
            term_a=row["term_a"],
            term_b=row["term_b"],
            data_hash=row["data_hash"],
            points=row["points"],
        )

    async def count(self) -> int:
        """Number of comparisons."""
        row = await self.db.fetchone("SELECT count(*) FROM comparisons")
        return int(row[0]) if row else 0

    async def select_for_forecasts(
        self, now_ms: int, window_ms: int, limit: int
    ) -> list[Comparison]:
        """SPEC §6 selection of ``warmup-forecasts``.

        ``created_at ≥ now−window OR last_visited ≥ now−window OR view_count > 0``, ordered by
        ``view_count DESC, last_visited DESC NULLS LAST, created_at DESC``, ``LIMIT limit``.
        """
        since = now_ms - window_ms
        return await self._select_split(
            "view_count > ?",
            "+view_count <= ? AND (created_at >= ? OR last_visited >= ?)",
            0,
            (since, since),
            limit,
        )

    async def select_for_insights(
        self, now_ms: int, window_ms: int, min_views: int, limit: int
    ) -> list[Comparison]:
        """SPEC §6 selection of ``warmup-ai-explanations``.

        ``view_count ≥ min_views OR last_visited ≥ now−window``, ordered by ``view_count DESC,
        last_visited DESC NULLS LAST``, ``LIMIT limit``.
        """
        return await self._select_split(
            "view_count >= ?",
            "+view_count < ? AND last_visited >= ?",
            min_views,
            (now_ms - window_ms,),
            limit,
        )

    async def _select_split(
        self, popular: str, rest: str, views: int, rest_args: tuple[int, ...], limit: int
    ) -> list[Comparison]:
        """``popular OR recent`` in popularity order, as two index-driven queries.

        Split at the first sort key: every row that passes ``popular`` (a ``view_count`` range)
        sorts before every row that fails it. The first query walks the popularity index and stops
        after ``limit`` rows (the usual case: done). Only when it finds fewer does the second look
        at the *recent* rows among the rest, through the created_at and last_visited indexes (the
        unary ``+`` keeps the planner from walking the popularity index instead) and sort those few.
        A single ``OR`` would walk the whole index whenever fewer than ``limit`` rows match. View
        counts only grow, so no row can appear in both answers. DESC puts NULLs last in SQLite, so
        ``last_visited DESC`` is "NULLS LAST".
        """
        order = "view_count DESC, last_visited DESC, created_at DESC"
        rows = await self.db.fetchall(
            f"SELECT {_COMPARISON_COLUMNS} FROM comparisons WHERE {popular} ORDER BY {order} LIMIT ?",
            (views, limit),
        )
        if len(rows) < limit:
            rows += await self.db.fetchall(
                f"""SELECT {_COMPARISON_COLUMNS} FROM comparisons WHERE {rest}
                    ORDER BY +{order} LIMIT ?""",
                (views, *rest_args, limit - len(rows)),
            )
        return [_comparison(r) for r in rows]


# --------------------------------------------------------------------------- cache


@dataclass(frozen=True, kw_only=True)
class CacheEntry:
    """One cache entry and its freshness at the instant it was read."""

    key: str
    kind: str
    slug: str
    data_hash: str
    version: str
    value: dict[str, Any]
    created_at_ms: int
    fresh_until_ms: int
    stale_until_ms: int
    freshness: Freshness


def freshness_at(fresh_until_ms: int, stale_until_ms: int, now_ms: int) -> Freshness:
    """SPEC §7: fresh while now < fresh_until, stale while now < stale_until, else missing."""
    if now_ms < fresh_until_ms:
        return Freshness.FRESH
    if now_ms < stale_until_ms:
        return Freshness.STALE
    return Freshness.MISSING


@dataclass(frozen=True)
class StoredEntry:
    """A live cache entry as the read paths need it: version, freshness, stored JSON text."""

    version: str
    text: str | None
    freshness: Freshness


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

    async def get_many(self, keys: list[str], now_ms: int) -> dict[str, CacheEntry]:
        """Entries for ``keys`` that are fresh or stale (missing ones are absent)."""
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        rows = await self.db.fetchall(
            f"""SELECT key, kind, slug, data_hash, version, value, created_at, fresh_until,
                   stale_until FROM cache_entries WHERE key IN ({marks}) AND stale_until > ?""",
            (*keys, now_ms),
        )
        return {
            r["key"]: CacheEntry(
                key=r["key"],
                kind=r["kind"],
                slug=r["slug"],
                data_hash=r["data_hash"],
                version=r["version"],
                value=json.loads(r["value"]),
                created_at_ms=r["created_at"],
                fresh_until_ms=r["fresh_until"],
                stale_until_ms=r["stale_until"],
                freshness=freshness_at(r["fresh_until"], r["stale_until"], now_ms),
            )
            for r in rows
        }

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
    ) -> dict[str, tuple[ComparisonHead, dict[str, StoredEntry]]]:
        """Comparisons' heads and their live cache entries at their current dataHash, in one statement.

        The read paths (pack, status, warmup request) answer from this one round trip, for every
        slug asked in the same moment. ``values`` adds each entry's stored JSON text, undecoded, so
        a response can splice it in as it is. Unknown slugs are absent from the result.
        """
        found: dict[str, tuple[ComparisonHead, dict[str, StoredEntry]]] = {}
        for start in range(0, len(slugs), _READ_BATCH):
            chunk = slugs[start : start + _READ_BATCH]
            rows = await self.db.fetchall(
                f"""SELECT c.slug, c.term_a, c.term_b, c.data_hash, c.points, e.key, e.version,
                       {"e.value" if values else "NULL"} AS value, e.fresh_until, e.stale_until
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
                        freshness=freshness_at(r["fresh_until"], r["stale_until"], now_ms),
                    )
        return found

    async def purge_expired(self, now_ms: int) -> int:
        """Delete entries past ``stale_until``; returns how many."""
        return await self.db.execute("DELETE FROM cache_entries WHERE stale_until <= ?", (now_ms,))

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


# --------------------------------------------------------------------------- schedule state


class ScheduleStore:
    """The ``schedule_state`` table (implements the scheduler's state protocol)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def load(self, job: str) -> tuple[int | None, int | None]:
        """``(last_fire_ms, next_fire_ms)`` of a job, Nones when never persisted."""
        row = await self.db.fetchone(
            "SELECT last_fire_at, next_fire_at FROM schedule_state WHERE job = ?", (job,)
        )
        return (row["last_fire_at"], row["next_fire_at"]) if row else (None, None)

    async def save(self, job: str, last_fire_ms: int | None, next_fire_ms: int | None) -> None:
        """Persist a job's last and next fire; ``last_fire_at`` never moves backwards."""
        await self.db.execute(
            """INSERT INTO schedule_state(job, last_fire_at, next_fire_at) VALUES (?, ?, ?)
               ON CONFLICT(job) DO UPDATE SET
                   last_fire_at = max(coalesce(schedule_state.last_fire_at, 0),
                                      coalesce(excluded.last_fire_at, 0)),
                   next_fire_at = excluded.next_fire_at""",
            (job, last_fire_ms, next_fire_ms),
        )


# --------------------------------------------------------------------------- warmups


@dataclass(frozen=True, kw_only=True)
class WarmupRow:
    """The on-demand status row a client polls."""

    slug: str
    data_hash: str
    status: WarmupState
    updated_at_ms: int
    error: str | None
    run_id: int | None


class WarmupStore:
    """The ``warmups`` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def set(
        self,
        slug: str,
        data_hash: str,
        status: WarmupState,
        now_ms: int,
        *,
        error: str | None = None,
        run_id: int | None = None,
    ) -> None:
        """Record the warmup state of ``slug`` at ``data_hash``."""
        await self.db.execute(
            """INSERT INTO warmups(slug, data_hash, status, updated_at, error, run_id)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT(slug, data_hash) DO UPDATE SET status = excluded.status,
                   updated_at = excluded.updated_at, error = excluded.error,
                   run_id = coalesce(excluded.run_id, warmups.run_id)""",
            (slug, data_hash, status.value, now_ms, error, run_id),
        )

    async def get(self, slug: str, data_hash: str) -> WarmupRow | None:
        """The row for ``slug`` at ``data_hash``, or None."""
        row = await self.db.fetchone(
            """SELECT slug, data_hash, status, updated_at, error, run_id FROM warmups
               WHERE slug = ? AND data_hash = ?""",
            (slug, data_hash),
        )
        if row is None:
            return None
        return WarmupRow(
            slug=row["slug"],
            data_hash=row["data_hash"],
            status=WarmupState(row["status"]),
            updated_at_ms=row["updated_at"],
            error=row["error"],
            run_id=row["run_id"],
        )

    async def purge_before(self, before_ms: int) -> int:
        """Delete status rows not updated since ``before_ms``."""
        return await self.db.execute("DELETE FROM warmups WHERE updated_at < ?", (before_ms,))
