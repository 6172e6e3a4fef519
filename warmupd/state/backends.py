"""Which backend holds the state: the SQLite file, or the PostgreSQL database of ``[database] url``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from warmupd.config_database import DatabaseConfig
from warmupd.state.postgres import DRIVER_ERRORS, PostgresDatabase
from warmupd.state.sqlite import DatabaseError, SqliteDatabase

StateBackend = SqliteDatabase | PostgresDatabase

STATE_ERRORS: tuple[type[BaseException], ...] = (DatabaseError, OSError, *DRIVER_ERRORS)
"""What a statement may raise when the state database (either backend) cannot answer."""


def state_database(cfg: DatabaseConfig, db_path: Path) -> StateBackend:
    """A (not yet opened) database for ``cfg``: PostgreSQL when a URL is set, else ``db_path``."""
    if cfg.url is None:
        return SqliteDatabase(db_path)
    return PostgresDatabase(
        cfg.url,
        password=cfg.password,
        pool_min=cfg.pool_min,
        pool_max=cfg.pool_max,
        connect_timeout_ms=cfg.connect_timeout_ms,
        statement_timeout_ms=cfg.statement_timeout_ms,
        statement_cache=cfg.statement_cache,
    )


def describe_location(cfg: DatabaseConfig, db_path: Path) -> str:
    """Where the state lives, safe to show (a URL never carries its password)."""
    return cfg.url if cfg.url is not None else str(db_path)


def describe_database(db: StateBackend) -> dict[str, Any]:
    """The engine and where the state lives, for ``/api/status`` (a URL without its password)."""
    if isinstance(db, SqliteDatabase):
        return {"engine": "sqlite", "path": str(db.path), "sizeBytes": db.size_bytes()}
    return {"engine": "postgresql", "url": db.url}


def watch_database(db: StateBackend, listener: Callable[[bool, str | None], object]) -> None:
    """Have ``listener(up, reason)`` told when statements fail for want of the server (and when
    one answers again). PostgreSQL only: an open SQLite file has no server to lose."""
    if isinstance(db, PostgresDatabase):
        db.on_health = listener
