"""``warmupd copy-state`` (SPEC §14): SQLite → PostgreSQL → SQLite with every column intact, a second
copy that finds nothing new, what daemons read afterwards, the progress bar on a terminal only, and
clear refusals of bad input without a traceback or a password."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pg_support import (
    fresh_database,
    run_admin,
)
from warmupd.cli import main
from warmupd.config_database import DatabaseConfig
from warmupd.importer import load_demo_data
from warmupd.models import Comparison, RunStatus, Trigger, WarmupState
from warmupd.state.backends import StateBackend
from warmupd.state.cache import CacheStore
from warmupd.state.copy import connection_secrets, parse_location
from warmupd.state.copy_tables import COPY_SCHEMA_VERSION, NOT_COPIED, TABLES
from warmupd.state.pauses import PauseStore
from warmupd.state.postgres import PostgresDatabase
from warmupd.state.runs import NodeStore, RunStore
from warmupd.state.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteDatabase
from warmupd.state.store import ComparisonStore, ScheduleStore, WarmupStore

PASSWORD = "Never-Printed-Pw-7"
NOW = 1_764_000_000_000
FENCED_KEY = "forecast:apple-vs-pear:termA:"
NOT_COPIED_ROWS = ("locks", "fire_claims", "warmups", "nodes")


def cli(*args: str, stderr: Any = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """The real command line, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if k not in ("WARMUPD_CONFIG", "PGPASSWORD")}
    return subprocess.run(
        [sys.executable, "-m", "warmupd", "copy-state", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database("copy") as url:
        yield url


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CREDENTIALS_DIRECTORY", "WARMUPD_CONFIG", "STATE_DIRECTORY", "PGPASSWORD"):
        monkeypatch.delenv(name, raising=False)


def with_password(url: str) -> str:
    """``url`` with PASSWORD in it (the server trusts 127.0.0.1, so any password connects)."""
    return url.replace("://postgres@", f"://postgres:{PASSWORD}@")


async def seed(path: Path) -> None:
    """A state with every copied column set to something other than its default, and rows in the
    tables that must not be copied."""
    async with SqliteDatabase(path) as db:
        comparisons = ComparisonStore(db)
        for i, (a, b) in enumerate((("apple", "pear"), ("tea", "coffee"), ("vim", "emacs"))):
            series = tuple(
                {"date": f"2025-01-{d:02d}", "a": d + i, "b": 2 * d} for d in range(1, 9)
            )
            comparison = Comparison(
                slug=f"{a}-vs-{b}",
                term_a=a,
                term_b=b,
                timeframe="today 12-m",
                geo="DE",
                category="71",
                series=series,
            )
            await comparisons.upsert(comparison, NOW - 1000 * i)
            await comparisons.add_views(comparison.slug, 5 + i, NOW + i)
        head = await comparisons.get("apple-vs-pear")
        assert head is not None
        cache = CacheStore(db)
        for key, fence_key, fence in (
            (FENCED_KEY + head.data_hash, "redis:warmupd:job:warmup-forecasts", 41),
            (f"insights:apple-vs-pear:{head.data_hash}", "sqlite:ondemand:apple-vs-pear", 3),
        ):
            await cache.put(
                key,
                kind=key.split(":", 1)[0],
                slug="apple-vs-pear",
                data_hash=head.data_hash,
                version="forecast-v2",
                value={"points": [1.5, 2.25], "note": "ü"},
                now_ms=NOW,
                fresh_ttl_ms=3_600_000,
                stale_ttl_ms=86_400_000,
                fence_key=fence_key,
                fence=fence,
            )
        runs = RunStore(db)
        for status in (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELLED):
            run_id = await runs.start(
                "warmup-forecasts", Trigger.SCHEDULE, "h1:1:aa", NOW, {"k": 1}
            )
            await runs.finish(
                run_id,
                status=status,
                now_ms=NOW + 2500,
                reason=f"{status}-reason",
                processed=7,
                skipped=2,
                failed=1,
                errors=["apple-vs-pear: boom"],
                metadata={"fence": 41},
            )
        await runs.record(
            "warmup-ai-explanations",
            status=RunStatus.SKIPPED,
            trigger=Trigger.HTTP,
            node="h2:2:bb",
            now_ms=NOW + 10,
            reason="paused",
        )
        await runs.start("housekeeping", Trigger.CLI, "h1:1:aa", NOW + 20, {})  # still running
        await ScheduleStore(db).save("warmup-forecasts", NOW - 60_000, NOW + 86_400_000)
        await ScheduleStore(db).save("housekeeping", None, NOW + 3_600_000)
        await PauseStore(db).pause("warmup-ai-explanations", NOW, "h1:1:aa")
        # Not copied: leases, claims, heartbeats (an old one: no daemon is live), warmup status.
        await db.execute(
            "INSERT INTO locks(key, owner, fence, acquired_at, expires_at) VALUES (?, ?, ?, ?, ?)",
            ("job:warmup-forecasts", "h1:1:aa", 41, NOW, NOW + 60_000),
        )
        await db.execute(
            "INSERT INTO fire_claims(job, due_at, node, claimed_at, expires_at) VALUES (?, ?, ?, ?, ?)",
            ("warmup-forecasts", NOW, "h1:1:aa", NOW, NOW + 60_000),
        )
        await NodeStore(db).heartbeat("h1:1:aa", NOW - 3_600_000)
        await WarmupStore(db).set("apple-vs-pear", head.data_hash, WarmupState.RUNNING, NOW)


async def dump(db: StateBackend) -> dict[str, list[dict[str, Any]]]:
    """Every column (``SELECT *``, not the copy's lists) of every copied table, in key order."""
    out = {}
    for table in TABLES:
        rows = await db.fetchall(f"SELECT * FROM {table.name} ORDER BY {table.key}")
        out[table.name] = [{k: row[k] for k in row.keys()} for row in rows]  # noqa: SIM118
    return out


def dump_of(db: StateBackend) -> dict[str, list[dict[str, Any]]]:
    async def go() -> dict[str, list[dict[str, Any]]]:
        async with db:
            return await dump(db)

    return run_admin(go)


def counts(lines: dict[str, tuple[int, int, int]]) -> str:
    return "".join(
        f"{k}: {c:,} copied, {n:,} new, {u:,} updated\n" for k, (c, n, u) in lines.items()
    )


SEEDED = {"runs": 5, "comparisons": 3, "cache entries": 2, "schedule state": 2, "pauses": 1}


@pytest.mark.postgres
def test_sqlite_to_postgres_and_back_keeps_every_column(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A database without warmupd's schema is no source (and the refusal creates no target).
    assert main(["copy-state", "--from", pg_url, "--to", str(tmp_path / "x.db")]) == 1
    assert f"{pg_url} holds no warmupd state" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()
    source = tmp_path / "warmupd.db"
    run_admin(lambda: seed(source))
    original = dump_of(SqliteDatabase(source))
    assert all(original.values())

    first = cli("--from", str(source), "--to", with_password(pg_url))
    assert first.returncode == 0, first.stderr
    assert first.stdout == counts({k: (n, n, 0) for k, n in SEEDED.items()})
    assert first.stderr == ""  # not a terminal: nothing but the counts
    assert dump_of(PostgresDatabase(pg_url)) == original

    again = cli("--from", str(source), "--to", with_password(pg_url))
    assert again.returncode == 0, again.stderr
    assert again.stdout == counts({k: (n, 0, 0) for k, n in SEEDED.items()})
    assert PASSWORD not in first.stdout + first.stderr + again.stdout + again.stderr
    assert dump_of(PostgresDatabase(pg_url)) == original

    async def read_postgres() -> None:
        async with PostgresDatabase(pg_url) as pg:
            for table in NOT_COPIED_ROWS:
                row = await pg.fetchone(f"SELECT count(*) FROM {table}")
                assert row is not None
                assert row[0] == 0, table
            # A daemon's read path sees the copy: heads, hashes and the fenced entry's text.
            head = await ComparisonStore(pg).get("apple-vs-pear")
            assert head is not None
            version, found = await CacheStore(pg).read_comparisons(
                ["apple-vs-pear"], NOW, values=True
            )
            assert version > 0
            entries = found["apple-vs-pear"][1]
            fenced = entries[FENCED_KEY + head.data_hash]
            assert fenced.version == "forecast-v2"
            assert fenced.text == '{"points":[1.5,2.25],"note":"\\u00fc"}'
            assert fenced.fresh_until_ms == NOW + 3_600_000
            assert await PauseStore(pg).is_paused("warmup-ai-explanations")
            # The copy lists name every column of the PostgreSQL schema too.
            rows = await pg.fetchall(
                """SELECT table_name, column_name FROM information_schema.columns
                   WHERE table_schema = current_schema() ORDER BY ordinal_position"""
            )
            columns: dict[str, list[str]] = {}
            for r in rows:
                columns.setdefault(r["table_name"], []).append(r["column_name"])
            assert_lists_match(columns)

    run_admin(read_postgres)

    back = tmp_path / "back" / "warmupd.db"
    returned = cli(
        "--from", pg_url.replace("postgresql://", "postgres://"), "--to", f"sqlite://{back}"
    )
    assert returned.returncode == 0, returned.stderr
    assert returned.stdout == counts({k: (n, n, 0) for k, n in SEEDED.items()})
    assert dump_of(SqliteDatabase(back)) == original

    async def new_runs_do_not_collide() -> None:
        for db in (PostgresDatabase(pg_url), SqliteDatabase(back)):
            async with db:
                run_id = await RunStore(db).start("housekeeping", Trigger.CLI, "h3", NOW, {})
                assert run_id == SEEDED["runs"] + 1, db

    run_admin(new_runs_do_not_collide)


def assert_lists_match(columns: dict[str, list[str]]) -> None:
    """Every table of a migrated schema is copied with all its columns, or named as not copied."""
    copied = {t.name: list(t.columns) for t in TABLES}
    assert set(columns) - set(NOT_COPIED) == set(copied), "update warmupd/state/copy_tables.py"
    for name, cols in copied.items():
        assert sorted(columns[name]) == sorted(cols), f"{name}: update warmupd/state/copy_tables.py"


def test_the_copy_lists_describe_this_schema(tmp_path: Path) -> None:
    async def go() -> dict[str, list[str]]:
        async with SqliteDatabase(tmp_path / "w.db") as db:
            tables = await db.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
            return {
                t["name"]: [c["name"] for c in await db.fetchall(f"PRAGMA table_info({t['name']})")]
                for t in tables
            }

    assert COPY_SCHEMA_VERSION == SCHEMA_VERSION
    assert_lists_match(asyncio.run(go()))


def test_a_copy_into_an_existing_state_updates_keeps_and_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = tmp_path / "a.db", tmp_path / "b.db"
    run_admin(lambda: seed(source))

    async def prepare_target() -> int:
        async with SqliteDatabase(target) as db:
            # Only the target has it: kept. A later fire than the source's: never moved back.
            await ComparisonStore(db).upsert(
                Comparison(slug="only-here", term_a="x", term_b="y", timeframe="t", series=()), NOW
            )
            await ScheduleStore(db).save("housekeeping", NOW, NOW + 1)
            return await CacheStore(db).state_version()

    version_before = run_admin(prepare_target)
    assert main(["copy-state", "--from", str(source), "--to", f"sqlite://{target}"]) == 0
    out = capsys.readouterr().out
    assert "comparisons: 3 copied, 3 new, 0 updated" in out
    assert "schedule state: 2 copied, 1 new, 0 updated" in out

    async def change_source() -> None:
        async with SqliteDatabase(source) as db:
            await ComparisonStore(db).add_views("tea-vs-coffee", 1, NOW + 99)

    run_admin(change_source)
    assert main(["copy-state", "--from", str(source), "--to", str(target)]) == 0
    assert "comparisons: 3 copied, 0 new, 1 updated" in capsys.readouterr().out

    async def check_target() -> None:
        async with SqliteDatabase(target) as db:
            assert await ComparisonStore(db).get("only-here") is not None
            assert await ScheduleStore(db).load("housekeeping") == (NOW, NOW + 1)
            assert await ScheduleStore(db).load("warmup-forecasts") == (
                NOW - 60_000,
                NOW + 86_400_000,
            )
            tea = await ComparisonStore(db).get("tea-vs-coffee")
            assert tea is not None
            assert tea.last_visited_ms == NOW + 99
            # What a daemon's read snapshot checks moved on, and the copy is behind it.
            version, found = await CacheStore(db).read_comparisons(
                ["apple-vs-pear"], NOW, values=False
            )
            assert version > version_before
            assert len(found["apple-vs-pear"][1]) == 2

    run_admin(check_target)


def test_another_run_under_a_copied_id_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = tmp_path / "a.db", tmp_path / "b.db"
    run_admin(lambda: seed(source))

    async def other_history() -> None:
        async with SqliteDatabase(target) as db:
            await RunStore(db).start("warmup-forecasts", Trigger.CLI, "elsewhere:9:cc", NOW - 5, {})

    run_admin(other_history)
    assert main(["copy-state", "--from", str(source), "--to", str(target)]) == 1
    err = capsys.readouterr().err
    assert "another run under id 1" in err
    assert "node=elsewhere:9:cc" in err
    assert "Traceback" not in err
    assert dump_of(SqliteDatabase(target))["comparisons"] == []  # refused before anything else


def test_live_daemons_on_the_target_refuse_the_copy_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = tmp_path / "a.db", tmp_path / "b.db"
    run_admin(lambda: seed(source))

    async def heartbeats() -> None:
        now = int(time.time() * 1000)
        for path, node in ((target, "b-host:7:dd"), (source, "a-host:8:ee")):
            async with SqliteDatabase(path) as db:
                await NodeStore(db).heartbeat(node, now)

    run_admin(heartbeats)
    assert main(["copy-state", "--from", str(source), "--to", str(target)]) == 1
    err = capsys.readouterr().err
    assert "1 warmupd daemon(s) are running on" in err
    assert "b-host:7:dd" in err
    assert "--force" in err
    assert main(["copy-state", "--from", str(source), "--to", str(target), "--force"]) == 0
    captured = capsys.readouterr()
    assert "warning: 1 daemon(s) look live on" in captured.err
    assert "a-host:8:ee" in captured.err
    assert "comparisons: 3 copied, 3 new" in captured.out


def test_a_progress_bar_on_a_terminal_and_only_counts_without(tmp_path: Path) -> None:
    source = tmp_path / "a.db"

    async def many() -> None:
        async with SqliteDatabase(source) as db:
            await load_demo_data(db, count=2500, seed=3, now_ms=NOW)

    run_admin(many)
    target = tmp_path / "b.db"
    primary, replica = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "warmupd", "copy-state", "--from", str(source), "--to", str(target)],
        stdout=subprocess.PIPE,
        stderr=replica,
        text=True,
    )
    os.close(replica)
    seen = b""
    while True:
        ready, _, _ = select.select([primary], [], [], 30)
        assert ready, "no output from copy-state within 30 s"
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # EIO: the terminal's last writer is gone
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=30)
    os.close(primary)
    assert proc.returncode == 0
    screen = seen.decode()
    assert "\rcomparisons     [----" in screen
    assert "] 1,000/2,500" in screen
    assert "\rcomparisons     [##############################] 2,500/2,500\r\n" in screen
    assert "\rcache entries   [##############################] 0/0\r\n" in screen
    assert "comparisons: 2,500 copied, 2,500 new, 0 updated\n" in out

    plain = cli("--from", str(source), "--to", str(tmp_path / "c.db"))
    assert plain.returncode == 0
    assert plain.stderr == ""
    assert plain.stdout.splitlines()[1] == "comparisons: 2,500 copied, 2,500 new, 0 updated"


def make_v2(path: Path) -> None:
    conn = sqlite3.connect(path)
    for sql in (s for step in MIGRATIONS[:2] for s in step):
        conn.execute(sql)
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()


def make_newer(path: Path) -> None:
    run_admin(lambda: seed(path))
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("same-file", 2, "--from and --to name the same database"),
        ("same-url", 2, "--from and --to name the same database"),
        ("missing-file", 2, "--from: no such file"),
        ("bad-port", 2, "--to: invalid port (must be 1-65535)"),
        ("bad-scheme", 2, "--to: unsupported URL 'mysql://root:***@db/warmupd'"),
        ("relative-sqlite-url", 2, "--to: a sqlite URL takes an absolute path"),
        ("unreachable", 1, "cannot connect to postgresql://postgres@127.0.0.1:1/warmupd"),
        ("no-schema", 1, "holds no warmupd state (no warmupd schema)"),
        ("not-a-database", 1, "cannot open"),
        ("older-source", 1, f"has schema version 2, this warmupd {SCHEMA_VERSION}: migrate it"),
        ("newer-source", 2, f"schema version {SCHEMA_VERSION + 1}, newer than"),
        ("newer-target", 2, f"schema version {SCHEMA_VERSION + 1}, newer than"),
    ],
)
def test_bad_input_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, code: int, message: str
) -> None:
    state = tmp_path / "state.db"
    pg = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/warmupd"
    argv = {
        "same-file": (str(state), f"sqlite://{state}"),
        "same-url": (pg, "postgres://postgres@127.0.0.1:1/warmupd"),
        "missing-file": (str(tmp_path / "nope.db"), str(state)),
        "bad-port": (str(state), f"postgresql://postgres:{PASSWORD}@127.0.0.1:99999/w"),
        "bad-scheme": (str(state), f"mysql://root:{PASSWORD}@db/warmupd"),
        "relative-sqlite-url": (str(state), "sqlite://var/warmupd.db"),
        "unreachable": (pg, str(state)),
        "no-schema": (str(state), str(tmp_path / "t.db")),
        "not-a-database": (str(state), str(tmp_path / "t.db")),
        "older-source": (str(state), str(tmp_path / "t.db")),
        "newer-source": (str(state), str(tmp_path / "t.db")),
        "newer-target": (str(tmp_path / "s.db"), str(state)),
    }[case]
    if case == "no-schema":
        sqlite3.connect(state).execute("CREATE TABLE other(x)").connection.close()
    elif case == "not-a-database":
        state.write_text("name,value\n" * 500)
    elif case == "older-source":
        make_v2(state)
    elif case in ("newer-source", "newer-target"):
        make_newer(state)
        run_admin(lambda: seed(tmp_path / "s.db"))
    assert main(["copy-state", "--from", argv[0], "--to", argv[1]]) == code
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err
    assert PASSWORD not in captured.out + captured.err
    assert not (tmp_path / "nope.db").exists()  # a missing source is never created
    assert not (tmp_path / "t.db").exists()  # a refused source leaves the target alone


def test_the_command_line_refuses_an_unreachable_target_without_a_traceback(tmp_path: Path) -> None:
    source = tmp_path / "a.db"
    run_admin(lambda: seed(source))
    result = cli("--from", str(source), "--to", f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/w")
    assert result.returncode == 1
    assert result.stderr.startswith(
        "warmupd: cannot connect to postgresql://postgres@127.0.0.1:1/w"
    )
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_the_configured_database_lends_its_password(tmp_path: Path) -> None:
    cfg = DatabaseConfig(
        url="postgresql://warmupd@DB.example/warmupd",
        password="from-credential",
        connect_timeout_ms=9000,
    )
    same = parse_location("--to", "postgres://warmupd@db.example:5432/warmupd")
    assert connection_secrets(same, lambda: cfg) == ("from-credential", 9000)
    other = parse_location("--to", "postgresql://warmupd@db.example/other")
    assert connection_secrets(other, lambda: cfg) == (None, 5000)
    own = parse_location("--to", "postgresql://warmupd:its-own@db.example/warmupd")
    assert connection_secrets(own, lambda: cfg) == ("its-own", 5000)
    assert "its-own" not in repr(own) + own.shown

    def must_not_load() -> DatabaseConfig:
        raise AssertionError("the config is loaded only for a URL without a password")

    assert connection_secrets(own, must_not_load) == ("its-own", 5000)
