"""A fresh PostgreSQL database for a benchmark, created before it and dropped after it.

The server is the machine's (``$WARMUPD_BENCH_PG``, default
``postgresql://postgres@127.0.0.1:5432/postgres``, trust auth): never started, stopped or
configured here. Each benchmark gets its own database, named after its pid and a random token, and
drops it (``WITH (FORCE)``, so a connection left open does not keep it) on every exit path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.common import Verdict
from bench.procs import BenchDaemon

ADMIN_URL = os.environ.get("WARMUPD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
T = TypeVar("T")


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run ``make()`` on a private event loop in a helper thread (safe inside a running loop too)."""

    async def main() -> T:
        return await make()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def database_url(name: str) -> str:
    """:data:`ADMIN_URL` pointed at database ``name``."""
    return urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))


def available() -> str | None:
    """None when the server answers, else why not (one line)."""

    async def ping() -> None:
        conn = await asyncpg.connect(ADMIN_URL, timeout=3)
        await conn.close()

    try:
        run_async(ping)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return f"PostgreSQL at {ADMIN_URL} unreachable: {type(exc).__name__}: {exc}"
    return None


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_database(tag: str) -> Iterator[str]:
    """Create a database for this benchmark; yield its URL; drop it afterwards."""
    name = f"warmupd_bench_{tag}_{os.getpid()}_{secrets.token_hex(3)}"
    run_async(lambda: _admin(f'CREATE DATABASE "{name}"'))
    try:
        yield database_url(name)
    finally:
        run_async(lambda: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def fetch_column(url: str, sql: str) -> list[object]:
    """The first column of ``sql``'s rows on ``url`` (one short connection)."""
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return [row[0] for row in await conn.fetch(sql)]
    finally:
        await conn.close()


@contextlib.contextmanager
def postgres_state(tag: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """A fresh database and the config a daemon needs to keep its state there.

    Yields ``(database_url, extra config tables)``: no ``[redis]``, so the daemon's leases are
    PostgreSQL rows in the same database — what a fleet without Redis runs (SPEC §14).
    """
    with fresh_database(tag) as url:
        yield url, {}


BACKENDS = ("sqlite", "postgresql")


def backends(choice: str) -> list[str]:
    """``sqlite``, ``postgresql`` or ``both`` → the backends to measure, in that order."""
    if choice == "both":
        return list(BACKENDS)
    if choice not in BACKENDS:
        raise ValueError(f"unknown backend {choice!r}")
    return [choice]


@contextlib.contextmanager
def bench_daemon(
    backend: str, workdir: Path, extra: dict[str, Any], tag: str
) -> Iterator[BenchDaemon]:
    """A :class:`~bench.procs.BenchDaemon` (not started) with its state on ``backend``.

    On PostgreSQL, a fresh database dropped when the block ends (after the daemon stopped).
    """
    if backend == "sqlite":
        yield BenchDaemon(workdir, extra)
        return
    with postgres_state(tag) as (url, more):
        yield BenchDaemon(workdir, {**extra, **more}, database_url=url)


def measurable(choice: str, target: str, verdicts: list[Verdict]) -> Iterator[str]:
    """The backends of ``choice`` (:func:`backends`) that can be measured now, in order; a
    PostgreSQL that cannot be reached adds ``target``'s "not measured" verdict to ``verdicts``
    instead (a missed verdict, never a silent skip)."""
    for name in backends(choice):
        if name == "postgresql" and (why := available()) is not None:
            verdicts.append(not_measured(target, why))
            continue
        yield name


def not_measured(target: str, why: str) -> Verdict:
    """The verdict of a PostgreSQL figure that could not be measured: missed, saying why."""
    print(f"  postgresql: not measured: {why}")
    return Verdict(
        target=target,
        what="PostgreSQL backend",
        figure="not measured",
        reference=why,
        ratio=None,
        bound="measured on PostgreSQL (SPEC §14)",
        met=False,
    )
