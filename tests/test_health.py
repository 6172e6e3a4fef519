"""SPEC §17: one source of truth for health. ``warmupd_redis_up``, ``/api/status`` and ``/readyz``
change together, at the moment the daemon learns of a change — not at the next periodic probe.

Redis is a private ``redis-server`` the test starts on a free port and kills (never the machine's).
Time is a :class:`FakeClock`: the run's lease renewal happens exactly when the test advances it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeClock
from tests.inprocess import J, W, in_process, metric
from tests.lock_support import PrivateRedis
from tests.pg_private import PrivatePostgres
from warmupd.health import Health

pytestmark = pytest.mark.slow


@pytest.fixture
def private_redis(tmp_path: Path) -> Any:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def views(client: Any) -> tuple[dict[str, Any], int, dict[str, Any], float | None]:
    """Status, readyz (code and body) and the metric, read back to back with no sleep."""
    status = await (await client.get("/api/status")).json()
    ready = await client.get("/readyz")
    return status, ready.status, await ready.json(), await metric(client, "warmupd_redis_up")


@pytest.mark.parametrize(("policy", "ready_when_down"), [("database", 200), ("skip", 503)])
async def test_redis_stopped_during_a_run_all_views_agree_right_after_the_failed_call(
    tmp_path: Path,
    aiohttp_client: Any,
    private_redis: PrivateRedis,
    policy: str,
    ready_when_down: int,
) -> None:
    clock = FakeClock(wall_ms=1_767_225_600_000)
    config = {
        "redis": {"url": private_redis.url, "connect_timeout": "300ms", "on_unavailable": policy},
        "locks": {"lease": "3s"},
    }
    async with in_process(tmp_path, aiohttp_client, config, clock=clock, gated=True, demo=3) as d:
        status, ready, body, up = await views(d.client)
        assert (status["state"], status["locks"]["redis"], ready, body["redis"], up) == (
            "ok",
            "up",
            200,
            "up",
            1,
        )
        resp = await d.client.post("/api/jobs/warmup-forecasts", json={}, headers=J)
        assert resp.status == 202, await resp.text()
        await d.cpu.entered.wait()  # an item is in flight: the run holds its Redis lease

        learned = asyncio.Event()
        d.core.health.subscribe(lambda redis_up: None if redis_up else learned.set())
        private_redis.kill()
        await clock.advance(1.0)  # lease/3: the renewal goes to the dead server
        await learned.wait()  # the failed renewal has just been reported; nothing else ran since

        status, ready, body, up = await views(d.client)
        assert status["state"] == "degraded"
        assert status["locks"]["redis"] == "down"
        assert (ready, body["redis"]) == (ready_when_down, "down")
        assert up == 0

        private_redis.start()  # same port: the next Redis call that answers flips every view back
        assert await d.core.fallback.ping() is True  # type: ignore[union-attr]
        status, ready, body, up = await views(d.client)
        assert (status["locks"]["redis"], ready, body["redis"], up) == ("up", 200, "up", 1)


async def test_without_redis_the_metric_is_absent_and_status_says_unconfigured(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    async with in_process(tmp_path, aiohttp_client) as d:
        status, ready, body, up = await views(d.client)
        assert (status["locks"]["redis"], ready, body["redis"], up) == (
            "unconfigured",
            200,
            "unconfigured",
            None,
        )


def test_health_calls_listeners_on_change_only_and_ignores_an_unconfigured_redis() -> None:
    seen: list[bool] = []
    health = Health(redis_configured=True)
    health.subscribe(seen.append)
    assert health.observe_redis(True) is False  # no change: nobody is told
    assert health.observe_redis(False) is True
    assert health.observe_redis(False) is False
    assert health.observe_redis(True) is True
    assert seen == [True, False, True]

    off = Health(redis_configured=False)
    off.subscribe(seen.append)
    assert off.observe_redis(False) is False
    assert (off.redis, off.redis_up, seen) == ("unconfigured", False, [True, False, True])


async def db_views(client: Any) -> tuple[dict[str, Any], int, dict[str, Any], float | None]:
    """Status, readyz and ``warmupd_database_up``, read back to back with no sleep."""
    status = await (await client.get("/api/status")).json()
    ready = await client.get("/readyz")
    return status, ready.status, await ready.json(), await metric(client, "warmupd_database_up")


async def test_database_lost_during_a_warmup_all_views_agree_and_nothing_is_traced(
    tmp_path: Path,
    aiohttp_client: Any,
    private_pg: PrivatePostgres,
    pg_lock_config: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Now, not a fixed instant: the heartbeat compares the wall clock with the database server's.
    clock = FakeClock(wall_ms=int(time.time() * 1000))
    config = {"database": {"url": private_pg.url(), "connect_timeout": "2s"}, **pg_lock_config}
    async with in_process(tmp_path, aiohttp_client, config, clock=clock, gated=True) as d:
        status, ready, body, up = await db_views(d.client)
        assert (status["state"], status["db"]["state"], ready, body["db"], up) == (
            "ok",
            "up",
            200,
            "ok",
            1,
        )
        series = [
            {"date": f"2025-01-{day:02d}", "tea": day, "coffee": 40 - day} for day in range(1, 29)
        ]
        put = await d.client.put(
            "/api/comparisons/tea-vs-coffee",
            json={"terms": ["tea", "coffee"], "timeframe": "today 1-m", "series": series},
            headers=J,
        )
        assert put.status == 201, await put.text()
        ask = await d.client.post(
            "/api/comparison/warmup", json={"slug": "tea-vs-coffee"}, headers=W
        )
        assert ask.status == 202, await ask.text()
        await d.cpu.entered.wait()  # the warmup computes, holding its lease
        (warmup,) = [t for t in asyncio.all_tasks() if t.get_name() == "warmup:tea-vs-coffee"]

        learned = asyncio.Event()
        d.core.health.subscribe_database(lambda database_up: None if database_up else learned.set())
        await asyncio.to_thread(private_pg.stop)
        assert d.cpu.gate is not None
        d.cpu.gate.set()  # the computation ends; its write goes to the stopped server
        await learned.wait()  # the failed statement has just been reported; nothing else ran

        status, ready, body, up = await db_views(d.client)
        assert (status["state"], status["db"]["state"], ready, up) == ("degraded", "down", 503, 0)
        assert status["db"]["error"].startswith(f"cannot connect to {private_pg.url()}")
        assert body["db"] == f"unavailable ({status['db']['error']})"
        answer = await d.client.get("/api/comparison/tea-vs-coffee/status")
        assert (answer.status, (await answer.json())["error"]) == (503, "unavailable")
        await asyncio.wait({warmup}, timeout=30)  # it ends (its record waits for no one)
        assert warmup.done()
        assert not d.core.on_demand.in_flight()

        await asyncio.to_thread(private_pg.start)
        await d.core.db.fetchone("SELECT 1")  # the next statement that answers flips every view
        status, ready, body, up = await db_views(d.client)
        assert (status["state"], status["db"]["state"], ready, up) == ("ok", "up", 200, 1)
    traced = [r for r in caplog.records if r.exc_info]
    assert traced == [], [r.getMessage() for r in traced]
