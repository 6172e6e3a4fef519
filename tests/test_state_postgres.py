"""The PostgreSQL backend's own promises (SPEC §14): migrations under an advisory lock, a newer
schema refused with both versions named, the statement cache switch, ``?`` placeholders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests import pg_support
from tests.pg_support import create_database, drop_database, new_database_name, require_postgres
from warmupd.errors import SchemaTooNew, ServiceUnavailable
from warmupd.state.postgres import SCHEMA_VERSION, PostgresDatabase, rowcount, to_numbered

pytestmark = pytest.mark.postgres


@pytest.fixture
async def fresh_url() -> AsyncIterator[str]:
    """An empty database of its own (the migration tests need one that nobody migrated yet)."""
    require_postgres()
    name = new_database_name("m")
    url = await create_database(name)
    try:
        yield url
    finally:
        await drop_database(name)


def test_placeholders_become_numbered_outside_quoted_text() -> None:
    sql = "SELECT '?', \"a?b\", x FROM t WHERE a = ? AND b IN (?, ?) AND c = 'it''s ?' AND d = ?"
    assert to_numbered(sql) == (
        "SELECT '?', \"a?b\", x FROM t WHERE a = $1 AND b IN ($2, $3) AND c = 'it''s ?' AND d = $4"
    )


def test_rowcount_reads_the_command_tag() -> None:
    assert [rowcount(t) for t in ("INSERT 0 1", "UPDATE 3", "DELETE 0", "CREATE TABLE")] == [
        1,
        3,
        0,
        0,
    ]


async def test_n_daemons_starting_together_migrate_once(fresh_url: str) -> None:
    databases = [PostgresDatabase(fresh_url, pool_min=1, pool_max=2) for _ in range(6)]
    await asyncio.gather(*(db.open(migrate=False) for db in databases))
    try:
        results = await asyncio.gather(*(db.migrate() for db in databases))
        assert sorted(results) == [(0, SCHEMA_VERSION)] + [(SCHEMA_VERSION, SCHEMA_VERSION)] * 5
        assert await databases[0].schema_version() == SCHEMA_VERSION
        row = await databases[0].fetchone("SELECT count(*) FROM warmupd_schema")
        assert row is not None
        assert row[0] == 1
        row = await databases[0].fetchone("SELECT version FROM state_version WHERE id = 1")
        assert row is not None  # the one-row counter was inserted exactly once
    finally:
        await asyncio.gather(*(db.close() for db in databases))


async def test_a_database_newer_than_the_binary_is_refused_naming_both_versions(
    fresh_url: str,
) -> None:
    async with PostgresDatabase(fresh_url) as db:
        assert await db.schema_version() == SCHEMA_VERSION
        await db.execute("UPDATE warmupd_schema SET version = ?", (SCHEMA_VERSION + 7,))
    newer = PostgresDatabase(fresh_url, password="Not-Shown-Password-1")
    with pytest.raises(SchemaTooNew) as err:
        await newer.open()
    message = str(err.value)
    assert f"schema version {SCHEMA_VERSION + 7}" in message
    assert f"warmupd's {SCHEMA_VERSION}" in message
    assert "Not-Shown-Password-1" not in message + repr(newer)
    assert err.value.exit_code == 2
    assert not newer.is_open  # the pool is closed again on the way out


async def test_an_empty_database_reports_version_zero(fresh_url: str) -> None:
    db = PostgresDatabase(fresh_url)
    await db.open(migrate=False)
    try:
        assert await db.schema_version() == 0
    finally:
        await db.close()


@pytest.mark.parametrize("cache", [True, False])
async def test_statement_cache_switch(fresh_url: str, cache: bool) -> None:
    """``statement_cache = false``: nothing is prepared by name, as a transaction pooler needs."""
    async with PostgresDatabase(fresh_url, pool_min=1, pool_max=1, statement_cache=cache) as db:
        for _ in range(2):
            await db.fetchone("SELECT node FROM nodes WHERE node = ?", ("x",))
        row = await db.fetchone(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE ?",
            ("%FROM nodes%",),
        )
        assert row is not None
        assert (row[0] > 0) is cache


async def test_a_closed_database_is_unavailable() -> None:
    db = PostgresDatabase("postgresql://postgres@127.0.0.1:1/none")
    assert not db.is_open
    with pytest.raises(ServiceUnavailable):
        await db.execute("SELECT 1")
    await db.close()  # idempotent


async def test_an_unreachable_server_is_unavailable_naming_the_url_not_the_password() -> None:
    db = PostgresDatabase(
        "postgresql://postgres@127.0.0.1:1/none", password="Not-Shown-2", connect_timeout_ms=2000
    )
    with pytest.raises(ServiceUnavailable) as err:
        await db.open()
    assert "postgresql://postgres@127.0.0.1:1/none" in str(err.value)
    assert "Not-Shown-2" not in str(err.value)
    assert not db.is_open


def test_an_unreachable_test_server_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The contract suites must not pass in CI by skipping every PostgreSQL case."""
    monkeypatch.setattr(pg_support, "ADMIN_URL", "postgresql://postgres@127.0.0.1:1/postgres")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="unreachable"):
        require_postgres()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="unreachable"):
        require_postgres()
