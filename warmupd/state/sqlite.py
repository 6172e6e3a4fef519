"""The state in a SQLite file, the embedded default: the only aiosqlite user (SPEC §3).

One file ``<state_dir>/warmupd.db`` in WAL mode, shared by every warmupd process on the host. The
connection runs in autocommit mode; multi-statement writes go through :meth:`SqliteDatabase.transaction`,
which starts with ``BEGIN IMMEDIATE`` so that a transaction never upgrades from reader to writer halfway
(the classic SQLITE_BUSY deadlock of deferred transactions). One asyncio lock serialises statements on
the connection, so a coroutine's statement can never land inside another coroutine's transaction.

The schema is versioned with ``PRAGMA user_version``; migrations are forward-only and applied at open in
one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite

from warmupd.errors import SchemaTooNew, ServiceUnavailable
from warmupd.state import Dialect

Row = sqlite3.Row
Params = Sequence[Any] | dict[str, Any]

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # v1: the tables of SPEC §3.
    (
        """CREATE TABLE comparisons(
            slug TEXT PRIMARY KEY,
            term_a TEXT NOT NULL,
            term_b TEXT NOT NULL,
            timeframe TEXT NOT NULL,
            geo TEXT NOT NULL DEFAULT '',
            category TEXT NOT NULL DEFAULT '',
            series TEXT NOT NULL,
            points INTEGER NOT NULL,
            data_hash TEXT NOT NULL,
            view_count INTEGER NOT NULL DEFAULT 0,
            last_visited INTEGER,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL)""",
        # Serves both popularity orderings of SPEC §6: SQLite sorts NULLs first ascending and
        # therefore last descending, which is exactly "last_visited DESC NULLS LAST".
        """CREATE INDEX comparisons_popularity
            ON comparisons(view_count DESC, last_visited DESC, created_at DESC)""",
        "CREATE INDEX comparisons_recent ON comparisons(created_at)",
        "CREATE INDEX comparisons_visited ON comparisons(last_visited)",
        """CREATE TABLE cache_entries(
            key TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            slug TEXT NOT NULL,
            data_hash TEXT NOT NULL,
            version TEXT NOT NULL,
            value TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            fresh_until INTEGER NOT NULL,
            stale_until INTEGER NOT NULL,
            fence_key TEXT NOT NULL,
            fence INTEGER NOT NULL)""",
        "CREATE INDEX cache_entries_slug ON cache_entries(slug)",
        "CREATE INDEX cache_entries_stale_until ON cache_entries(stale_until)",
        """CREATE TABLE job_runs(
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job TEXT NOT NULL,
            status TEXT NOT NULL,
            reason TEXT,
            trigger TEXT NOT NULL,
            node TEXT NOT NULL,
            started_at INTEGER NOT NULL,
            finished_at INTEGER,
            duration_ms INTEGER,
            processed INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            errors TEXT NOT NULL DEFAULT '[]',
            metadata TEXT NOT NULL DEFAULT '{}')""",
        "CREATE INDEX job_runs_job ON job_runs(job, id DESC)",
        "CREATE INDEX job_runs_status ON job_runs(status, id DESC)",
        "CREATE INDEX job_runs_started ON job_runs(started_at)",
        """CREATE TABLE locks(
            key TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            fence INTEGER NOT NULL,
            acquired_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            holder TEXT NOT NULL DEFAULT '')""",
        """CREATE TABLE fire_claims(
            job TEXT NOT NULL,
            due_at INTEGER NOT NULL,
            node TEXT NOT NULL,
            claimed_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            PRIMARY KEY(job, due_at))""",
        """CREATE TABLE schedule_state(
            job TEXT PRIMARY KEY,
            last_fire_at INTEGER,
            next_fire_at INTEGER)""",
        """CREATE TABLE warmups(
            slug TEXT NOT NULL,
            data_hash TEXT NOT NULL,
            status TEXT NOT NULL,
            updated_at INTEGER NOT NULL,
            error TEXT,
            run_id INTEGER,
            PRIMARY KEY(slug, data_hash))""",
        """CREATE TABLE nodes(
            node TEXT PRIMARY KEY,
            started_at INTEGER NOT NULL,
            heartbeat_at INTEGER NOT NULL)""",
    ),
    # v2: the dashboard (SPEC §15): paused jobs, shared by every process on this state; term
    # indexes so the comparison search by term prefix is a range read, not a scan of the table.
    (
        """CREATE TABLE job_pauses(
            job TEXT PRIMARY KEY,
            paused_at INTEGER NOT NULL,
            paused_by TEXT NOT NULL)""",
        "CREATE INDEX comparisons_term_a ON comparisons(term_a)",
        "CREATE INDEX comparisons_term_b ON comparisons(term_b)",
        # The status counts entries by freshness from the two expiry indexes, never the table.
        "CREATE INDEX cache_entries_fresh_until ON cache_entries(fresh_until)",
    ),
    # v3: a change counter for what the read paths serve. Every process's writes bump it (triggers,
    # so no writer can forget), and a process that keeps rendered packs in memory asks this one row
    # whether anything changed instead of reading the packs again (bench P3/P7). A plain row read
    # works through any connection pooler; nothing rests on notifications.
    (
        """CREATE TABLE state_version(
            id INTEGER PRIMARY KEY CHECK (id = 1),
            version INTEGER NOT NULL)""",
        "INSERT INTO state_version(id, version) VALUES (1, 0)",
        *(
            f"""CREATE TRIGGER {name} AFTER {event} BEGIN
                UPDATE state_version SET version = version + 1 WHERE id = 1; END"""
            for name, event in (
                ("cache_entries_inserted", "INSERT ON cache_entries"),
                ("cache_entries_updated", "UPDATE ON cache_entries"),
                ("cache_entries_deleted", "DELETE ON cache_entries"),
                ("comparisons_inserted", "INSERT ON comparisons"),
                # Views and visits (the frequent writes) change nothing a read path serves.
                (
                    "comparisons_updated",
                    "UPDATE OF slug, term_a, term_b, series, points, data_hash ON comparisons",
                ),
                ("comparisons_deleted", "DELETE ON comparisons"),
            )
        ),
    ),
    # v4 (SPEC §14): what the status shows of each live node — its warmupd version and its clock
    # skew against the database's clock (NULL until measured).
    (
        "ALTER TABLE nodes ADD COLUMN version TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE nodes ADD COLUMN skew_ms INTEGER",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


SQLITE = Dialect(
    name="sqlite",
    greatest="max",
    nulls_last="",
    is_distinct="IS NOT",
    # No clock of its own: a file is shared only by processes of one host, which read one clock.
    clock_ms=None,
)
"""SQLite's scalar ``max(a, b)``; its DESC already sorts NULLs last; its clock is the host's."""


class SqliteDatabase:
    """An open state database. Use as ``async with SqliteDatabase(path) as db:``."""

    dialect = SQLITE

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5_000) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> SqliteDatabase:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self, *, migrate: bool = True) -> None:
        """Open the file (creating its directory), set the pragmas, apply migrations."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        if migrate:
            try:
                await self.migrate()
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    @property
    def conn(self) -> aiosqlite.Connection:
        """The open connection.

        :raises ServiceUnavailable: when the database is not open.
        """
        if self._conn is None:
            raise ServiceUnavailable("the state database is not open")
        return self._conn

    @property
    def is_open(self) -> bool:
        """Whether the connection is open."""
        return self._conn is not None

    async def migrate(self) -> tuple[int, int]:
        """Apply pending migrations in one ``BEGIN IMMEDIATE`` transaction.

        :returns: ``(version_before, version_after)``.
        :raises SchemaTooNew: when the file's schema is newer than this code knows.
        """
        async with self.transaction() as tx:
            row = await tx.fetchone("PRAGMA user_version")
            before = int(row[0]) if row else 0
            if before > SCHEMA_VERSION:
                raise SchemaTooNew(str(self.path), before, SCHEMA_VERSION)
            for statements in MIGRATIONS[before:]:
                for sql in statements:
                    await tx.execute(sql)
            if before != SCHEMA_VERSION:
                await tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return before, SCHEMA_VERSION

    async def schema_version(self) -> int:
        """The file's ``PRAGMA user_version``."""
        row = await self.fetchone("PRAGMA user_version")
        return int(row[0]) if row else 0

    def size_bytes(self) -> int:
        """Size of the database file plus its WAL."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += Path(f"{self.path}{suffix}").stat().st_size
        return total

    # ----------------------------------------------------------------- statements

    # The lock only keeps single statements out of another coroutine's open transaction. When it is
    # free, no transaction is open and a statement may go straight to aiosqlite's queue: aiosqlite
    # enqueues the call before its first suspension, so nothing can slip a BEGIN in between the
    # check and the enqueue. This keeps the read paths off the lock (bench P3/P7: asyncio.Lock's
    # bookkeeping with hundreds of waiters showed in the profile).

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement in autocommit mode; return its rowcount."""
        if self._lock.locked():
            async with self._lock:
                return await _execute(self.conn, sql, params)
        return await _execute(self.conn, sql, params)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        """Run a query (or a ``RETURNING`` statement) and return its first row.

        Meant for statements that yield at most a row or a few (every caller's does); it runs the
        statement to completion, which a ``RETURNING`` write needs anyway.
        """
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Run a query and return every row."""
        if self._lock.locked():
            async with self._lock:
                return await _fetch(self.conn, sql, params)
        return await _fetch(self.conn, sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any exception or cancellation).

        BEGIN and ROLLBACK run to completion while the lock is held, even when the caller is
        cancelled meanwhile: a BEGIN that still lands after its caller gave up (it may wait up to
        ``busy_timeout`` for another process's write lock) would otherwise leave the shared
        connection inside a transaction nobody commits, and every later autocommit write of this
        process would silently join it.
        """
        async with self._lock:
            conn = self.conn
            begin = asyncio.ensure_future(conn.execute("BEGIN IMMEDIATE"))
            try:
                await asyncio.shield(begin)
            except asyncio.CancelledError:
                await _finish(begin)
                if not begin.cancelled() and begin.exception() is None:
                    await _finish(asyncio.ensure_future(conn.execute("ROLLBACK")))
                raise
            try:
                yield Transaction(conn)
            except BaseException:
                await _finish(asyncio.ensure_future(conn.execute("ROLLBACK")))
                raise
            else:
                await conn.execute("COMMIT")


class Transaction:
    """Statements inside :meth:`SqliteDatabase.transaction` (the database lock is already held)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return its rowcount."""
        return await _execute(self.conn, sql, params)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        """Run a query and return its first row (see :meth:`SqliteDatabase.fetchone`)."""
        rows = await _fetch(self.conn, sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Run a query and return every row."""
        return await _fetch(self.conn, sql, params)


async def _finish(future: asyncio.Future[Any]) -> None:
    """Wait until ``future`` is done, through any number of cancellations of the waiter.

    Used for the statements that must complete for the connection to stay consistent (BEGIN and
    ROLLBACK of :meth:`SqliteDatabase.transaction`); a pending cancellation is re-delivered after.
    """
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled = True
        except Exception:  # noqa: BLE001, S110 - the statement's own error is read below
            pass
    if cancelled:
        raise asyncio.CancelledError


async def _execute(conn: aiosqlite.Connection, sql: str, params: Params) -> int:
    cur = await conn.execute(sql, params)
    rowcount = cur.rowcount
    await cur.close()
    return rowcount


async def _fetch(conn: aiosqlite.Connection, sql: str, params: Params) -> list[Row]:
    # One hop to aiosqlite's thread instead of three (execute, fetch, close): the hand-off, not
    # SQLite, dominates a small statement's latency (bench P4 measured ~0.2 ms per hop). The
    # cursor is dropped inside that thread, so it is never finalised from the event loop's thread.
    return list(await conn.execute_fetchall(sql, params))


def is_busy_error(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "database is locked/busy" after ``busy_timeout`` ran out."""
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


DatabaseError = sqlite3.Error
"""Base class of the errors a statement can raise (re-exported so callers need not import sqlite3)."""
