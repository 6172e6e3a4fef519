"""Pause/resume through the real daemon (SPEC §15): a paused job's fires are recorded skipped/paused,
a manual trigger still runs, resume restores the schedule, and the state survives a restart and is
shared by two daemons on one state file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.daemon_support import JOB_SECRET, DaemonProcess, wait_until

pytestmark = pytest.mark.slow

EVERY_SECOND = {"jobs": {"housekeeping": {"schedule": "* * * * * *", "misfire_grace": "1h"}}}
AUTH = {"X-Job-Secret": JOB_SECRET}


def runs(d: DaemonProcess, **query: str) -> list[dict[str, Any]]:
    q = "&".join(f"{k}={v}" for k, v in {"job": "housekeeping", **query}.items())
    status, body, _ = d.request("GET", f"/api/jobs/runs?{q}")
    assert status == 200, body
    return list(body["runs"])


def housekeeping(d: DaemonProcess) -> dict[str, Any]:
    _, body, _ = d.request("GET", "/api/jobs")
    return next(j for j in body["jobs"] if j["name"] == "housekeeping")


def test_pause_skips_fires_manual_runs_resume_restart_and_fleet(tmp_path: Path) -> None:
    state = tmp_path / "state"
    a = DaemonProcess(tmp_path, "a", EVERY_SECOND, state_dir=state).start()
    b = DaemonProcess(tmp_path, "b", EVERY_SECOND, state_dir=state)
    try:
        assert a.request("POST", "/api/jobs/housekeeping/pause")[0] == 401
        status, body, _ = a.request("POST", "/api/jobs/housekeeping/pause", headers=AUTH)
        assert (status, body["paused"]) == (200, True)
        assert housekeeping(a)["paused"] is True
        first = max((r["id"] for r in runs(a)), default=0)
        paused = wait_until(
            lambda: [
                r for r in runs(a, status="skipped") if r["id"] > first and r["reason"] == "paused"
            ],
            timeout_s=20,
        )
        assert paused[0]["trigger"] == "schedule"
        assert paused[0]["metadata"]["dueAt"] > 0

        # A manual trigger still runs.
        status, record = a.trigger("housekeeping", wait=True)
        assert (status, record["status"], record["trigger"]) == (200, "success", "http")

        # Restart: still paused. A second daemon on the same state sees it too.
        a.stop()
        a.start()
        assert housekeeping(a)["paused"] is True
        b.start()
        assert housekeeping(b)["paused"] is True

        # Resumed through the other daemon: both see it, and scheduled fires run again.
        status, body, _ = b.request("POST", "/api/jobs/housekeeping/resume", headers=AUTH)
        assert (status, body["paused"]) == (200, False)
        assert housekeeping(a)["paused"] is False
        mark = max(r["id"] for r in runs(a))
        wait_until(
            lambda: [
                r
                for r in runs(a, status="success")
                if r["id"] > mark and r["trigger"] in ("schedule", "startup")
            ],
            timeout_s=20,
        )
    finally:
        b.stop()
        a.stop()


def test_make_run_generates_secrets_prints_them_once_and_they_work(tmp_path: Path) -> None:
    """``warmupd serve --demo-secrets`` (what ``make run`` runs) with no secret in the environment."""
    import os
    import re
    import signal
    import subprocess
    import sys

    from tests.lock_support import worker_env

    d = DaemonProcess(tmp_path, "demo")
    env = {k: v for k, v in worker_env().items() if k not in ("JOB_SECRET", "WARMUP_SECRET")}
    stderr = (tmp_path / "stderr.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "warmupd", "serve", "-c", str(d.config_path), "--demo-secrets"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        text=True,
    )
    d.proc = proc  # type: ignore[assignment]
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(4)]
        assert banner[0].strip() == f"warmupd dashboard: {d.url}/ui"
        job = re.search(r"job secret \(.*\): (\S+)", banner[1])
        warmup = re.search(r"warmup secret \(.*\): (\S+)", banner[2])
        assert job
        assert warmup
        assert len(job.group(1)) >= 24
        assert job.group(1) != warmup.group(1)
        d.wait_healthy()
        status, body, _ = d.request(
            "POST", "/api/jobs/housekeeping?wait=true", headers={"X-Job-Secret": job.group(1)}
        )
        assert (status, body["status"]) == (200, "success")
        status, _, _ = d.request(
            "POST", "/api/jobs/housekeeping", headers={"X-Job-Secret": warmup.group(1)}
        )
        assert status == 401
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        stderr.close()
        if proc.stdout is not None:
            proc.stdout.close()
    log = (tmp_path / "stderr.log").read_text()
    assert job.group(1) not in log
    assert warmup.group(1) not in log


def test_without_the_demo_flag_an_unset_secret_still_fails_closed(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path, "prod", env={"JOB_SECRET": "", "WARMUP_SECRET": ""}).start()
    try:
        status, body, _ = d.request("POST", "/api/jobs/housekeeping/pause", headers=AUTH)
        assert (status, body["error"]) == (503, "secret_not_configured")
    finally:
        d.stop()
