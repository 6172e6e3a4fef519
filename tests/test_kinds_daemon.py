"""Both job kinds in the real daemon: the API, the run log, metrics, 429s, `warmupd run`, signals.

The same checks the built-in jobs get, parameterised over ``kind = "http"`` and ``kind =
"command"``; a loopback site in a thread plays the web, real subprocesses play the commands.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_support import DaemonProcess, wait_until
from tests.kinds_support import CHILD, ThreadSite, group_members, kill_group
from tests.lock_support import worker_env

pytestmark = pytest.mark.slow

KINDS = ["http", "command"]
NEVER = "0 0 1 1 *"  # only when triggered (next fire months away)
TOKEN = "Bearer warm-7c1e5a9d3b2f4e6a"


@pytest.fixture
def site() -> Iterator[ThreadSite]:
    served = ThreadSite()
    yield served
    served.close()


def kind_job(kind: str, site: ThreadSite, tmp: Path, mode: str = "ok") -> dict[str, Any]:
    """A job of ``kind``: ``ok`` succeeds, ``block`` stays running until released, ``fail`` fails."""
    if kind == "http":
        paths = {"ok": ["/a", "/b", "/c"], "block": ["/a", "/block"], "fail": ["/fail"]}[mode]
        return {"kind": "http", "schedule": NEVER, "urls": [site.url(p) for p in paths]}
    args = {"ok": ["exit", "0"], "block": ["wait-for", str(tmp / "go")], "fail": ["exit", "3"]}
    return {
        "kind": "command",
        "schedule": NEVER,
        "command": [sys.executable, str(CHILD), str(tmp), *args[mode]],
    }


def release(kind: str, site: ThreadSite, tmp: Path) -> None:
    if kind == "http":
        site.release()
    else:
        (tmp / "go").write_text("go")


def started(kind: str, site: ThreadSite, tmp: Path) -> bool:
    return site.blocked.is_set() if kind == "http" else (tmp / "ready").exists()


def start(
    tmp: Path, daemons: list[DaemonProcess], jobs: dict[str, Any], **kw: Any
) -> DaemonProcess:
    daemon = DaemonProcess(tmp, "d", {"jobs": jobs}, **kw)
    daemons.append(daemon.start())
    return daemon


@pytest.mark.parametrize("kind", KINDS)
def test_post_runs_it_the_run_log_and_metrics_show_it(
    kind: str, tmp_path: Path, daemons: list[DaemonProcess], site: ThreadSite
) -> None:
    daemon = start(tmp_path, daemons, {"mine": kind_job(kind, site, tmp_path)})
    status, record = daemon.trigger("mine", wait=True)
    assert status == 200, record
    assert (record["job"], record["status"], record["trigger"]) == ("mine", "success", "http")
    if kind == "http":
        assert record["processed"] == 3
        assert record["metadata"]["urls"] == 3
        assert dict(site.hits) == {"/a": 1, "/b": 1, "/c": 1}
    else:
        assert record["processed"] == 1
        assert record["metadata"]["exitCode"] == 0
        assert record["metadata"]["stdoutTail"] == "starting\n"
    status, body, _ = daemon.request("GET", "/api/jobs/runs?job=mine")
    assert [r["id"] for r in body["runs"]] == [record["id"]]
    status, body, _ = daemon.request("GET", f"/api/jobs/runs/{record['id']}")
    assert body["status"] == "success"

    def listed() -> dict[str, Any] | None:
        jobs = {j["name"]: j for j in daemon.request("GET", "/api/jobs")[1]["jobs"]}
        # nextRunAt is null until the scheduler has loaded the job's state.
        return jobs["mine"] if jobs["mine"]["nextRunAt"] else None

    jobs = {"mine": wait_until(listed)}
    assert jobs["mine"]["schedule"] == NEVER
    assert jobs["mine"]["nextRunAt"].endswith("-01-01T00:00:00.000Z")
    assert jobs["mine"]["lastRun"]["id"] == record["id"]
    text = daemon.request("GET", "/metrics")[1]
    assert 'warmupd_job_runs_total{job_name="mine",status="success"} 1' in text
    processed = 3 if kind == "http" else 1
    assert f'warmupd_job_items_total{{job_name="mine",result="processed"}} {processed}' in text
    assert 'warmupd_job_running{job_name="mine"} 0' in text
    assert 'warmupd_scheduler_next_run_timestamp_seconds{job_name="mine"}' in text
    assert daemon.stop() == 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_trigger_while_it_runs_is_429_already_running(
    kind: str, tmp_path: Path, daemons: list[DaemonProcess], site: ThreadSite
) -> None:
    daemon = start(tmp_path, daemons, {"mine": kind_job(kind, site, tmp_path, "block")})
    status, body = daemon.trigger("mine")
    assert status == 202, body
    run_id = body["runId"]
    wait_until(lambda: started(kind, site, tmp_path))
    status, body, headers = daemon.request(
        "POST", "/api/jobs/mine", headers={"X-Job-Secret": daemon.env["JOB_SECRET"]}
    )
    assert status == 429
    assert body["error"] == "already_running"
    assert body["runId"] == run_id
    assert "Retry-After" in headers
    release(kind, site, tmp_path)
    finished = wait_until(
        lambda: (
            (r := daemon.request("GET", f"/api/jobs/runs/{run_id}")[1])["status"] != "running" and r
        )
    )
    assert finished["status"] == "success"
    runs = daemon.request("GET", "/api/jobs/runs?job=mine")[1]["runs"]
    assert [(r["status"], r["reason"]) for r in runs] == [
        ("skipped", "already_running"),
        ("success", None),
    ] or [(r["status"], r["reason"]) for r in runs] == [
        ("success", None),
        ("skipped", "already_running"),
    ]
    assert daemon.stop() == 0


@pytest.mark.parametrize("kind", KINDS)
def test_warmupd_run_runs_it_in_the_foreground(kind: str, tmp_path: Path, site: ThreadSite) -> None:
    jobs = {"good": kind_job(kind, site, tmp_path), "bad": kind_job(kind, site, tmp_path, "fail")}
    daemon = DaemonProcess(tmp_path, "cli", {"jobs": jobs})  # config only: nothing is started

    def run(job: str) -> tuple[int, dict[str, Any]]:
        proc = subprocess.run(
            [sys.executable, "-m", "warmupd", "run", job, "-c", str(daemon.config_path), "--json"],
            capture_output=True,
            text=True,
            env=worker_env(),
            timeout=60,
        )
        return proc.returncode, json.loads(proc.stdout)

    code, record = run("good")
    assert (code, record["status"], record["trigger"]) == (0, "success", "cli")
    code, record = run("bad")
    assert (code, record["status"]) == (1, "failed")
    expected = (
        f"{site.url('/fail')}: HTTP 500"
        if kind == "http"
        else ("exit status 3: cannot warm: upstream said no")
    )
    assert record["errors"] == [expected]


def test_daemon_sigterm_during_a_command_ends_its_group_and_cancels_the_run(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    job = {
        "kind": "command",
        "schedule": NEVER,
        "command": [sys.executable, str(CHILD), str(tmp_path), "spawn-and-wait"],
    }
    daemon = start(tmp_path, daemons, {"mine": job})
    status, body = daemon.trigger("mine")
    assert status == 202
    pgid = int(
        wait_until(lambda: (tmp_path / "ready").exists() and (tmp_path / "ready").read_text())
    )
    assert len(group_members(pgid)) >= 3  # shim, command, grandchild
    daemon.send(signal.SIGTERM)
    try:
        assert daemon.wait_exit() == 0
        wait_until(lambda: group_members(pgid) == [], timeout_s=10)
    finally:
        kill_group(pgid)
    runs = daemon_runs(daemon.db_path)
    assert (runs[body["runId"]]["status"], runs[body["runId"]]["reason"]) == (
        "cancelled",
        "shutdown",
    )


def test_kill_9_of_the_daemon_leaves_no_orphan(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    job = {
        "kind": "command",
        "schedule": NEVER,
        "command": [sys.executable, str(CHILD), str(tmp_path), "spawn-and-wait"],
    }
    daemon = start(tmp_path, daemons, {"mine": job})
    assert daemon.trigger("mine")[0] == 202
    pgid = int(
        wait_until(lambda: (tmp_path / "ready").exists() and (tmp_path / "ready").read_text())
    )
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    assert grandchild in group_members(pgid)
    daemon.kill()
    try:
        # The kernel tells the shim its parent died; the shim takes the whole group down.
        wait_until(lambda: group_members(pgid) == [], timeout_s=10)
    finally:
        kill_group(pgid)  # if the test failed, leave nothing running either


def test_headers_env_value_is_sent_and_appears_nowhere(
    tmp_path: Path, daemons: list[DaemonProcess], site: ThreadSite
) -> None:
    job = {
        "kind": "http",
        "schedule": NEVER,
        "urls": [site.url("/a"), site.url("/fail")],
        "headers_env": {"Authorization": "CDN_TOKEN"},
    }
    daemon = start(tmp_path, daemons, {"mine": job}, env={"CDN_TOKEN": TOKEN})
    status, record = daemon.trigger("mine", wait=True)
    assert status == 200
    assert (record["processed"], record["failed"]) == (1, 1)
    assert {h.get("Authorization") for h in site.headers} == {TOKEN}
    seen = [json.dumps(record)]
    for path in ("/api/status", "/api/jobs", "/api/jobs/runs", "/metrics"):
        seen.append(json.dumps(daemon.request("GET", path)[1]))
    assert daemon.stop() == 0
    seen.append(daemon.logs())
    assert "run.finished" in seen[-1]
    assert not [s for s in seen if TOKEN in s]
    for path in daemon.state_dir.glob("warmupd.db*"):
        assert TOKEN.encode() not in path.read_bytes()


def daemon_runs(db_path: Path) -> dict[int, dict[str, Any]]:
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        return {r["id"]: dict(r) for r in conn.execute("SELECT * FROM job_runs")}
    finally:
        conn.close()
