"""The real ``warmupd serve`` on PostgreSQL (SPEC §14): state in a fresh database, locks in
PostgreSQL's lease rows — under Redis when it is configured, alone without it or while it is down.

Each test creates its own database on the server of ``$WARMUPD_TEST_PG`` and drops it at the end;
Redis keys live under a unique prefix that is deleted afterwards. Unreachable PostgreSQL or Redis
skips, or fails under ``CI``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_support import JOB_SECRET, DaemonProcess, load_demo, worker_env
from tests.lock_support import (
    REDIS_URL,
    closed_port_url,
    delete_prefix,
    new_prefix,
    require_redis,
)
from tests.pg_support import (
    fresh_database,
)

PASSWORD = "pg-Secret-4711"  # trust auth ignores it; it must never be shown
SERIES = [
    {"date": f"2025-{month:02d}-{day:02d}", "tea": 40 + month + day % 7, "coffee": 60 - month}
    for month in range(1, 13)
    for day in (1, 8, 15, 22)
]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database, dropped afterwards; its URL (password-free)."""
    with fresh_database("serve_") as url:
        yield url


def with_password(url: str) -> str:
    """``url`` with :data:`PASSWORD` in its userinfo."""
    scheme, _, rest = url.partition("://")
    user, _, hostpart = rest.rpartition("@")
    return f"{scheme}://{user}:{PASSWORD}@{hostpart}"


def test_serve_on_postgres_warms_a_comparison_and_shows_the_url_without_password(
    tmp_path: Path, daemons: list[DaemonProcess], pg_url: str
) -> None:
    require_redis()
    prefix = new_prefix()
    config = {
        "database": {"url": with_password(pg_url)},
        "redis": {"url": REDIS_URL, "key_prefix": prefix},
    }
    daemon = DaemonProcess(tmp_path, "pg", config)
    try:
        load_demo(daemon, count=3)  # the CLI's demo-data writes into PostgreSQL too
        daemons.append(daemon.start())
        body = {"terms": ["tea", "coffee"], "timeframe": "today 12-m", "series": SERIES}
        status, data, _ = daemon.request(
            "PUT",
            "/api/comparisons/tea-vs-coffee",
            body,
            {"X-Job-Secret": JOB_SECRET},
        )
        assert status == 201, data  # created
        views = "/api/comparisons/tea-vs-coffee/views"
        status, data, _ = daemon.request("POST", views, {"count": 50}, {"X-Job-Secret": JOB_SECRET})
        assert (status, data["viewCount"]) == (200, 50), data  # the AI job selects by views
        for job in ("warmup-forecasts", "warmup-ai-explanations"):  # the builtin explainer
            status, run = daemon.trigger(job, wait=True)
            assert (status, run["status"]) == (200, "success"), run
        status, pack, _ = daemon.request("GET", "/api/comparison/tea-vs-coffee")
        assert status == 200, pack
        assert (pack["freshness"], pack["needsWarmup"]) == ("fresh", False), pack
        assert pack["forecasts"]["termA"]["forecast14Day"]["keyPoints"], pack
        assert pack["insights"] is not None, pack
        status, doc, _ = daemon.request("GET", "/api/status")
        assert status == 200
        assert doc["db"]["engine"] == "postgresql"
        assert doc["db"]["url"] == pg_url
        assert "path" not in doc["db"]
        assert doc["locks"] == {"backend": "redis", "redis": "up"}
        assert doc["cache"]["fresh"] >= 1
        assert daemon.stop() == 0
        purge = subprocess.run(
            [sys.executable, "-m", "warmupd", "purge", "--json", "-c", str(daemon.config_path)],
            env={**worker_env(), **daemon.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert purge.returncode == 0, purge.stderr  # the foreground housekeeping run, on PostgreSQL
        assert json.loads(purge.stdout)["status"] == "success", purge.stdout
    finally:
        delete_prefix(prefix)
    shown = (
        json.dumps(doc)
        + daemon.logs()
        + purge.stdout
        + purge.stderr
        + daemon.config_path.read_text().replace(PASSWORD, "")
    )
    assert PASSWORD not in shown
    assert not daemon.db_path.exists()  # no SQLite file was made on the side


def test_serve_on_postgres_without_redis_runs_jobs_on_postgres_leases(
    tmp_path: Path, daemons: list[DaemonProcess], pg_url: str
) -> None:
    daemon = DaemonProcess(tmp_path, "pg", {"database": {"url": with_password(pg_url)}})
    daemons.append(daemon.start())
    status, doc, _ = daemon.request("GET", "/api/status")
    assert status == 200
    assert (doc["state"], doc["locks"]) == (
        "ok",
        {"backend": "postgresql", "redis": "unconfigured"},
    )
    fences = []
    for _ in range(2):  # the second run takes the lease the first released: a greater fence
        status, run = daemon.trigger("housekeeping", wait=True)
        assert (status, run["status"]) == (200, "success"), run
        assert run["metadata"]["lockBackend"] == "postgresql", run
        fences.append(run["metadata"]["fence"])
    assert fences[1] > fences[0]
    assert daemon.stop() == 0
    assert PASSWORD not in json.dumps(doc) + daemon.logs()


def test_serve_on_postgres_with_redis_down_falls_back_to_postgres_leases(
    tmp_path: Path, daemons: list[DaemonProcess], pg_url: str
) -> None:
    config = {
        "database": {"url": with_password(pg_url)},
        # Nobody listens there; on_unavailable defaults to "database".
        "redis": {"url": closed_port_url(), "connect_timeout": "200ms"},
    }
    daemon = DaemonProcess(tmp_path, "pg", config)
    daemons.append(daemon.start())
    status, doc, _ = daemon.request("GET", "/api/status")
    assert status == 200
    assert (doc["state"], doc["locks"]) == ("degraded", {"backend": "postgresql", "redis": "down"})
    assert daemon.request("GET", "/readyz")[0] == 200  # the database fallback is allowed
    status, run = daemon.trigger("housekeeping", wait=True)
    assert (status, run["status"]) == (200, "success"), run
    assert run["metadata"]["lockBackend"] == "postgresql", run
    assert daemon.stop() == 0
