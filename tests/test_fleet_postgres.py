"""Three real ``warmupd serve`` processes on one fresh PostgreSQL database (SPEC §14, issue 12).

One fleet is shared by the scenarios of this module (they run in file order) to keep the wall time
down; a ``* * * * * *`` housekeeping schedule fires on it all along, and the last scenario checks
that every one of those fires ran exactly once, with no overlap. Model calls go to a loopback fake
OpenAI-compatible server (``bench/fake_model.py``) that answers after a fixed delay.

The lock set-up is the one parameter of :func:`locks`: PostgreSQL lease rows alone, or under Redis
(a fresh prefix; the database lease is still taken first), and the database URL and extra config go
through :func:`tests.fleet_support.start_fleet`, so the same scenarios can run through PgBouncer.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.daemon_support import JOB_SECRET, WARMUP_SECRET, DaemonProcess, wait_until
from tests.fleet_support import FakeModelServer, Fleet, redis_locks, start_fleet
from tests.lock_support import require_redis
from tests.pg_private import start_pgbouncer
from tests.pg_support import (
    ADMIN_URL,
    create_database,
    drop_database,
    new_database_name,
    require_postgres,
    run_admin,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

LEASE_S = 3  # the shortest the config accepts: a dead holder's job is free again within it
MODEL_DELAY_S = 3.0
JOB = {"X-Job-Secret": JOB_SECRET}
STATE: dict[str, Any] = {}
"""What one scenario leaves for a later one (the kill time, the killed node)."""


def series(a: str, b: str, points: int = 48) -> list[dict[str, Any]]:
    return [
        {"date": f"2025-{1 + i // 4:02d}-{1 + 7 * (i % 4):02d}", a: 40 + i % 9, b: 60 - i % 5}
        for i in range(points)
    ]


def put(daemon: DaemonProcess, slug: str, a: str, b: str, views: int = 0) -> str:
    body = {"terms": [a, b], "timeframe": "today 12-m", "series": series(a, b)}
    status, data, _ = daemon.request("PUT", f"/api/comparisons/{slug}", body, JOB)
    assert status in (200, 201), data
    if views:
        path = f"/api/comparisons/{slug}/views"
        status, _, _ = daemon.request("POST", path, {"count": views}, JOB)
        assert status == 200
    return str(data["dataHash"])


def parts(daemon: DaemonProcess, slug: str) -> dict[str, str]:
    status, data, _ = daemon.request("GET", f"/api/comparison/{slug}/status")
    assert status == 200, data
    return dict(data["parts"])


ALL_FRESH = {"forecastA": "fresh", "forecastB": "fresh", "insights": "fresh"}


@pytest.fixture(scope="module", params=["postgres-leases-via-pgbouncer", "redis"])
def locks(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The fleet's lock set-up: PostgreSQL's own leases (the fleet then talks to the database through
    a transaction-mode PgBouncer, SPEC §14), or Redis (the fleet connects directly)."""
    if request.param == "postgres-leases-via-pgbouncer":
        yield {}
        return
    require_redis()
    with redis_locks() as config:
        yield config


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeModelServer]:
    server = FakeModelServer(tmp_path_factory.mktemp("model"), MODEL_DELAY_S)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fleet(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    locks: dict[str, Any],
    model: FakeModelServer,
) -> Iterator[Fleet]:
    require_postgres()
    name = new_database_name("fleet_")
    url = run_admin(lambda: create_database(name))
    daemon_url = url
    through_pgbouncer = not locks
    extra: dict[str, Any] = {
        "locks": {"lease": f"{LEASE_S}s"},
        "ai": {"provider": "openai", "base_url": model.base_url, "model": "fake", "timeout": "30s"},
        "jobs": {
            "housekeeping": {"schedule": "* * * * * *", "misfire_grace": "0s"},
            "warmup-ai-explanations": {"concurrency": 1, "min_views": 1},
        },
    }
    if through_pgbouncer:
        # PgBouncer 1.18 in transaction mode keeps no prepared statements and no session state:
        # every statement of the whole scenario list below goes through it.
        server = urlsplit(ADMIN_URL)
        daemon_url = start_pgbouncer(
            server.port or 5432,
            name,
            finalizer=request.addfinalizer,
            server_host=server.hostname or "127.0.0.1",
        )
        extra["database"] = {"statement_cache": False}
    fleet = None
    try:
        fleet = start_fleet(
            tmp_path_factory.mktemp("fleet"), db_url=daemon_url, locks=locks, extra=extra
        )
        fleet.db_url = url  # the tests' own reads of the shared log go to the server directly
        yield fleet
    finally:
        if fleet is not None:
            fleet.kill()
        run_admin(lambda: drop_database(name))


def test_a_comparison_put_through_one_is_read_through_the_others(fleet: Fleet) -> None:
    d0, d1, d2 = fleet.daemons
    data_hash = put(d0, "tea-vs-coffee", "tea", "coffee")
    for daemon in (d1, d2):
        status, data, _ = daemon.request("GET", "/api/comparison/tea-vs-coffee/status")
        assert status == 200, data
        assert (data["dataHash"], data["warmup"]) == (data_hash, "idle")
        assert set(data["parts"].values()) == {"missing"}


def test_a_forecast_run_on_one_makes_the_pack_fresh_on_the_others(fleet: Fleet) -> None:
    d0, d1, d2 = fleet.daemons
    put(d0, "tea-vs-coffee", "tea", "coffee", views=50)
    status, run = d0.trigger("warmup-forecasts", wait=True)
    assert (status, run["status"], run["processed"]) == (200, "success", 1), run
    for daemon in (d1, d2):  # seen by the others' read snapshots (state-version check)
        wait_until(lambda d=daemon: parts(d, "tea-vs-coffee")["forecastA"] == "fresh", 10)
        assert parts(daemon, "tea-vs-coffee")["forecastB"] == "fresh"
    status, ai_run = d0.trigger("warmup-ai-explanations", wait=True)
    assert (status, ai_run["status"], ai_run["processed"]) == (200, "success", 1), ai_run
    for daemon in (d1, d2):
        wait_until(lambda d=daemon: parts(d, "tea-vs-coffee") == ALL_FRESH, 10)
        status, pack, _ = daemon.request("GET", "/api/comparison/tea-vs-coffee")
        assert status == 200
        assert (pack["freshness"], pack["needsWarmup"]) == ("fresh", False), pack
    # One run log: every daemon lists the same runs, d0's among them.
    logs = []
    for daemon in fleet.daemons:
        status, runs, _ = daemon.request("GET", "/api/jobs/runs?job=warmup-forecasts")
        assert status == 200
        logs.append([(r["id"], r["node"], r["status"]) for r in runs["runs"]])
    assert logs[0] == logs[1] == logs[2] == [(run["id"], run["node"], "success")]
    # What makes the snapshots see other daemons' writes: the state-version triggers.
    triggers = fleet.query("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY tgname")
    assert [t["tgname"] for t in triggers] == [
        "cache_entries_changed",
        "comparisons_changed",
        "comparisons_updated",
    ]


async def test_a_thousand_on_demand_requests_over_the_fleet_compute_once(
    fleet: Fleet, model: FakeModelServer
) -> None:
    d0 = fleet.daemons[0]
    data_hash = await asyncio.to_thread(put, d0, "cold-vs-hot", "cold", "hot")
    model.reset()
    series_line = 'warmupd_job_items_total{job_name="warmup-on-demand",result="processed"}'
    before = await asyncio.to_thread(fleet.metric_sum, series_line)
    headers = {"X-Warmup-Secret": WARMUP_SECRET}
    body = {"slug": "cold-vs-hot"}

    async def one(session: aiohttp.ClientSession, n: int) -> tuple[int, str]:
        url = fleet.daemons[n % 3].url + "/api/comparison/warmup"
        async with session.post(url, json=body, headers=headers) as resp:
            return resp.status, (await resp.json())["status"]

    connector = aiohttp.TCPConnector(limit=600)
    async with aiohttp.ClientSession(connector=connector) as session:
        answers = await asyncio.gather(*(one(session, n) for n in range(1000)))
    assert Counter(code for code, _ in answers).keys() <= {200, 202}, Counter(answers)
    assert {state for _, state in answers} <= {"queued", "running", "ready"}
    for daemon in fleet.daemons:
        await asyncio.to_thread(
            wait_until, lambda d=daemon: parts(d, "cold-vs-hot") == ALL_FRESH, 60
        )
    runs = [
        r
        for r in await asyncio.to_thread(fleet.runs, "warmup-on-demand")
        if r["metadata"].get("slug") == "cold-vs-hot"
    ]
    assert [(r["status"], r["metadata"]["dataHash"]) for r in runs] == [("success", data_hash)]
    assert model.requests() == 1
    after = await asyncio.to_thread(fleet.metric_sum, series_line)
    assert after - before == 1  # one computation in the whole fleet


def test_kill_9_of_the_daemon_running_a_job_another_takes_it_and_the_run_is_abandoned(
    fleet: Fleet, model: FakeModelServer
) -> None:
    d0, d1, d2 = fleet.daemons
    # Eight model calls of MODEL_DELAY_S each, one at a time: the job outlasts this scenario and
    # the next, which freezes the daemon that takes it over.
    for n in range(8):
        put(d0, f"slow-{n}", f"slow{n}", f"fast{n}", views=20)
    wait_until(lambda: len(housekeeping_dues(fleet)) >= 21, 60)  # enough fires before the kill
    model.reset()
    status, started, _ = d1.request(
        "POST", "/api/jobs/warmup-ai-explanations", {"concurrency": 1}, JOB
    )
    assert status == 202, started
    wait_until(lambda: model.requests() >= 1, 30)  # d1 holds the job's lock and is mid-item
    _, status_doc, _ = d1.request("GET", "/api/status")
    STATE["killed_node"] = status_doc["node"]
    d1.kill()
    STATE["kill_ms"] = time.time() * 1000
    killed_at = time.monotonic()
    while True:
        code, answer = d2.trigger("warmup-ai-explanations")
        if code == 202:
            break
        assert (code, answer["error"]) == (429, "locked_elsewhere"), answer
        time.sleep(0.1)
    # The lease was renewed at most a third of a lease before the kill; the slack covers the
    # polling and a loaded machine, not a second lease.
    assert time.monotonic() - killed_at <= LEASE_S + 2.0
    # No restart: the survivors' heartbeats mark the dead daemon's run abandoned.
    path = f"/api/jobs/runs/{started['runId']}"
    wait_until(lambda: d0.request("GET", path)[1]["status"] == "abandoned", 3 * LEASE_S + 10)
    record = d2.request("GET", path)[1]
    assert (record["reason"], record["node"]) == ("owner_died", STATE["killed_node"])
    taken = d0.request("GET", f"/api/jobs/runs/{answer['runId']}")[1]
    assert (taken["status"], taken["node"]) == (
        "running",
        d2.request("GET", "/api/status")[1]["node"],
    )
    STATE["taken_run"] = answer["runId"]


def housekeeping_dues(fleet: Fleet) -> set[int]:
    """The due times of the scheduled housekeeping fires that ran (or run) so far."""
    return {
        r["metadata"]["dueAt"]
        for r in fleet.runs("housekeeping")
        if r["trigger"] == "schedule" and r["status"] != "skipped"
    }


def test_every_second_fire_ran_once_in_the_shared_log_with_no_overlap(fleet: Fleet) -> None:
    runs = [
        r
        for r in fleet.runs("housekeeping")
        if r["trigger"] == "schedule" and r["status"] != "skipped"
    ]
    dues = Counter(r["metadata"]["dueAt"] for r in runs)
    assert max(dues.values()) == 1, [d for d, n in dues.items() if n > 1]
    # At least 20 fires before the kill. (Not every second: a loop woken more than a second late
    # coalesces the slots it missed into one fire, by design — SPEC §4.)
    assert len([d for d in dues if d < STATE["kill_ms"]]) >= 20
    # Fires of the last seconds may still be running.
    runs = [r for r in runs if r["metadata"]["dueAt"] < time.time() * 1000 - 2_000]
    for run in runs:
        allowed = {"success"} | ({"abandoned"} if run["node"] == STATE["killed_node"] else set())
        assert run["status"] in allowed, run
    spans = sorted((r["started_at"], r["finished_at"]) for r in runs if r["status"] == "success")
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start  # never two housekeeping runs at once


def test_a_frozen_daemon_loses_its_job_within_a_lease_and_its_run_is_abandoned_by_heartbeat_age(
    fleet: Fleet,
) -> None:
    """SIGSTOP: the pid lives on (no "process gone" shortcut), but the heartbeats stop — as when a
    host hangs or is cut off. The job is free within a lease; 3 leases after its last heartbeat,
    a live daemon's heartbeat marks the frozen node's run abandoned."""
    d0, _, d2 = fleet.daemons
    path = f"/api/jobs/runs/{STATE['taken_run']}"
    assert d0.request("GET", path)[1]["status"] == "running"  # d2 is mid-job (8 slow items)
    frozen_node = d2.request("GET", "/api/status")[1]["node"]
    heartbeats: list[int] = []

    def abandoned() -> bool:
        # Its last heartbeat, while the row lasts (housekeeping purges it once 3 leases old).
        rows = fleet.query("SELECT heartbeat_at FROM nodes WHERE node = $1", frozen_node)
        heartbeats.extend(r["heartbeat_at"] for r in rows)
        return bool(d0.request("GET", path)[1]["status"] == "abandoned")

    d2.send(signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        while (code := d0.trigger("warmup-ai-explanations")[0]) != 202:
            assert code == 429
            time.sleep(0.1)
        assert time.monotonic() - frozen_at <= LEASE_S + 2.0
        wait_until(abandoned, 3 * LEASE_S + 15)
    finally:
        d2.send(signal.SIGCONT)
    record = d0.request("GET", path)[1]
    assert (record["reason"], record["node"]) == ("owner_died", frozen_node)
    # Marked once its last heartbeat was more than 3 leases old, not sooner.
    marked_ms = datetime.fromisoformat(record["finishedAt"]).timestamp() * 1000
    assert marked_ms - max(heartbeats) > 3 * LEASE_S * 1000


def test_the_survivors_stop_cleanly(fleet: Fleet) -> None:
    survivors = fleet.alive()
    assert len(survivors) == 2
    assert [d.stop() for d in survivors] == [0, 0]
    for daemon in fleet.daemons:
        assert "Traceback" not in daemon.logs(), daemon.logs()[-3000:]
