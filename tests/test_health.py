"""SPEC §17: one source of truth for health. ``warmupd_redis_up``, ``/api/status`` and ``/readyz``
change together, at the moment the daemon learns of a change — not at the next periodic probe.

Redis is a private ``redis-server`` the test starts on a free port and kills (never the machine's).
Time is a :class:`FakeClock`: the run's lease renewal happens exactly when the test advances it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeClock
from tests.inprocess import J, in_process, metric
from tests.lock_support import PrivateRedis
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
