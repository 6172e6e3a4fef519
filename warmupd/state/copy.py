"""``warmupd copy-state``: copy a state from one backend to another (SPEC §14).

A single host growing into a fleet copies its SQLite file into PostgreSQL; a fleet shrinking back
copies PostgreSQL into a file. What is copied is named column by column in :data:`TABLES`, for the
schema version :data:`COPY_SCHEMA_VERSION` — both in :mod:`warmupd.state.copy_tables`, the one place
a migration that adds or changes a table must update. Both databases must be at exactly that version
(the target is migrated first), so a copy never guesses at a table it does not know.

Every table is read in key order, :data:`BATCH_ROWS` rows at a time (keyset pagination: memory stays
flat however large the state), and each batch is upserted on its natural key in one transaction on
the target. A row whose key the target already has takes the source's values; rows only the target
has are kept (nothing is deleted). So a second copy changes nothing and reports 0 new, 0 updated.
Run ids are kept — they are the run log's only key, and warmup rows and logs name them — so a key
conflict there must be the same run (same job, node and start); a different run under the same id
means two unrelated run logs, and the copy refuses instead of overwriting one with the other.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from warmupd.config_database import DatabaseConfig, parse_database_url, redact_url
from warmupd.errors import ConfigError, CopyRefused, SchemaTooNew, UsageError
from warmupd.state.backends import StateBackend
from warmupd.state.copy_tables import COPY_SCHEMA_VERSION, TABLES, Table
from warmupd.state.postgres import SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION
from warmupd.state.postgres import PostgresDatabase
from warmupd.state.sqlite import SCHEMA_VERSION, DatabaseError, SqliteDatabase

BATCH_ROWS = 1_000
"""Rows per read, per upsert statement and per target transaction (≤ 14,000 bound values)."""

LIVE_WINDOW_MS = 60_000
"""A node whose heartbeat is this recent counts as a running daemon (daemons beat every 10 s; a
clean stop deletes the node's row, so only a daemon that is running — or was killed in the last
minute — is seen)."""


@dataclass(frozen=True, kw_only=True)
class Location:
    """A parsed ``--from``/``--to``: a SQLite file or a PostgreSQL URL (password kept apart)."""

    shown: str
    """Safe to print: the path, or the URL without its password."""
    identity: str
    """Normalised, to tell whether two locations are the same database."""
    path: Path | None = None
    url: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        return f"Location({self.shown!r})"


def parse_location(option: str, text: str) -> Location:
    """``postgresql://…`` / ``postgres://…``, ``sqlite:///abs/path``, or a file path.

    :raises UsageError: naming ``option``; a URL is shown only without its password.
    """
    value = text.strip()
    scheme, sep, rest = value.partition("://")
    if not value:
        raise UsageError(f"{option}: empty")
    if sep and scheme.lower() in ("postgresql", "postgres"):
        try:
            parsed = parse_database_url(option, value)
        except ConfigError as exc:
            raise UsageError(f"{option}: {exc.reason} (got {exc.value})") from None
        return Location(
            shown=parsed.url,
            identity=_pg_identity(parsed.url),
            url=parsed.url,
            password=parsed.password,
        )
    if sep and scheme.lower() == "sqlite":
        if not rest.startswith("/"):
            raise UsageError(
                f"{option}: a sqlite URL takes an absolute path, sqlite:///var/lib/warmupd/"
                f"warmupd.db (or give the path itself; got {redact_url(value)})"
            )
        path = Path(rest)
    elif sep:
        raise UsageError(
            f"{option}: unsupported URL {redact_url(value)!r} (postgresql://…, sqlite:///path "
            "or a file path)"
        )
    else:
        path = Path(value).expanduser()
    return Location(shown=str(path), identity=f"sqlite:{path.resolve()}", path=path)


def _pg_identity(url: str) -> str:
    """``url`` as one spelling: ``postgresql://``, lower-case hosts, the default port named."""
    rest = url.split("://", 1)[1]
    user, at, hostpart = rest.rpartition("@")
    hosts, slash, tail = hostpart.partition("/")
    named = [
        host.lower() if ":" in host.rsplit("]", 1)[-1] else f"{host.lower()}:5432"
        for host in hosts.split(",")
    ]
    return f"postgresql://{user}{at}{','.join(named)}{slash}{tail}"


@dataclass(frozen=True)
class TableCount:
    """What one table's copy did."""

    label: str
    copied: int
    new: int
    updated: int

    def line(self) -> str:
        """``comparisons: 1,234 copied, 0 new, 0 updated``."""
        return f"{self.label}: {self.copied:,} copied, {self.new:,} new, {self.updated:,} updated"


Progress = Callable[[str, int, int, bool], None]
"""``progress(label, rows_done, rows_total, finished)``, after every batch of a table."""


class TerminalProgress:
    """A bar per table on a terminal: ``\\r`` rewrites the line, a newline ends the table."""

    width = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, label: str, done: int, total: int, finished: bool) -> None:
        """Draw the bar of ``label`` at ``done`` of ``total`` rows."""
        filled = self.width * min(done, total) // total if total else self.width
        bar = "#" * filled + "-" * (self.width - filled)
        end = "\n" if finished else ""
        self.stream.write(f"\r{label:<15} [{bar}] {done:,}/{total:,}{end}")
        self.stream.flush()


async def copy_state(
    source: Location,
    target: Location,
    *,
    now_ms: int,
    configured: Callable[[], DatabaseConfig] | None = None,
    force: bool = False,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[TableCount]:
    """Copy :data:`TABLES` from ``source`` to ``target`` (migrated first); one count per table.

    ``configured`` yields the configured ``[database]`` (asked only for a PostgreSQL URL without a
    password): when it names the same database, its password — from the daemon's credential
    chain — is used. ``now_ms`` dates the check for live daemons.

    :raises UsageError: ``source`` and ``target`` are one database, or the source file is missing.
    :raises ServiceUnavailable: a server cannot be reached (the message has no password).
    :raises SchemaTooNew: a database was migrated by a newer warmupd.
    :raises CopyRefused: no warmupd schema in the source, schema versions that differ, daemons
        live on the target (without ``force``), or another run under a copied run id.
    """
    if source.identity == target.identity or _same_file(source, target):
        raise UsageError(f"--from and --to name the same database ({source.shown})")
    if source.path is not None and not source.path.is_file():
        raise UsageError(f"--from: no such file: {source.shown}")
    _check_copy_lists()
    async with AsyncExitStack() as stack:
        src = await _open(source, configured)
        stack.push_async_callback(src.close)
        found = await _schema_version(src, source)
        if found == 0:
            raise CopyRefused(f"{source.shown} holds no warmupd state (no warmupd schema)")
        if found > SCHEMA_VERSION:
            raise SchemaTooNew(source.shown, found, SCHEMA_VERSION)
        if found != SCHEMA_VERSION:
            raise CopyRefused(
                f"{source.shown} has schema version {found}, this warmupd {SCHEMA_VERSION}: "
                "migrate it first (start its daemon once, or `warmupd migrate` with its config)"
            )
        dst = await _open(target, configured)
        stack.push_async_callback(dst.close)
        if (migrated := await _migrate_target(dst, target)) != found:
            raise CopyRefused(
                f"{source.shown} has schema version {found}, {target.shown} {migrated}: "
                "copy-state copies only between equal versions"
            )
        await _check_live(dst, target, now_ms=now_ms, force=force)
        if warn is not None and (nodes := await _live_nodes(src, now_ms)):
            warn(
                f"{len(nodes)} daemon(s) look live on {source.shown} ({', '.join(nodes)}): the copy "
                "is of a state that is still changing; stop them and copy again"
            )
        counts = [await _copy_table(src, dst, table, progress) for table in TABLES]
        if isinstance(dst, PostgresDatabase):
            await dst.advance_identity("job_runs", "id")
        # Running daemons' read snapshots notice the copy without help: the v3 triggers bump the
        # target's state_version with every write to comparisons and cache entries.
        return counts
    raise AssertionError("unreachable")  # pragma: no cover - mypy: AsyncExitStack may swallow


def _same_file(source: Location, target: Location) -> bool:
    if source.path is None or target.path is None:
        return False
    try:
        return os.path.samefile(source.path, target.path)
    except OSError:
        return False


def _check_copy_lists() -> None:
    # Both backends share one schema history; the lists name one version of it.
    if not COPY_SCHEMA_VERSION == SCHEMA_VERSION == POSTGRES_SCHEMA_VERSION:
        raise CopyRefused(
            f"this warmupd's copy-state knows schema version {COPY_SCHEMA_VERSION}, its schema is "
            f"{SCHEMA_VERSION}: warmupd/state/copy.py must be updated"
        )


async def _open(where: Location, configured: Callable[[], DatabaseConfig] | None) -> StateBackend:
    db: StateBackend
    if where.path is not None:
        db = SqliteDatabase(where.path)
        try:
            await db.open(migrate=False)
        except (DatabaseError, OSError) as exc:
            await db.close()
            raise CopyRefused(f"cannot open {where.shown}: {exc}") from None
        return db
    assert where.url is not None
    password, connect_timeout_ms = connection_secrets(where, configured)
    # No statement cache: the copy may well go through the fleet's PgBouncer.
    db = PostgresDatabase(
        where.url,
        password=password,
        pool_min=1,
        pool_max=2,
        connect_timeout_ms=connect_timeout_ms,
        statement_cache=False,
    )
    await db.open(migrate=False)
    return db


def connection_secrets(
    where: Location, configured: Callable[[], DatabaseConfig] | None
) -> tuple[str | None, int]:
    """``(password, connect_timeout_ms)`` for a PostgreSQL location.

    The URL's own password wins. Without one, a URL naming the configured database (however it
    is spelled: ``postgres://``, host case, the default port) takes the daemon's password from
    its credential chain, and its connect timeout; any other gets None, and asyncpg then looks at
    ``$PGPASSWORD`` and ``~/.pgpass``. The configuration is loaded only in that case.
    """
    if where.password is not None or configured is None:
        return where.password, 5_000
    cfg = configured()
    if cfg.url is not None and _pg_identity(cfg.url) == where.identity:
        return cfg.password, cfg.connect_timeout_ms
    return None, 5_000


async def _schema_version(db: StateBackend, where: Location) -> int:
    try:
        return await db.schema_version()
    except DatabaseError as exc:  # e.g. "file is not a database"
        raise CopyRefused(f"cannot read {where.shown}: {exc}") from None


async def _migrate_target(db: StateBackend, where: Location) -> int:
    try:
        return (await db.migrate())[1]
    except DatabaseError as exc:
        raise CopyRefused(f"cannot migrate {where.shown}: {exc}") from None
    except SchemaTooNew as exc:
        raise SchemaTooNew(where.shown, exc.found, exc.known) from None


async def _live_nodes(db: StateBackend, now_ms: int) -> list[str]:
    # Heartbeats on PostgreSQL are the server's clock (NodeStore): age them by the same clock.
    now, at = db.dialect.now(now_ms)
    rows = await db.fetchall(
        f"SELECT node FROM nodes WHERE heartbeat_at >= {now} - ? ORDER BY node",
        (*at, LIVE_WINDOW_MS),
    )
    return [str(row["node"]) for row in rows]


async def _check_live(db: StateBackend, where: Location, *, now_ms: int, force: bool) -> None:
    nodes = await _live_nodes(db, now_ms)
    if nodes and not force:
        raise CopyRefused(
            f"{len(nodes)} warmupd daemon(s) are running on {where.shown} (heartbeat in the last "
            f"{LIVE_WINDOW_MS // 1000} s: {', '.join(nodes)}); stop them before copying into "
            "their state, or pass --force"
        )


async def _copy_table(
    src: StateBackend, dst: StateBackend, table: Table, progress: Progress | None
) -> TableCount:
    cols = ", ".join(table.columns)
    row = await src.fetchone(f"SELECT count(*) FROM {table.name}")
    total = int(row[0]) if row else 0
    key_at = table.columns.index(table.key)
    copied = new = updated = 0
    last: Any = None
    if progress is not None:
        progress(table.label, 0, total, False)
    while True:
        after = "" if last is None else f"WHERE {table.key} > ?"
        rows = await src.fetchall(
            f"SELECT {cols} FROM {table.name} {after} ORDER BY {table.key} LIMIT {BATCH_ROWS}",
            () if last is None else (last,),
        )
        if not rows:
            break
        values = [tuple(r[i] for i in range(len(table.columns))) for r in rows]
        added, changed = await _write_batch(dst, table, values)
        copied, new, updated = copied + len(values), new + added, updated + changed
        last = values[-1][key_at]
        if progress is not None:
            progress(table.label, copied, total, False)
    if progress is not None:
        progress(table.label, copied, total, True)
    return TableCount(table.label, copied, new, updated)


async def _write_batch(
    dst: StateBackend, table: Table, values: Sequence[tuple[Any, ...]]
) -> tuple[int, int]:
    """Upsert one batch in one transaction; ``(new rows, updated rows)``."""
    keys = [v[table.columns.index(table.key)] for v in values]
    marks = ", ".join("?" * len(keys))
    async with dst.transaction() as tx:
        existing = await tx.fetchall(
            f"SELECT {', '.join((table.key, *table.same_row))} FROM {table.name} "
            f"WHERE {table.key} IN ({marks})",
            keys,
        )
        if table.same_row:
            _check_same_rows(table, existing, values)
        changed = await tx.execute(
            _upsert_sql(table, len(values), dst.dialect.is_distinct),
            [value for row in values for value in row],
        )
    added = len(values) - len(existing)
    return added, changed - added


def _check_same_rows(
    table: Table, existing: Sequence[Any], values: Sequence[tuple[Any, ...]]
) -> None:
    index = {v[table.columns.index(table.key)]: v for v in values}
    for found in existing:
        mine = index[found[0]]
        theirs = tuple(found[i + 1] for i in range(len(table.same_row)))
        ours = tuple(mine[table.columns.index(c)] for c in table.same_row)
        if theirs != ours:
            raise CopyRefused(
                f"the target already has another {table.label[:-1]} under {table.key} {found[0]} "
                f"({', '.join(f'{c}={v}' for c, v in zip(table.same_row, theirs, strict=True))}; "
                f"the source's: {', '.join(map(str, ours))}): these are two different histories, "
                "which copy-state does not merge; copy into an empty database"
            )


def _upsert_sql(table: Table, rows: int, is_distinct: str) -> str:
    one = f"({', '.join('?' * len(table.columns))})"
    others = [c for c in table.columns if c != table.key]
    differs = " OR ".join(f"{table.name}.{c} {is_distinct} excluded.{c}" for c in others)
    when = f"({differs})"
    if table.only_if_later is not None:
        c = table.only_if_later
        # NULL (never) is earlier than any time; a NULL in the source never replaces a time.
        when += f" AND coalesce(excluded.{c} > {table.name}.{c}, excluded.{c} IS NOT NULL)"
    return (
        f"INSERT INTO {table.name}({', '.join(table.columns)}) VALUES {', '.join([one] * rows)} "
        f"ON CONFLICT({table.key}) DO UPDATE SET "
        f"{', '.join(f'{c} = excluded.{c}' for c in others)} WHERE {when}"
    )
