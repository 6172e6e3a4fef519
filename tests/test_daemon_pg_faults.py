"""SPEC §14 "Faults": the real ``warmupd serve`` against a private PostgreSQL the test stops and starts.

Down at start: the daemon keeps trying, ``/healthz`` 200, ``/readyz`` 503 naming the database,
``STATUS=`` says so, ``READY=1`` only once connected and migrated. Lost while running: ``/readyz``
503, status ``degraded`` with the reason, API calls that need the database 503 ``unavailable``, the
run whose writes fail ends ``failed`` with a clear reason, the process stays up with no traceback.
Back again: everything resumes without a restart, missed fires coalesce (§4), nothing is lost.

The machine's PostgreSQL is never touched: :class:`~tests.pg_private.PrivatePostgres` runs one of
its own. Locks come from ``pg_lock_config``.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_support import (
    JOB_SECRET,
    DaemonProcess,
    NotifyListener,
    load_demo,
    wait_until,
)
from tests.lock_support import free_port
from tests.pg_private import PrivatePostgres

pytestmark = pytest.mark.slow

PASSWORD = "pg-Fault-Secret-9321"  # trust auth ignores it; it must never be shown
SERIES = [
    {"date": f"2025-{month:02d}-{day:02d}", "tea": 40 + month + day % 7, "coffee": 60 - month}
    for month in range(1, 13)
    for day in (1, 8, 15, 22)
]
J = {"X-Job-Secret": JOB_SECRET}


def with_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    user, _, host = rest.partition("@")
    return f"{scheme}://{user}:{PASSWORD}@{host}"


def metric(daemon: DaemonProcess, name: str) -> float | None:
    status, text, _ = daemon.request("GET", "/metrics")
    assert status == 200, text
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def readyz(daemon: DaemonProcess) -> int | None:
    """``/readyz``'s code; None for a connection reset in the instant the daemon hands its port
    from the waiting endpoints to the real application (one close and one bind)."""
    try:
        return daemon.request("GET", "/readyz")[0]
    except OSError:
        return None


def assert_clean_log(daemon: DaemonProcess) -> None:
    logs = daemon.logs()
    assert "Traceback" not in logs, logs
    assert PASSWORD not in logs


def test_database_down_at_start_is_waited_for_alive_but_not_ready(
    tmp_path: Path, daemons: list[DaemonProcess], pg_lock_config: dict[str, Any]
) -> None:
    server = PrivatePostgres()  # initialised, not started: the database is down at start
    listener = NotifyListener(tmp_path / "notify.sock")
    try:
        config = {"database": {"url": with_password(server.url()), "connect_timeout": "2s"}}
        daemon = DaemonProcess(
            tmp_path,
            "down",
            {**config, **pg_lock_config},
            env={"NOTIFY_SOCKET": str(listener.path)},
        )
        daemons.append(daemon.start())  # /healthz answers while the database is down

        status, body, _ = daemon.request("GET", "/readyz")
        assert status == 503, body
        assert body["status"] == "not_ready"
        assert f"cannot connect to {server.url()}" in body["db"], body  # names the database
        status, body, _ = daemon.request("GET", "/api/status")
        assert (status, body["error"]) == (503, "unavailable"), body
        assert "waiting for the state database" in body["message"]
        assert metric(daemon, "warmupd_database_up") == 0
        wait_until(lambda: listener.seen("STATUS=waiting for the state database"), timeout_s=10)
        assert not listener.seen("READY=1")
        assert "database.waiting" in daemon.logs()

        server.start()  # the next attempt (back-off 1 s doubling) connects and migrates
        wait_until(lambda: readyz(daemon) == 200, timeout_s=40)
        wait_until(lambda: listener.seen("READY=1"))
        assert metric(daemon, "warmupd_database_up") == 1
        status, doc, _ = daemon.request("GET", "/api/status")
        assert (status, doc["state"], doc["db"]["state"]) == (200, "ok", "up"), doc
        assert doc["db"]["schemaVersion"] >= 1  # migrated before READY=1
        body = {"terms": ["tea", "coffee"], "timeframe": "today 12-m", "series": SERIES}
        status, data, _ = daemon.request("PUT", "/api/comparisons/tea-vs-coffee", body, J)
        assert status == 201, data
        assert daemon.stop() == 0
        time.sleep(0.3)  # let the listener thread drain the socket
    finally:
        listener.close()
        server.cleanup()
    waiting = [m for m in listener.messages if "waiting for the state database" in m]
    first_ready = next(i for i, m in enumerate(listener.messages) if m.startswith("READY=1"))
    assert waiting, listener.messages
    assert listener.messages.index(waiting[0]) < first_ready  # READY=1 only after the wait
    # Each waiting STATUS= extends systemd's start timeout: a daemon that keeps trying is not
    # killed for a slow start (connect timeout 2 s + the retry + a 30 s margin).
    extend = re.search(r"EXTEND_TIMEOUT_USEC=(\d+)", waiting[0])
    assert extend is not None, waiting[0]
    assert int(extend.group(1)) == (1 + 2 + 30) * 1_000_000
    assert PASSWORD not in "".join(listener.messages)
    assert_clean_log(daemon)


def test_sigterm_while_waiting_for_the_database_exits_0(
    tmp_path: Path, daemons: list[DaemonProcess], pg_lock_config: dict[str, Any]
) -> None:
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/postgres"  # nobody listens
    daemon = DaemonProcess(tmp_path, "term", {"database": {"url": url}, **pg_lock_config})
    daemons.append(daemon.start())
    wait_until(lambda: "database.waiting" in daemon.logs())
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert_clean_log(daemon)


def test_database_lost_while_running_then_back_without_a_restart(
    tmp_path: Path,
    daemons: list[DaemonProcess],
    private_pg: PrivatePostgres,
    pg_lock_config: dict[str, Any],
) -> None:
    listener = NotifyListener(tmp_path / "notify.sock")
    config = {
        "database": {"url": with_password(private_pg.url()), "connect_timeout": "2s"},
        # Fires every 2 s: those due while the database is away coalesce into one run (§4).
        "jobs": {"housekeeping": {"schedule": "*/2 * * * * *"}},
        **pg_lock_config,
    }
    daemon = DaemonProcess(tmp_path, "lost", config, env={"NOTIFY_SOCKET": str(listener.path)})
    try:
        load_demo(daemon, count=60)
        daemons.append(daemon.start())
        wait_until(lambda: listener.seen("READY=1"))
        comparison = {"terms": ["tea", "coffee"], "timeframe": "today 12-m", "series": SERIES}
        status, data, _ = daemon.request("PUT", "/api/comparisons/tea-vs-coffee", comparison, J)
        assert status == 201, data
        views = "/api/comparisons/tea-vs-coffee/views"
        assert daemon.request("POST", views, {"count": 1_000_000}, J)[0] == 200  # selected first
        status, started, _ = daemon.request(
            "POST", "/api/jobs/warmup-forecasts", {"concurrency": 1}, J
        )
        assert status == 202, started
        run_url = f"/api/jobs/runs/{started['runId']}"
        wait_until(lambda: daemon.request("GET", run_url)[1]["processed"] >= 1)

        private_pg.stop()  # fast shutdown: every connection is cut at once
        wait_until(lambda: daemon.request("GET", "/readyz")[0] == 503, timeout_s=20)
        status, body, _ = daemon.request("GET", "/readyz")
        assert f"cannot connect to {private_pg.url()}" in body["db"], body
        assert daemon.request("GET", "/healthz")[0] == 200
        status, doc, _ = daemon.request("GET", "/api/status")
        assert (status, doc["state"], doc["db"]["state"]) == (200, "degraded", "down"), doc
        assert f"database: down ({doc['db']['error']})" in doc["reasons"], doc
        assert metric(daemon, "warmupd_database_up") == 0
        for method, path, payload, headers in (
            ("GET", "/api/comparison/tea-vs-coffee", None, None),
            ("GET", "/api/jobs/runs", None, None),
            ("PUT", "/api/comparisons/tea-vs-coffee", comparison, J),
            ("POST", "/api/jobs/housekeeping", None, J),
        ):
            status, answer, _ = daemon.request(method, path, payload, headers)
            assert (status, answer["error"]) == (503, "unavailable"), (path, answer)
        wait_until(lambda: listener.seen("STATUS=degraded"), timeout_s=10)
        # The outage lasts until the scheduler has failed its housekeeping step three times
        # (back-off 1 s, 2 s): at least two 2-second slots came due meanwhile.
        wait_until(lambda: daemon.logs().count("scheduler.step_failed job=housekeeping") >= 3)
        assert daemon.proc is not None
        assert daemon.proc.poll() is None  # still up

        private_pg.start()  # same port, same data directory
        wait_until(lambda: readyz(daemon) == 200, timeout_s=40)
        assert metric(daemon, "warmupd_database_up") == 1
        status, doc, _ = daemon.request("GET", "/api/status")
        assert (doc["db"]["state"], doc["reasons"]) == ("up", []), doc

        # The interrupted run's record was kept and written once the database answered.
        run = wait_until(lambda: terminal(daemon.request("GET", run_url)[1]), timeout_s=40)
        shown = (run["status"], run["reason"], run["processed"], run["failed"], run["errors"])
        assert (run["status"], run["reason"]) == ("failed", "database_unavailable"), shown
        assert any("cannot connect" in e for e in run["errors"]), run["errors"]

        # A new run succeeds on the same process; nothing written before the loss is gone. The
        # interrupted run's lease lives in the database too: its release, missed during the
        # outage, is retried in the background (at the latest, the lease expires).
        def new_run() -> tuple[int, Any] | None:
            status, record, _ = daemon.request(
                "POST", "/api/jobs/warmup-forecasts?wait=true", {"limit": 3}, J, timeout_s=120
            )
            return None if status == 429 else (status, record)

        status, record = wait_until(new_run, timeout_s=70)
        assert (status, record["status"]) == (200, "success"), record
        status, pack, _ = daemon.request("GET", "/api/comparison/tea-vs-coffee")
        assert status == 200, pack
        assert pack["forecasts"]["termA"] is not None, pack
        # Fires due while the database was away: one coalesced run once it is back (§4), and
        # no slot run twice or lost in between.
        runs = wait_until(lambda: coalesced_runs(daemon), timeout_s=30)
        assert runs[-1]["status"] == "success", runs[-1]
        assert daemon.stop() == 0
    finally:
        listener.close()
    assert_clean_log(daemon)


def terminal(run: dict[str, Any]) -> dict[str, Any] | None:
    return run if run.get("status") not in (None, "running") else None


def coalesced_runs(daemon: DaemonProcess) -> list[dict[str, Any]] | None:
    """Scheduled housekeeping runs, oldest first, up to the first that coalesced several slots
    (None until there is one and it has finished); no slot ran twice: dueAt strictly increases."""
    status, page, _ = daemon.request("GET", "/api/jobs/runs?job=housekeeping&limit=100")
    assert status == 200, page
    runs = [r for r in reversed(page["runs"]) if r["trigger"] == "schedule"]
    due = [r["metadata"]["dueAt"] for r in runs]
    assert due == sorted(set(due)), due  # no fire ran twice
    for i, run in enumerate(runs):
        if run["metadata"]["coalesced"] > 1:
            return runs[: i + 1] if terminal(run) else None
    return None
