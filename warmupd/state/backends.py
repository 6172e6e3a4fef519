"""Which backend holds the state: the SQLite file, or the PostgreSQL database of ``[database] url``."""

from __future__ import annotations

from pathlib import Path

from warmupd.config_database import DatabaseConfig
from warmupd.state.postgres import PostgresDatabase
from warmupd.state.sqlite import SqliteDatabase

StateBackend = SqliteDatabase | PostgresDatabase


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
