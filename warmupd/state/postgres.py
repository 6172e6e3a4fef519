"""The state in PostgreSQL: the only asyncpg user (SPEC §14).

One pool per daemon. Statements are prepared and cached per connection by asyncpg; with
``statement_cache=False`` nothing is kept between statements (``statement_cache_size=0``), as a
transaction-mode pooler such as PgBouncer before 1.21 requires. Nothing here relies on session
state — no session advisory locks, no ``SET``, no ``LISTEN`` — so the same code works through such a
pooler: the statement timeout is enforced by the client (asyncpg cancels the statement on the
server when it runs out) rather than by a session setting a pooler would not keep.

The schema history (:mod:`warmupd.state.postgres_schema`) is the SQLite backend's, translated. The
version lives in the one-row table ``warmupd_schema``; migrations
run in one transaction that first takes ``pg_advisory_xact_lock(MIGRATION_LOCK_KEY)``, so N daemons
starting together migrate once and the others find the work done. A transaction-level lock is
released by the commit itself, so it works through a transaction-mode pooler too.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar, cast

import asyncpg

from warmupd.errors import DatabaseRejected, DatabaseUnavailable, SchemaTooNew
from warmupd.state import Dialect, Row
from warmupd.state.postgres_schema import MIGRATION_LOCK_KEY, MIGRATIONS
from warmupd.state.postgres_schema import SCHEMA_VERSION as SCHEMA_VERSION  # re-exported

POSTGRES = Dialect(
    name="postgresql",
    greatest="greatest",
    nulls_last=" NULLS LAST",
    is_distinct="IS DISTINCT FROM",
    # clock_timestamp(), not now(): now() is the start of the transaction, not of this statement.
    clock_ms="(extract(epoch FROM clock_timestamp()) * 1000)::bigint",
)

DRIVER_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, asyncpg.InterfaceError)
"""What a statement on PostgreSQL may raise when the server or the connection fails."""

T = TypeVar("T")
HealthListener = Callable[[bool, str | None], object]
"""``listener(up, reason)``: called when a statement fails for want of the server, and when one
answers again after that."""

_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable, name resolution
    TimeoutError,  # connect_timeout or statement_timeout ran out
    asyncpg.PostgresConnectionError,  # class 08, e.g. the connection dropped mid-statement
    asyncpg.OperatorInterventionError,  # class 57: shutting down, starting up, cancelled
    asyncpg.InsufficientResourcesError,  # class 53: too many connections, disk full
    # A pooled connection the server ended while it sat idle (a restart, pg_terminate_backend)
    # can fail its next statement with "cannot switch to state …; another operation is in
    # progress" instead of ConnectionDoesNotExistError; it is handed back and replaced.
    asyncpg.InternalClientError,
)
_REFUSALS: tuple[type[BaseException], ...] = (
    asyncpg.InvalidAuthorizationSpecificationError,  # class 28: wrong password, no such role
    asyncpg.InvalidCatalogNameError,  # 3D000: no such database
    asyncpg.ClientConfigurationError,  # a URL parameter asyncpg cannot use
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` means "the server cannot answer now" (waiting may fix it).

    An ``InterfaceError`` counts only when it is about a closed connection or pool: the others
    (wrong argument counts, concurrent use of a connection) are bugs and must show as bugs.
    """
    if isinstance(exc, _TRANSIENT):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and (
        not isinstance(exc, asyncpg.ClientConfigurationError)
        and ("closed" in str(exc) or "closing" in str(exc))
    )


def _why(exc: BaseException) -> str:
    # asyncpg's messages name the user and the database, never the password.
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _ExpectedFailureOneLine(logging.Filter):
    """asyncpg's pool logs each retry to restore its connection floor with the full traceback of
    an expected failure (the server is away): keep the line and the error, drop the stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and (is_transient(exc) or isinstance(exc, _REFUSALS)):
            record.msg, record.args = f"{record.getMessage()}: {_why(exc)}", None
            record.exc_info, record.exc_text = None, None
        return True


logging.getLogger("asyncpg.pool").addFilter(_ExpectedFailureOneLine())

_HINTS = {
    asyncpg.InvalidPasswordError: " (check the database password: $CREDENTIALS_DIRECTORY/"
    "database_password, secrets.database_password_file or secrets.database_password_env)",
    asyncpg.InvalidCatalogNameError: " (create it, or fix the database name in database.url)",
}


@functools.lru_cache(maxsize=2048)
def to_numbered(sql: str) -> str:
    """``?`` placeholders → asyncpg's ``$1, $2, …``, leaving quoted literals and names alone."""
    out: list[str] = []
    quote: str | None = None
    n = 0
    for ch in sql:
        if quote is not None:
            if ch == quote:
                quote = None  # a doubled quote closes and reopens: same result
        elif ch in "'\"":
            quote = ch
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(ch)
    return "".join(out)


def rowcount(status: str) -> int:
    """Rows changed, from a command tag such as ``INSERT 0 1``, ``UPDATE 3`` or ``DELETE 0``."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


async def _keep_session(conn: Any) -> None:
    """Nothing to reset: asyncpg's default reset costs a round trip per release for session state
    warmupd never leaves (see above); asyncpg still rolls back an open transaction first."""


def _usable(conn: Any) -> bool:
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:  # released back to the pool when the server closed it
        return False


class PostgresTransaction:
    """Statements on the one connection of :meth:`PostgresDatabase.transaction`."""

    def __init__(self, conn: Any, db: PostgresDatabase) -> None:
        self._conn = conn
        self._db = db

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return its rowcount."""
        return rowcount(str(await self._db._call(self._conn.execute(to_numbered(sql), *params))))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """Run a query and return its first row."""
        row = await self._db._call(self._conn.fetchrow(to_numbered(sql), *params))
        return cast("Row | None", row)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a query and return every row."""
        return list(await self._db._call(self._conn.fetch(to_numbered(sql), *params)))


class PostgresDatabase:
    """A pool on one PostgreSQL database. Use as ``async with PostgresDatabase(url) as db:``.

    ``url`` never carries the password (the config splits it off); it is safe to show.
    """

    dialect = POSTGRES

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        pool_min: int = 1,
        pool_max: int = 10,
        connect_timeout_ms: int = 5_000,
        statement_timeout_ms: int = 30_000,
        statement_cache: bool = True,
    ) -> None:
        self.url = url
        self._password = password
        self.pool_min = pool_min
        self.pool_max = pool_max
        self.connect_timeout_ms = connect_timeout_ms
        self.statement_timeout_ms = statement_timeout_ms
        self.statement_cache = statement_cache
        self._pool: Any = None
        self._kept: list[Any] = []  # checked out between statements (see _connection)
        self._waiting = 0  # callers waiting for the pool: nothing is kept back while there are
        self.on_health: HealthListener | None = None
        """Told when statements start failing for want of the server, and when one answers again."""
        self._failing = False

    def _unavailable(self, exc: BaseException) -> DatabaseUnavailable:
        error = DatabaseUnavailable(f"cannot connect to {self.url}: {_why(exc)}")
        self._failing = True
        if self.on_health is not None:
            self.on_health(False, error.message)
        return error

    def _rejected(self, exc: BaseException) -> DatabaseRejected:
        hint = next((h for cls, h in _HINTS.items() if isinstance(exc, cls)), "")
        return DatabaseRejected(f"state database {self.url} refused warmupd: {_why(exc)}{hint}")

    async def _call(self, call: Awaitable[T]) -> T:
        """Await a driver call; a failure for want of the server becomes :class:`DatabaseUnavailable`.

        Connection errors after start-up (a wrong password included: the server may be one that
        a failover brought up half-configured) are all "unavailable": a running daemon waits.
        """
        try:
            result = await call
        except Exception as exc:
            if is_transient(exc) or isinstance(exc, _REFUSALS):
                raise self._unavailable(exc) from None
            raise
        if self._failing:
            self._failing = False
            if self.on_health is not None:
                self.on_health(True, None)
        return result

    def __repr__(self) -> str:
        return f"PostgresDatabase({self.url!r})"

    async def __aenter__(self) -> PostgresDatabase:
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
        """Create the pool (its first ``pool_min`` connections) and apply migrations.

        :raises DatabaseUnavailable: when the server cannot be reached now (refused, timed out,
            starting up, out of connections): transient, worth retrying.
        :raises DatabaseRejected: when the server refuses warmupd for good (credentials, no such
            database, a parameter it rejects, no right to create the schema): configuration.
        :raises SchemaTooNew: when the database was migrated by a newer warmupd.

        Every message names the (password-free) URL and the driver's reason; asyncpg's messages
        name the user and the database, never the password.
        """
        try:
            pool = self._new_pool()
        except (ValueError, TypeError) as exc:  # a URL parameter asyncpg cannot parse
            raise self._rejected(exc) from None
        try:
            await pool  # connects the first pool_min connections
        except Exception as exc:
            pool.terminate()  # connections that did open must not leak
            if is_transient(exc):
                raise self._unavailable(exc) from None
            if isinstance(exc, (*_REFUSALS, asyncpg.PostgresError, ValueError)):
                raise self._rejected(exc) from None
            raise
        self._pool = pool
        if migrate:
            try:
                await self.migrate()
            except BaseException:
                await self.close()
                raise

    def _new_pool(self) -> Any:
        return asyncpg.create_pool(
            dsn=self.url,
            password=self._password,
            min_size=self.pool_min,
            max_size=self.pool_max,
            timeout=self.connect_timeout_ms / 1000,
            command_timeout=self.statement_timeout_ms / 1000,
            # 0 turns asyncpg's per-connection cache of prepared statements off.
            statement_cache_size=100 if self.statement_cache else 0,
            server_settings={"application_name": "warmupd"},
            reset=_keep_session,
        )

    async def close(self) -> None:
        """Close the pool (idempotent)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            while self._kept:
                await pool.release(self._kept.pop())
            await pool.close()

    @property
    def is_open(self) -> bool:
        """Whether the pool is open."""
        return self._pool is not None

    @property
    def pool(self) -> Any:
        """The open pool.

        :raises DatabaseUnavailable: when the database is not open.
        """
        if self._pool is None:
            raise DatabaseUnavailable(f"the state database {self.url} is not open")
        return self._pool

    # ----------------------------------------------------------------- statements

    # Every statement goes through _call: a server that went away is a DatabaseUnavailable (503
    # at the HTTP edge, "degraded" in status), never a driver error; the pool reconnects by itself
    # on the next acquire once the server is back.

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection for the caller alone, kept for the next caller after a success.

        asyncpg's release is a shielded task plus an idle timer: more loop turns than the round trip
        (P4 PostgreSQL measured 0.75× a bare connection). After a success the connection is idle,
        outside any transaction; an exception or cancellation hands it back to the pool, which
        waits out a cancellation and replaces a broken one. Every path to the server comes here, and
        none is kept while a caller waits for the pool.

        :raises DatabaseUnavailable: when the pool is closed or cannot connect.
        """
        pool = self.pool
        while self._kept and not _usable(conn := self._kept[-1]):
            self._kept.pop()  # the server ended it: the pool took it back and replaces it
        if self._kept:
            conn = self._kept.pop()
        else:
            self._waiting += 1
            try:
                conn = await self._call(pool.acquire())
            finally:
                self._waiting -= 1
        try:
            yield conn
        except BaseException:
            await pool.release(conn)
            raise
        if self._pool is pool and not self._waiting:
            self._kept.append(conn)
        else:  # someone waits for a connection of the pool (or it closed meanwhile)
            await pool.release(conn)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement on a pooled connection; return its rowcount."""
        async with self._connection() as conn:
            return rowcount(str(await self._call(conn.execute(to_numbered(sql), *params))))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """Run a query (or a ``RETURNING`` statement) and return its first row."""
        async with self._connection() as conn:
            return cast("Row | None", await self._call(conn.fetchrow(to_numbered(sql), *params)))

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a query and return every row."""
        async with self._connection() as conn:
            return list(await self._call(conn.fetch(to_numbered(sql), *params)))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        """``BEGIN`` … ``COMMIT`` on one pooled connection (``ROLLBACK`` on any exception)."""
        try:
            async with self._connection() as conn, conn.transaction():
                yield PostgresTransaction(conn, self)
        except Exception as exc:
            if is_transient(exc) or isinstance(exc, _REFUSALS):
                raise self._unavailable(exc) from None
            raise

    # ----------------------------------------------------------------- schema

    async def migrate(self) -> tuple[int, int]:
        """Apply pending migrations in one transaction under the migrations' advisory lock.

        :returns: ``(version_before, version_after)``.
        :raises SchemaTooNew: when the database was migrated by a newer warmupd.
        :raises DatabaseUnavailable: when the server cannot answer now.
        :raises DatabaseRejected: when the server refuses a migration statement (e.g. the role may
            not create tables): waiting will not fix it.
        """
        try:
            return await self._migrate()
        except asyncpg.PostgresError as exc:
            if is_transient(exc) or isinstance(exc, _REFUSALS):
                raise self._unavailable(exc) from None
            raise self._rejected(exc) from None
        except Exception as exc:
            if is_transient(exc):
                raise self._unavailable(exc) from None
            raise

    async def _migrate(self) -> tuple[int, int]:
        async with self._connection() as conn, conn.transaction():
            # Every daemon starting now queues here; the first migrates, the rest find it done.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS warmupd_schema(
                       id INTEGER PRIMARY KEY CHECK (id = 1),
                       version INTEGER NOT NULL)"""
            )
            found = await conn.fetchval("SELECT version FROM warmupd_schema WHERE id = 1")
            before = int(found) if found is not None else 0
            if before > SCHEMA_VERSION:
                raise SchemaTooNew(self.url, before, SCHEMA_VERSION)
            for statements in MIGRATIONS[before:]:
                for sql in statements:
                    await conn.execute(sql)
            if before != SCHEMA_VERSION:
                await conn.execute(
                    """INSERT INTO warmupd_schema(id, version) VALUES (1, $1)
                       ON CONFLICT(id) DO UPDATE SET version = excluded.version""",
                    SCHEMA_VERSION,
                )
        return before, SCHEMA_VERSION

    async def schema_version(self) -> int:
        """The version in ``warmupd_schema`` (0 before the first migration)."""
        async with self._connection() as conn:
            found = await self._call(
                conn.fetchval("SELECT to_regclass('warmupd_schema') IS NOT NULL")
            )
            if not found:
                return 0
            version = await self._call(
                conn.fetchval("SELECT version FROM warmupd_schema WHERE id = 1")
            )
        return int(version) if version is not None else 0

    async def advance_identity(self, table: str, column: str) -> None:
        """Move the identity sequence of ``table.column`` past the largest value stored.

        For rows inserted with explicit ids (``copy-state`` keeps run ids): the next generated id
        must not collide with them. Never moves the sequence backwards (ids of purged rows are not
        handed out again).
        """
        await self.execute(
            f"""SELECT setval(seq, greatest(top, pg_sequence_last_value(seq)))
                FROM (SELECT pg_get_serial_sequence('{table}', '{column}')::regclass AS seq,
                             (SELECT max({column}) FROM {table}) AS top) AS s
                WHERE top IS NOT NULL"""
        )
