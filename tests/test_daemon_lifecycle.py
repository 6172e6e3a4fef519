"""The real daemon as a subprocess: sd_notify, SIGTERM drain, kill -9 recovery, SIGHUP reload."""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.daemon_support import (
    DaemonProcess,
    NotifyListener,
    load_demo,
    wait_until,
)
from warmupd.clock import SystemClock
from warmupd.locks.sqlite import SqliteLocks
from warmupd.models import Acquired
from warmupd.state.sqlite import SqliteDatabase

pytestmark = pytest.mark.slow


def slow_ai(url: str) -> dict[str, object]:
    return {
        "ai": {"provider": "openai", "base_url": url, "model": "test-model", "timeout": "60s"},
        "locks": {"lease": "3s"},
    }


def run_row(db_path: Path, run_id: int) -> sqlite3.Row:
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM job_runs WHERE id = ?", (run_id,)).fetchone()
    finally:
        conn.close()


def test_sd_notify_sequence(tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    listener = NotifyListener(tmp_path / "notify.sock")
    try:
        daemon = DaemonProcess(
            tmp_path, "notify", env={"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "200000"}
        )
        daemons.append(daemon.start())
        wait_until(lambda: listener.seen("READY=1"))
        wait_until(lambda: listener.seen("WATCHDOG=1"))
        daemon.send(signal.SIGHUP)
        wait_until(lambda: sum(m.startswith("READY=1") for m in listener.messages) >= 2)
        daemon.send(signal.SIGTERM)
        assert daemon.wait_exit() == 0
        time.sleep(0.3)  # let the listener thread drain the socket
    finally:
        listener.close()
    ordered = [m for m in listener.messages if not m.startswith("WATCHDOG=1")]
    kinds = [m.split("=", 1)[0] for m in ordered]
    first_ready = kinds.index("READY")
    # STATUS= travels in the READY=1 datagram itself: right from READY it names the next fire
    # (it used to say "idle; nothing scheduled" until the first heartbeat, 10 s later).
    assert re.match(r"READY=1\nSTATUS=idle; next \S+ \S+Z$", ordered[first_ready]), ordered
    reloading = kinds.index("RELOADING")
    assert reloading > first_ready
    assert re.search(r"^RELOADING=1\nMONOTONIC_USEC=\d+$", ordered[reloading])
    assert "READY" in kinds[reloading + 1 :]
    assert kinds[-1] == "STOPPING" or "STOPPING" in kinds[reloading + 1 :]
    assert kinds.index("STOPPING", reloading) > kinds.index("READY", reloading + 1)
    # A reload's READY=1 carries the status line too.
    after_reload = next(m for m in ordered[reloading + 1 :] if m.startswith("READY=1"))
    assert "\nSTATUS=idle; next " in after_reload


def test_sigterm_during_a_run_cancels_it_and_frees_the_lock(
    tmp_path: Path, daemons: list[DaemonProcess], blackhole: str
) -> None:
    daemon = DaemonProcess(tmp_path, "term", slow_ai(blackhole))
    load_demo(daemon)
    daemons.append(daemon.start())
    status, body = daemon.trigger("warmup-ai-explanations")
    assert status == 202, body
    run_id = body["runId"]
    wait_until(lambda: daemon.request("GET", "/api/status")[1]["onDemand"] is not None)
    time.sleep(0.3)  # items are now waiting on the AI server that never answers
    started = time.monotonic()
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit(timeout_s=15) == 0
    assert time.monotonic() - started < 2 + 2  # shutdown_grace (2 s) + 2 s
    row = run_row(daemon.db_path, run_id)
    assert (row["status"], row["reason"]) == ("cancelled", "shutdown")
    assert "cancelled" in row["errors"]

    async def take_lock() -> object:
        async with SqliteDatabase(daemon.db_path) as db:
            return await SqliteLocks(db, SystemClock(), "other:1:abcdef").acquire(
                "warmup:ai-explanations:lock", 3_000
            )

    assert isinstance(asyncio.run(take_lock()), Acquired)
    assert "daemon.state" in daemon.logs()


def test_kill_9_then_restart_marks_abandoned_and_recovers(
    tmp_path: Path, daemons: list[DaemonProcess], blackhole: str
) -> None:
    daemon = DaemonProcess(tmp_path, "crash", slow_ai(blackhole))
    load_demo(daemon)
    daemons.append(daemon.start())
    status, body = daemon.trigger("warmup-ai-explanations")
    assert status == 202
    run_id = body["runId"]
    time.sleep(0.3)
    daemon.kill()
    conn = sqlite3.connect(daemon.db_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    # Restart with the builtin explainer: the next run must succeed once the dead lease expires.
    daemon.write_config({**daemon.config, "ai": {"provider": "builtin"}, "locks": {"lease": "3s"}})
    daemon.start()
    assert run_row(daemon.db_path, run_id)["status"] == "abandoned"

    def next_run() -> dict[str, object] | None:
        code, record = daemon.trigger("warmup-ai-explanations", wait=True)
        return record if code == 200 else None

    record = wait_until(next_run, timeout_s=15, interval_s=0.5)
    assert record["status"] == "success"
    assert record["processed"] >= 1
    assert daemon.stop() == 0


def test_sighup_applies_a_valid_schedule_and_rejects_an_invalid_one(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    daemon = DaemonProcess(tmp_path, "hup")
    daemons.append(daemon.start())

    def next_run(job: str) -> str:
        jobs = daemon.request("GET", "/api/jobs")[1]["jobs"]
        return next(j for j in jobs if j["name"] == job)["nextRunAt"]

    # nextRunAt is null until the scheduler has loaded its state, which can come after /healthz.
    before = wait_until(lambda: next_run("housekeeping"))
    assert before.endswith(":17:00.000Z")
    changed = {**daemon.config}
    changed["jobs"] = {**changed["jobs"], "housekeeping": {"schedule": "43 * * * *"}}
    daemon.write_config(changed)
    daemon.send(signal.SIGHUP)
    wait_until(lambda: next_run("housekeeping").endswith(":43:00.000Z"))
    broken = {**changed, "jobs": {**changed["jobs"], "housekeeping": {"schedule": "0 25 * * *"}}}
    daemon.write_config(broken)
    daemon.send(signal.SIGHUP)
    wait_until(lambda: "config.reload_rejected" in daemon.logs())
    assert "jobs.housekeeping.schedule" in daemon.logs()
    assert next_run("housekeeping").endswith(":43:00.000Z")
    assert daemon.request("GET", "/healthz")[0] == 200
    assert daemon.stop() == 0
