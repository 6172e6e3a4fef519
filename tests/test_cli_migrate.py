"""``warmupd migrate`` on both backends (SPEC §14): applies pending migrations, says so, and refuses
a state migrated by a newer warmupd (exit 2, both versions named), never printing a password."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg_support import (
    create_database,
    database_url,
    drop_database,
    new_database_name,
    require_postgres,
    run_admin,
)
from warmupd.cli import main
from warmupd.state.postgres import PostgresDatabase
from warmupd.state.sqlite import SCHEMA_VERSION

PASSWORD = "Never-Printed-Pw-9"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CREDENTIALS_DIRECTORY", "WARMUPD_CONFIG", "STATE_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_PASSWORD", PASSWORD)


@pytest.fixture
def pg_name() -> Iterator[str]:
    require_postgres()
    name = new_database_name("cli")
    run_admin(lambda: create_database(name))
    try:
        yield name
    finally:
        run_admin(lambda: drop_database(name))


def write_config(tmp_path: Path, database: str = "") -> Path:
    config = tmp_path / "warmupd.toml"
    config.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n{database}')
    return config


@pytest.mark.usefixtures("clean_env")
def test_migrate_a_sqlite_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    assert main(["migrate", "-c", str(config)]) == 0
    db = tmp_path / "state" / "warmupd.db"
    assert capsys.readouterr().out == f"{db}: schema version {SCHEMA_VERSION} (migrated from 0)\n"
    assert main(["migrate", "-c", str(config)]) == 0
    assert capsys.readouterr().out == f"{db}: schema version {SCHEMA_VERSION} (up to date)\n"


@pytest.mark.postgres
@pytest.mark.usefixtures("clean_env")
def test_migrate_a_postgres_database(
    tmp_path: Path, pg_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = database_url(pg_name)
    config = write_config(tmp_path, f'[database]\nurl = "{url}"\n')
    assert main(["migrate", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert out == f"{url}: schema version {SCHEMA_VERSION} (migrated from 0)\n"
    assert main(["migrate", "-c", str(config)]) == 0
    out += capsys.readouterr().out
    assert f"{url}: schema version {SCHEMA_VERSION} (up to date)" in out
    assert PASSWORD not in out
    assert not (tmp_path / "state" / "warmupd.db").exists()  # the SQLite file is not touched

    async def make_newer() -> None:
        async with PostgresDatabase(url) as db:
            await db.execute("UPDATE warmupd_schema SET version = ?", (SCHEMA_VERSION + 1,))

    run_admin(make_newer)
    assert main(["migrate", "-c", str(config)]) == 2
    captured = capsys.readouterr()
    assert f"schema version {SCHEMA_VERSION + 1}" in captured.err
    assert f"warmupd's {SCHEMA_VERSION}" in captured.err
    assert PASSWORD not in captured.out + captured.err


@pytest.mark.usefixtures("clean_env")
def test_migrate_an_unreachable_server_says_so_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql://warmupd:{PASSWORD}@127.0.0.1:1/warmupd"
    config = write_config(tmp_path, f'[database]\nurl = "{url}"\nconnect_timeout = "2s"\n')
    assert main(["migrate", "-c", str(config)]) == 1
    captured = capsys.readouterr()
    assert "cannot connect to postgresql://warmupd@127.0.0.1:1/warmupd" in captured.err
    assert PASSWORD not in captured.out + captured.err
