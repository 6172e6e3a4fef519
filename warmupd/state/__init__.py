"""The storage layer's one interface: a small :class:`Database` protocol every backend implements.

The repositories (comparisons, cache entries, runs, schedule state, …) speak through it and never
know which backend they talk to. Statements use ``?`` placeholders; a backend whose driver wants
another paramstyle (asyncpg's ``$1``) translates them. The little SQL that differs between the
engines is named by the backend's :class:`Dialect` (``sqlite.py`` and ``postgres.py`` each define
theirs), so a repository writes ``{db.dialect.greatest}(a, b)``, never an engine's name.

Both backends share one schema history — the same version numbers mean the same tables — so a
state can be copied from one to the other and ``warmupd migrate`` reports one number.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol


class Row(Protocol):
    """One result row: by column name or by position (``sqlite3.Row`` and ``asyncpg.Record``)."""

    def __getitem__(self, key: int | str, /) -> Any:
        """The value of a column."""


@dataclass(frozen=True, kw_only=True)
class Dialect:
    """The SQL fragments that differ between the engines (see each backend's instance)."""

    name: str
    """``"sqlite"`` or ``"postgresql"``."""
    greatest: str
    """The two-argument scalar maximum: SQLite's ``max``, PostgreSQL's ``greatest``."""
    nulls_last: str
    """What follows ``DESC`` for NULLs to sort last (SQLite already does; PostgreSQL sorts them first)."""
    is_distinct: str
    """The NULL-safe "differs": SQLite's ``IS NOT`` (older SQLite lacks ``IS DISTINCT FROM``),
    PostgreSQL's ``IS DISTINCT FROM`` (its ``IS NOT`` takes only NULL, TRUE or FALSE)."""
    clock_ms: str | None
    """The database server's wall clock now, in integer epoch milliseconds (an SQL expression):
    the clock every node's skew is measured against (SPEC §14). None when the database has no
    clock of its own: a SQLite file's is the host's, the one its processes already read."""

    def now(self, now_ms: int) -> tuple[str, tuple[int, ...]]:
        """ "Now" in a statement and its parameters: the server's clock (:attr:`clock_ms`) where the
        engine has one, else the caller's ``now_ms`` as a ``?`` parameter."""
        return (self.clock_ms, ()) if self.clock_ms is not None else ("?", (now_ms,))


class Statements(Protocol):
    """Statements on a database, or inside one of its transactions."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """Run a query (or a ``RETURNING`` statement) and return its first row."""

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Row]:
        """Run a query and return every row."""


class Database(Statements, Protocol):
    """An open state database: statements in autocommit mode, transactions, the schema version.

    Single statements are atomic on their own; :meth:`transaction` groups several (on SQLite it
    takes the write lock up front, on PostgreSQL it holds one pooled connection).
    """

    @property
    def dialect(self) -> Dialect:
        """The SQL fragments of this engine."""

    @property
    def is_open(self) -> bool:
        """Whether statements can run."""

    def transaction(self) -> AbstractAsyncContextManager[Statements]:
        """``BEGIN`` … ``COMMIT``, ``ROLLBACK`` on any exception or cancellation."""

    async def migrate(self) -> tuple[int, int]:
        """Apply pending migrations; ``(version_before, version_after)``.

        :raises SchemaTooNew: when the database was migrated by a newer warmupd.
        """

    async def schema_version(self) -> int:
        """The database's schema version (0 for an empty database)."""

    async def close(self) -> None:
        """Release the connection(s) (idempotent)."""
