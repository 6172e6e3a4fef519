"""The Database protocol itself, unchanged on every state backend: statements, transactions, schema."""

from __future__ import annotations

import pytest

from warmupd.state import Database
from warmupd.state.postgres import SCHEMA_VERSION as PG_SCHEMA_VERSION
from warmupd.state.sqlite import SCHEMA_VERSION


def test_both_backends_share_one_schema_history() -> None:
    assert PG_SCHEMA_VERSION == SCHEMA_VERSION


async def test_statements_return_rowcounts_and_rows(state: Database) -> None:
    sql = "INSERT INTO nodes(node, started_at, heartbeat_at) VALUES (?, ?, ?)"
    assert await state.execute(sql, ("a", 1, 2)) == 1
    assert await state.execute(sql, ("b", 1, 3)) == 1
    assert (
        await state.execute("UPDATE nodes SET heartbeat_at = ? WHERE started_at = ?", (9, 1)) == 2
    )
    assert await state.execute("DELETE FROM nodes WHERE node = ?", ("nobody",)) == 0
    row = await state.fetchone("SELECT node, heartbeat_at FROM nodes WHERE node = ?", ("a",))
    assert row is not None
    assert (row["node"], row[1]) == ("a", 9)
    assert await state.fetchone("SELECT node FROM nodes WHERE node = ?", ("zz",)) is None
    rows = await state.fetchall("SELECT node FROM nodes WHERE node <> '?' ORDER BY node")
    assert [r[0] for r in rows] == ["a", "b"]


async def test_a_transaction_commits_or_rolls_back_as_a_whole(state: Database) -> None:
    sql = "INSERT INTO job_pauses(job, paused_at, paused_by) VALUES (?, ?, ?)"
    async with state.transaction() as tx:
        await tx.execute(sql, ("a", 1, "n"))
        assert await tx.fetchone("SELECT job FROM job_pauses WHERE job = ?", ("a",)) is not None
        await tx.execute(sql, ("b", 1, "n"))

    async def write_then_fail() -> None:
        async with state.transaction() as tx:
            await tx.execute(sql, ("c", 1, "n"))
            assert len(await tx.fetchall("SELECT job FROM job_pauses")) == 3
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError, match="roll back"):
        await write_then_fail()
    assert [r[0] for r in await state.fetchall("SELECT job FROM job_pauses ORDER BY job")] == [
        "a",
        "b",
    ]


async def test_migrations_are_applied_once_and_are_idempotent(state: Database) -> None:
    assert await state.schema_version() == SCHEMA_VERSION
    assert await state.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)
    assert state.is_open
    assert state.dialect.name in ("sqlite", "postgresql")
