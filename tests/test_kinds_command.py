"""kind = "command": real subprocesses — exit codes, output tails, env, timeouts, shutdown, no orphans."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.kinds_support import CHILD, group_gone, pid_alive, wait_for_file
from tests.site_fakes import kinds_config
from warmupd.clock import SystemClock
from warmupd.config import parse_config
from warmupd.jobs.kinds.command import CommandJob, describe_status
from warmupd.jobs.runner import JobRunner
from warmupd.locks.sqlite import SqliteLocks
from warmupd.models import RunRecord, RunStatus, Trigger
from warmupd.state.runs import RunStore
from warmupd.state.sqlite import SqliteDatabase


@dataclass
class World:
    db: SqliteDatabase
    tmp: Path

    def runner(
        self, table: dict[str, Any], *, kill_grace_s: float = 10.0
    ) -> tuple[JobRunner, CommandJob]:
        cfg = parse_config(
            kinds_config("nightly", {"kind": "command", "schedule": "@daily", **table}), env={}
        )
        clock = SystemClock()
        job = CommandJob("nightly", clock=clock, shutdown_grace_s=5, kill_grace_s=kill_grace_s)
        runner = JobRunner(
            jobs={"nightly": job},
            config=lambda: cfg,
            locks=SqliteLocks(self.db, clock, "test:1:aaaaaa"),
            runs=RunStore(self.db),
            clock=clock,
            node="test:1:aaaaaa",
        )
        return runner, job

    async def run(self, table: dict[str, Any], **kw: Any) -> tuple[RunRecord, CommandJob]:
        runner, job = self.runner(table, **kw)
        return await (await runner.trigger("nightly", Trigger.CLI)).wait(), job

    def child(self, *args: str) -> list[str]:
        return [sys.executable, str(CHILD), str(self.tmp), *args]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with SqliteDatabase(tmp_path / "w.db") as db:
        yield World(db, tmp_path)


async def test_exit_0_is_success_with_the_stdout_tail(world: World) -> None:
    record, job = await world.run({"command": world.child("print-many")})
    assert record.status is RunStatus.SUCCESS
    assert (record.processed, record.failed) == (1, 0)
    tail = record.metadata["stdoutTail"]
    assert tail.endswith("line 99999\n")
    assert 60_000 < len(tail.encode()) <= 64 * 1024  # the last 64 KiB, not the whole output
    assert record.metadata["exitCode"] == 0
    assert await group_gone(job.pgids[0])


async def test_exit_3_fails_with_the_last_stderr_line(world: World) -> None:
    record, _ = await world.run({"command": world.child("exit", "3")})
    assert record.status is RunStatus.FAILED
    assert record.errors == ("exit status 3: cannot warm: upstream said no",)
    assert record.metadata["stderrTail"].endswith("cannot warm: upstream said no\n")
    record, _ = await world.run({"command": world.child("exit", "3"), "success_exit_codes": [0, 3]})
    assert record.status is RunStatus.SUCCESS


async def test_env_and_warmupd_variables_reach_the_child_and_nothing_else(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAEMON_ONLY_SECRET", "must-not-leak")
    record, _ = await world.run(
        {"command": world.child("env"), "env": {"TARGET": "eu-west"}, "working_dir": str(world.tmp)}
    )
    assert record.status is RunStatus.SUCCESS
    env = dict(line.split("=", 1) for line in record.metadata["stdoutTail"].splitlines())
    assert env["TARGET"] == "eu-west"
    assert env["WARMUPD_RUN_ID"] == str(record.id)
    assert env["WARMUPD_JOB"] == "nightly"
    assert env["WARMUPD_TRIGGER"] == "cli"
    assert env["WARMUPD_FIRE_TIME"].endswith("Z")
    assert env["CWD"] == str(world.tmp)
    assert "DAEMON_ONLY_SECRET" not in env
    assert set(env) <= {
        "PATH", "LANG", "TARGET", "CWD", "LC_CTYPE",
        "WARMUPD_RUN_ID", "WARMUPD_JOB", "WARMUPD_TRIGGER", "WARMUPD_FIRE_TIME",
    }  # fmt: skip


async def test_no_shell_and_a_missing_program_fail_clearly(world: World) -> None:
    record, _ = await world.run({"command": ["echo $HOME; true"]})
    assert record.status is RunStatus.FAILED
    assert record.errors[0].startswith("exit status 127: warmupd: cannot run 'echo $HOME; true'")
    record, _ = await world.run({"command": ["true"], "working_dir": str(world.tmp / "nope")})
    assert record.errors[0].startswith("cannot start: No such file or directory")


async def test_timeout_sends_term_then_kill_and_leaves_no_process_of_the_group(
    world: World,
) -> None:
    record, job = await world.run(
        {"command": world.child("stubborn"), "max_duration": "1s"}, kill_grace_s=0.3
    )
    assert record.status is RunStatus.FAILED
    assert record.errors == ("timed out after 1s (max_duration)",)
    assert "got SIGTERM, ignoring it" in record.metadata["stdoutTail"]
    assert record.metadata["exitCode"] == -9  # TERM was ignored: the group needed KILL
    grandchild = int((world.tmp / "grandchild.pid").read_text())
    assert await group_gone(job.pgids[0])
    assert not pid_alive(grandchild)


async def test_a_command_that_stops_on_term_ends_with_it(world: World) -> None:
    record, job = await world.run({"command": world.child("polite"), "max_duration": "1s"})
    assert record.errors == ("timed out after 1s (max_duration)",)
    assert record.metadata["exitCode"] == -15
    assert "got SIGTERM, leaving" in record.metadata["stdoutTail"]
    assert await group_gone(job.pgids[0])


async def test_what_the_command_leaves_running_is_killed_when_it_exits(world: World) -> None:
    record, job = await world.run({"command": world.child("leave-behind")})
    assert record.status is RunStatus.SUCCESS
    assert await group_gone(job.pgids[0])


async def test_shutdown_terms_the_group_at_once_and_the_run_is_cancelled(world: World) -> None:
    runner, job = world.runner({"command": world.child("polite")})
    handle = await runner.trigger("nightly", Trigger.SCHEDULE)
    await wait_for_file(world.tmp / "ready")
    await runner.shutdown(grace_s=30)
    record = await handle.wait()
    assert (record.status, record.reason) == (RunStatus.CANCELLED, "shutdown")
    assert await group_gone(job.pgids[0])
    assert (world.tmp / "got-term").exists()


async def test_shutdown_kills_a_group_that_ignores_term_after_the_grace(world: World) -> None:
    runner, job = world.runner({"command": world.child("stubborn")})
    job.shutdown_grace_s = 0.3
    handle = await runner.trigger("nightly", Trigger.SCHEDULE)
    await wait_for_file(world.tmp / "grandchild.pid")
    await runner.shutdown(grace_s=30)
    record = await handle.wait()
    assert (record.status, record.reason) == (RunStatus.CANCELLED, "shutdown")
    assert await group_gone(job.pgids[0])


def test_describe_status() -> None:
    assert describe_status(2) == "exit status 2"
    assert describe_status(-15) == "killed by signal SIGTERM"
    assert describe_status(-99) == "killed by signal 99"


async def test_a_command_killed_from_outside_reports_the_signal(world: World) -> None:
    runner, _ = world.runner({"command": world.child("polite")})
    handle = await runner.trigger("nightly", Trigger.CLI)
    await wait_for_file(world.tmp / "ready")
    os.kill(int((world.tmp / "child.pid").read_text()), 15)
    record = await handle.wait()
    assert record.status is RunStatus.FAILED
    assert record.errors == ("killed by signal SIGTERM",)
