"""State database: pragmas, migrations, transactions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from warmupd.errors import SchemaTooNew
from warmupd.state.sqlite import SCHEMA_VERSION, SqliteDatabase


async def test_pragmas_are_set(db: SqliteDatabase) -> None:
    assert (await db.fetchone("PRAGMA journal_mode"))[0] == "wal"
    assert (await db.fetchone("PRAGMA synchronous"))[0] == 1  # NORMAL
    assert (await db.fetchone("PRAGMA busy_timeout"))[0] >= 5000
    assert (await db.fetchone("PRAGMA foreign_keys"))[0] == 1


async def test_migrations_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    async with SqliteDatabase(path) as db:
        assert await db.schema_version() == SCHEMA_VERSION
        schema_before = await db.fetchall("SELECT sql FROM sqlite_master ORDER BY name")
        assert await db.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)
    async with SqliteDatabase(path) as db:
        schema_after = await db.fetchall("SELECT sql FROM sqlite_master ORDER BY name")
    assert [tuple(r) for r in schema_before] == [tuple(r) for r in schema_after]


async def test_an_empty_version_0_file_migrates(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    sqlite3.connect(path).close()  # a file created before any warmupd schema existed
    async with SqliteDatabase(path) as db:
        assert await db.schema_version() == SCHEMA_VERSION
        tables = {
            r[0] for r in await db.fetchall("SELECT name FROM sqlite_master WHERE type='table'")
        }
    assert {
        "comparisons",
        "cache_entries",
        "job_runs",
        "locks",
        "schedule_state",
        "warmups",
    } <= tables


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(
        SchemaTooNew,
        match=f"schema version {SCHEMA_VERSION + 1}, newer than this warmupd.s {SCHEMA_VERSION}",
    ):
        async with SqliteDatabase(path):
            pass


async def test_transaction_rolls_back_on_error(db: SqliteDatabase) -> None:
    async def write_then_fail() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO schedule_state(job, last_fire_at) VALUES ('x', 1)")
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await write_then_fail()
    assert await db.fetchone("SELECT * FROM schedule_state") is None
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO schedule_state(job, last_fire_at) VALUES ('x', 1)")
    assert (await db.fetchone("SELECT last_fire_at FROM schedule_state"))[0] == 1


async def test_a_statement_never_lands_inside_another_tasks_transaction(db: SqliteDatabase) -> None:
    import asyncio

    inside = asyncio.Event()
    leave = asyncio.Event()

    async def failing_transaction() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO schedule_state(job, last_fire_at) VALUES ('tx', 1)")
            inside.set()
            await leave.wait()
            raise RuntimeError("roll back")

    tx_task = asyncio.ensure_future(failing_transaction())
    await inside.wait()
    # Issued while the transaction is open: it must wait, not join it (and be rolled back with it).
    other = asyncio.ensure_future(
        db.execute("INSERT INTO schedule_state(job, last_fire_at) VALUES ('other', 2)")
    )
    await asyncio.sleep(0.05)
    assert not other.done()
    leave.set()
    with pytest.raises(RuntimeError, match="roll back"):
        await tx_task
    assert await other == 1
    rows = await db.fetchall("SELECT job FROM schedule_state ORDER BY job")
    assert [r["job"] for r in rows] == ["other"]


async def test_a_transaction_cancelled_while_begin_waits_leaves_no_transaction_open(
    tmp_path: Path,
) -> None:
    """Found in review: BEGIN IMMEDIATE waiting on another process's write lock, then cancelled."""
    import asyncio

    path = tmp_path / "w.db"
    async with SqliteDatabase(path, busy_timeout_ms=2_000) as db:
        await db.execute("CREATE TABLE t(x)")
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock

        async def housekeeping() -> None:
            async with db.transaction() as tx:
                await tx.execute("DELETE FROM t")

        task = asyncio.create_task(housekeeping())
        await asyncio.sleep(0.2)  # BEGIN IMMEDIATE now waits in aiosqlite's thread
        task.cancel()
        cancelled = asyncio.gather(task, return_exceptions=True)
        other.execute("COMMIT")  # the other process finishes; our BEGIN then succeeds
        await cancelled
        # An ordinary autocommit write through the lock-free path must be visible to others.
        await db.execute("INSERT INTO t VALUES (1)")
        assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 1
        other.close()
