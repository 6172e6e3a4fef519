"""The test sessions' PostgreSQL: a fresh database per session on the server of ``$WARMUPD_TEST_PG``.

The machine's server (127.0.0.1:5432, trust auth) is shared and never restarted: a session creates
its own database on it, named after its pid and a random token, and drops it at the end. Admin
statements run on a private event loop in a helper thread, so they never touch the loop of the test
that happens to set the session fixture up.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

ADMIN_URL = os.environ.get("WARMUPD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

T = TypeVar("T")


def run_admin(make: Callable[[], Awaitable[T]]) -> T:
    """Run ``make()`` to completion on a fresh event loop in another thread."""

    async def main() -> T:
        return await make()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def database_url(name: str) -> str:
    """``$WARMUPD_TEST_PG`` pointed at database ``name``."""
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


def new_database_name(tag: str = "") -> str:
    """A database name no other session or test uses."""
    return f"warmupd_test_{os.getpid()}_{tag}{secrets.token_hex(4)}"


async def create_database(name: str) -> str:
    """Create database ``name``; returns its URL."""
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_url(name)


async def drop_database(name: str) -> None:
    """Drop database ``name``, ending any connection still open on it."""
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def require_postgres() -> None:
    """Skip when the server of ``$WARMUPD_TEST_PG`` is unreachable — or fail, when env CI is set."""

    async def ping() -> None:
        conn = await asyncpg.connect(ADMIN_URL, timeout=3)
        await conn.close()

    try:
        run_admin(ping)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL at {ADMIN_URL} unreachable: {type(exc).__name__}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def fresh_database(tag: str = "") -> Iterator[str]:
    """A database of its own for one test (required: skips or fails as :func:`require_postgres`),
    dropped afterwards; yields its URL."""
    require_postgres()
    name = new_database_name(tag)
    url = run_admin(lambda: create_database(name))
    try:
        yield url
    finally:
        run_admin(lambda: drop_database(name))
