"""Operations against the real daemon: metrics with promtool, Redis failover, no secret anywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.daemon_support import (
    JOB_SECRET,
    WARMUP_SECRET,
    DaemonProcess,
    load_demo,
    wait_until,
)
from tests.lock_support import PrivateRedis

pytestmark = pytest.mark.slow

AI_KEY = "sk-test-warmupd-ai-key-5f2c9e7b1a"

SPEC_METRICS = (
    "warmupd_job_runs_total",
    "warmupd_job_duration_seconds",
    "warmupd_job_items_total",
    "warmupd_job_last_success_timestamp_seconds",
    "warmupd_job_running",
    "warmupd_scheduler_next_run_timestamp_seconds",
    "warmupd_scheduler_lateness_seconds",
    "warmupd_lock_acquisitions_total",
    "warmupd_on_demand_requests_total",
    "warmupd_on_demand_queue_depth",
    "warmupd_cache_entries",
    "warmupd_http_requests_total",
    "warmupd_http_request_duration_seconds",
    "warmupd_event_loop_lag_seconds",
    "warmupd_redis_up",
    "warmupd_database_up",
)


@pytest.fixture
def leaky_ai() -> Iterator[str]:
    """An OpenAI-compatible server that answers 401 and echoes the key it was sent."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = json.dumps(
                {
                    "error": {
                        "message": f"Incorrect API key provided: {self.headers.get('Authorization')}"
                    }
                }
            ).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def promtool() -> str | None:
    found = shutil.which("promtool")
    if found is None and os.environ.get("CI"):
        pytest.fail("promtool is required under CI (Debian package prometheus)")
    return found


def test_metrics_pass_promtool_and_cover_the_spec_after_a_run(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    daemon = DaemonProcess(tmp_path, "metrics")
    daemons.append(daemon.start())
    status, record = daemon.trigger("housekeeping", wait=True)
    assert status == 200
    assert record["status"] == "success"
    daemon.request("GET", "/api/status")
    status, text, headers = daemon.request("GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    for name in SPEC_METRICS:
        if name == "warmupd_redis_up":
            continue  # only exported when Redis is configured (see the failover test)
        assert f"# TYPE {name} " in text, name
    assert 'warmupd_job_runs_total{job_name="housekeeping",status="success"} 1' in text
    tool = promtool()
    if tool is None:
        pytest.skip("promtool not installed")
    check = subprocess.run([tool, "check", "metrics"], input=text, text=True, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert daemon.stop() == 0


def test_redis_dies_mid_run_daemon_degrades_to_sqlite_and_comes_back(
    tmp_path: Path, daemons: list[DaemonProcess], blackhole: str
) -> None:
    redis = PrivateRedis(tmp_path)
    redis.start()
    try:
        daemon = DaemonProcess(
            tmp_path,
            "failover",
            {
                "redis": {"url": redis.url, "connect_timeout": "500ms", "on_unavailable": "sqlite"},
                "locks": {"lease": "3s"},
                # The AI server never answers, so an insights run is in progress when Redis dies.
                "ai": {"provider": "openai", "base_url": blackhole, "model": "m"},
            },
        )
        load_demo(daemon)
        daemons.append(daemon.start())

        def metric(name: str) -> float | None:
            text = daemon.request("GET", "/metrics")[1]
            return next(
                (
                    float(line.split()[-1])
                    for line in text.splitlines()
                    if line.startswith(name + " ")
                ),
                None,
            )

        assert metric("warmupd_redis_up") == 1
        _, record = daemon.trigger("housekeeping", wait=True)
        assert record["metadata"]["lockBackend"] == "redis"
        code, started = daemon.trigger("warmup-ai-explanations")
        assert code == 202
        redis.kill()
        # Renewal cannot reach Redis: the holder stops before its lease could have expired.
        run = wait_until(
            lambda: (
                (r := daemon.request("GET", started["statusUrl"])[1])["status"] != "running" and r
            ),
            timeout_s=15,
        )
        assert (run["status"], run["reason"]) == ("failed", "lock_lost")
        wait_until(lambda: metric("warmupd_redis_up") == 0, timeout_s=15)
        status = daemon.request("GET", "/api/status")[1]
        assert status["state"] == "degraded"
        assert status["locks"] == {"backend": "sqlite", "redis": "down"}
        assert daemon.request("GET", "/readyz")[0] == 200  # the fallback is allowed
        _, record = daemon.trigger("housekeeping", wait=True)
        assert (record["status"], record["metadata"]["lockBackend"]) == ("success", "sqlite")
        redis.start()  # same port: the daemon reconnects by itself
        wait_until(lambda: metric("warmupd_redis_up") == 1, timeout_s=15)
        _, record = daemon.trigger("housekeeping", wait=True)
        assert record["metadata"]["lockBackend"] == "redis"
        assert daemon.request("GET", "/api/status")[1]["state"] == "ok"
        assert daemon.stop() == 0
    finally:
        redis.kill()


def test_no_secret_reaches_logs_status_metrics_or_the_database(
    tmp_path: Path, daemons: list[DaemonProcess], leaky_ai: str
) -> None:
    daemon = DaemonProcess(
        tmp_path,
        "secrets",
        {"ai": {"provider": "openai", "base_url": leaky_ai, "model": "m", "max_retries": 0}},
        env={"OPENAI_API_KEY": AI_KEY},
    )
    load_demo(daemon, 3)
    daemons.append(daemon.start())
    _, record = daemon.trigger("warmup-ai-explanations", wait=True)
    assert record["failed"] >= 1  # the AI server refused the key
    daemon.trigger("warmup-forecasts", wait=True)
    daemon.request(
        "POST", "/api/jobs/housekeeping", headers={"X-Job-Secret": "wrong-" + JOB_SECRET}
    )
    daemon.request(
        "POST", "/api/comparison/warmup", {"slug": "x"}, {"X-Warmup-Secret": WARMUP_SECRET + "x"}
    )
    daemon.request("GET", "/api/comparison/iphone-vs-android")
    seen = [
        json.dumps(daemon.request("GET", path)[1])
        for path in ("/api/status", "/api/jobs", "/api/jobs/runs?limit=500", "/metrics")
    ]
    assert daemon.stop() == 0
    haystack = "\n".join(seen) + daemon.logs()
    for path in daemon.state_dir.iterdir():
        haystack += path.read_bytes().decode("latin-1")
    for secret in (JOB_SECRET, WARMUP_SECRET, AI_KEY, AI_KEY[8:]):
        assert secret not in haystack
    assert "401" in daemon.logs() or "401" in haystack  # the failure itself was recorded
