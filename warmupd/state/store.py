"""Repositories over the state database: comparisons, schedule state and warmup status rows.

Cache entries live in :mod:`warmupd.state.cache`, job runs in :mod:`warmupd.state.runs`. Every timestamp is integer epoch milliseconds; every method takes
``now_ms`` where time matters, so tests decide what "now" is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from warmupd.models import Comparison, WarmupState
from warmupd.state import Database, Row

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
            f"""UPDATE comparisons SET view_count = view_count + ?,
                   last_visited = {self.db.dialect.greatest}(coalesce(last_visited, 0), ?)
               WHERE slug = ? RETURNING view_count, last_visited""",
            (count, at_ms, slug),
        )
        return (row["view_count"], row["last_visited"]) if row else None

    async def count(self) -> int:
        """Number of comparisons."""
        row = await self.db.fetchone("SELECT count(*) FROM comparisons")
        return int(row[0]) if row else 0

    async def search(self, prefix: str, limit: int) -> list[Comparison]:
        """Comparisons whose slug or either term starts with ``prefix``, most viewed first.

        Each of the three prefix matches is a range read of an index (slug, term_a, term_b), at most
        ``4 × limit`` rows each; the union is sorted by popularity. With an empty prefix: the most
        viewed comparisons, from the popularity index.
        """
        order = self._order()
        if not prefix:
            rows = await self.db.fetchall(
                f"SELECT {_COMPARISON_COLUMNS} FROM comparisons ORDER BY {order} LIMIT ?", (limit,)
            )
            return [_comparison(r) for r in rows]
        high = prefix + "\U0010ffff"
        ranges = " UNION ".join(
            f"SELECT * FROM (SELECT slug FROM comparisons WHERE {column} >= ? AND {column} < ? "
            f"ORDER BY {column} LIMIT ?) AS by_{column}"
            for column in ("slug", "term_a", "term_b")
        )
        rows = await self.db.fetchall(
            f"""SELECT {_COMPARISON_COLUMNS} FROM comparisons WHERE slug IN ({ranges})
                ORDER BY {order} LIMIT ?""",
            (*(prefix, high, 4 * limit) * 3, limit),
        )
        return [_comparison(r) for r in rows]

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

    def _order(self) -> str:
        """Popularity order: most viewed, then latest visited (never-visited last), then newest."""
        return f"view_count DESC, last_visited DESC{self.db.dialect.nulls_last}, created_at DESC"

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
        ``last_visited DESC`` is "NULLS LAST"; PostgreSQL is told (:meth:`_order`).
        """
        order = self._order()
        rows = list(
            await self.db.fetchall(
                f"SELECT {_COMPARISON_COLUMNS} FROM comparisons WHERE {popular} ORDER BY {order} LIMIT ?",
                (views, limit),
            )
        )
        if len(rows) < limit:
            rows += await self.db.fetchall(
                f"""SELECT {_COMPARISON_COLUMNS} FROM comparisons WHERE {rest}
                    ORDER BY +{order} LIMIT ?""",
                (views, *rest_args, limit - len(rows)),
            )
        return [_comparison(r) for r in rows]


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
        """Persist a job's last and next fire; ``last_fire_at`` never moves backwards.

        NULL ("never fired") stays NULL until a real fire is saved: turning it into 0 made the next
        start count every slot since 1970 as missed (issue 17).
        """
        # SQLite's multi-argument max() is NULL when either side is; coalesce then keeps the side
        # that is set, so a NULL never replaces a fire and never becomes the epoch. (PostgreSQL's
        # greatest() already skips NULLs; the coalesce costs it nothing.)
        greatest = self.db.dialect.greatest
        await self.db.execute(
            f"""INSERT INTO schedule_state(job, last_fire_at, next_fire_at) VALUES (?, ?, ?)
               ON CONFLICT(job) DO UPDATE SET
                   last_fire_at = coalesce({greatest}(schedule_state.last_fire_at, excluded.last_fire_at),
                                           schedule_state.last_fire_at, excluded.last_fire_at),
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
        keep_running: bool = False,
    ) -> None:
        """Record the warmup state of ``slug`` at ``data_hash``.

        ``keep_running``: leave a ``running`` row as it is (a process that only queued the warmup
        must not hide the one another process is running).
        """
        guard = " WHERE warmups.status <> 'running'" if keep_running else ""
        await self.db.execute(
            """INSERT INTO warmups(slug, data_hash, status, updated_at, error, run_id)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT(slug, data_hash) DO UPDATE SET status = excluded.status,
                   updated_at = excluded.updated_at, error = excluded.error,
                   run_id = coalesce(excluded.run_id, warmups.run_id)"""
            + guard,
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
