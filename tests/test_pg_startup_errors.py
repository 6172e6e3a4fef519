"""Start-up errors on PostgreSQL (SPEC §14, §12): one clear line naming the problem, never a traceback,
never the password.

Configuration — a malformed URL, credentials the server refuses, a database that does not exist, a
database migrated by a newer warmupd — stops ``serve`` at once with exit 2 (waiting would not fix
it). An unreachable server is transient: ``serve`` waits for it (tests/test_daemon_pg_faults.py),
while ``check-config`` and ``migrate`` say so in one line and exit 1.

The server is a private PostgreSQL whose TCP connections need a password (scram-sha-256).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_support import toml
from tests.lock_support import REDIS_URL, free_port, worker_env
from tests.pg_private import PrivatePostgres
from warmupd.state.postgres_schema import SCHEMA_VERSION

pytestmark = pytest.mark.slow

PASSWORD = "right-Pass-7713"
WRONG = "wrong-Pass-2289"


@pytest.fixture(scope="module")
def guarded_pg() -> Iterator[PrivatePostgres]:
    """A private server that wants a password; database ``newer`` was migrated by "warmupd 99"."""
    server = PrivatePostgres(password=PASSWORD)
    try:
        server.start()
        server.execute("CREATE DATABASE newer")
        server.execute(
            "CREATE TABLE warmupd_schema(id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER)",
            "INSERT INTO warmupd_schema VALUES (1, 99)",
            database="newer",
        )
        yield server
    finally:
        server.cleanup()


def run_cli(
    tmp_path: Path, command: str, url: str, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """``warmupd COMMAND -c CONFIG`` with ``database.url = url``: exit code and stdout+stderr."""
    config = tmp_path / f"{command}.toml"
    doc = {
        "daemon": {"state_dir": str(tmp_path / "state")},
        "http": {"host": "127.0.0.1", "port": free_port()},
        "database": {"url": url, "connect_timeout": "2s"},
        "redis": {"url": REDIS_URL, "key_prefix": "warmupd-test-never-used:"},
    }
    config.write_text(toml(doc))
    done = subprocess.run(
        [sys.executable, "-m", "warmupd", command, "-c", str(config)],
        env={**worker_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


def assert_one_clear_line(output: str, *needles: str, only: bool = True) -> None:
    """One error line naming the problem (``only``: and nothing else), no traceback, no password.

    ``serve`` logs its start-up (one record per line) before the error; a CLI command prints
    the error alone.
    """
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("warmupd: ")]
    assert len(errors) == 1, output  # one line, not a log of retries or a traceback
    if only:
        assert lines == errors, output
    assert "Traceback" not in output
    for needle in needles:
        assert needle in errors[0], output
    assert PASSWORD not in output
    assert WRONG not in output


def test_serve_refuses_a_malformed_url_with_exit_2(tmp_path: Path) -> None:
    code, out = run_cli(tmp_path, "serve", f"postgresql://postgres:{WRONG}@127.0.0.1:99999/x")
    assert code == 2, out
    assert "Traceback" not in out
    assert "database.url" in out
    assert "invalid port" in out
    assert WRONG not in out


def test_serve_refuses_wrong_credentials_with_exit_2(
    tmp_path: Path, guarded_pg: PrivatePostgres
) -> None:
    url = guarded_pg.url().replace("postgres@", f"postgres:{WRONG}@")
    code, out = run_cli(tmp_path, "serve", url)
    assert code == 2, out
    assert_one_clear_line(
        out,
        f"state database {guarded_pg.url()} refused warmupd",
        'password authentication failed for user "postgres"',
        "check the database password",
        only=False,
    )


def test_serve_refuses_a_database_that_does_not_exist_with_exit_2(
    tmp_path: Path, guarded_pg: PrivatePostgres
) -> None:
    url = guarded_pg.url("nope")
    code, out = run_cli(tmp_path, "serve", url, {"DATABASE_PASSWORD": PASSWORD})
    assert code == 2, out
    assert_one_clear_line(out, url, 'database "nope" does not exist', only=False)


def test_serve_refuses_a_database_of_a_newer_schema_with_exit_2(
    tmp_path: Path, guarded_pg: PrivatePostgres
) -> None:
    url = guarded_pg.url("newer")
    code, out = run_cli(tmp_path, "serve", url, {"DATABASE_PASSWORD": PASSWORD})
    assert code == 2, out
    assert_one_clear_line(
        out, url, "schema version 99", f"this warmupd's {SCHEMA_VERSION}", only=False
    )


def test_check_config_checks_the_database_it_names(
    tmp_path: Path, guarded_pg: PrivatePostgres
) -> None:
    env = {"DATABASE_PASSWORD": PASSWORD}
    code, out = run_cli(tmp_path, "check-config", guarded_pg.url(), env)
    assert code == 0, out
    assert f"database OK: {guarded_pg.url()} (schema version 0)" in out
    assert PASSWORD not in out
    wrong = {"DATABASE_PASSWORD": WRONG}
    code, out = run_cli(tmp_path, "check-config", guarded_pg.url(), wrong)
    assert code == 2, out
    assert_one_clear_line(out, "password authentication failed")
    code, out = run_cli(tmp_path, "check-config", guarded_pg.url("newer"), env)
    assert code == 2, out
    assert_one_clear_line(out, "schema version 99")


@pytest.mark.parametrize("command", ["check-config", "migrate"])
def test_an_unreachable_host_is_one_line_and_a_non_zero_exit(tmp_path: Path, command: str) -> None:
    url = f"postgresql://warmupd:{WRONG}@127.0.0.1:{free_port()}/warmupd"
    code, out = run_cli(tmp_path, command, url)
    assert code == 1, out
    shown = url.replace(f":{WRONG}", "")
    assert_one_clear_line(out, f"cannot connect to {shown}", "ConnectionRefusedError")
