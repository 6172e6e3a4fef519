"""``GET /api/status`` lists the live nodes with version, times and clock skew; a node whose clock is
off the database's by more than 1 s reports ``degraded`` with the reason (SPEC §14).

Two real daemons (in-process, real HTTP application) share one state; one has a wall clock 2
minutes fast. On PostgreSQL the skew is measured against the server's clock; on SQLite it is not
applicable (the file's clock is the host's): ``skewMs`` is null and nothing is degraded for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeClock
from tests.inprocess import in_process
from tests.lock_support import REDIS_URL, delete_prefix, new_prefix, require_redis
from tests.pg_support import (
    fresh_database,
)
from warmupd import __version__
from warmupd.locks import Locks
from warmupd.models import Acquired, Held


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("postgres+redis", marks=pytest.mark.postgres),
    ]
)
def shared_state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The config both daemons share: one SQLite state dir, or one fresh PostgreSQL database
    (its own lease rows, or Redis first with the database lease under it)."""
    if request.param == "sqlite":
        yield {"daemon": {"state_dir": str(tmp_path / "shared")}}
        return
    prefix = new_prefix()
    with fresh_database("status_") as url:
        config: dict[str, Any] = {"database": {"url": url}}
        if request.param == "postgres+redis":
            require_redis()
            config["redis"] = {"url": REDIS_URL, "key_prefix": prefix}
        try:
            yield config
        finally:
            delete_prefix(prefix)


async def test_status_lists_the_live_nodes_and_a_skewed_node_is_degraded(
    tmp_path: Path, aiohttp_client: Any, shared_state: dict[str, Any]
) -> None:
    fast, on_time = FakeClock(wall_ms=now_ms() + 120_000), FakeClock(wall_ms=now_ms())
    async with (
        in_process(tmp_path, aiohttp_client, shared_state, clock=fast, name="fast") as f,
        in_process(tmp_path, aiohttp_client, shared_state, clock=on_time, name="ok") as o,
    ):
        skewed, fine = await asyncio.gather(
            (await f.client.get("/api/status")).json(), (await o.client.get("/api/status")).json()
        )
        if "url" in skewed["db"]:
            await leases_ignore_the_nodes_clocks(f.core.locks, o.core.locks)
    postgres = "url" in skewed["db"]
    for doc in (skewed, fine):
        nodes = {n["node"]: n for n in doc["nodes"]}
        assert set(nodes) == {f.daemon.node, o.daemon.node}
        assert {n["version"] for n in nodes.values()} == {__version__}
        assert nodes[f.daemon.node]["heartbeatAt"].endswith("Z")
        if postgres:
            assert 110_000 <= nodes[f.daemon.node]["skewMs"] <= 120_500
            assert abs(nodes[o.daemon.node]["skewMs"]) <= 1_000
        else:
            assert {n["skewMs"] for n in nodes.values()} == {None}
    assert (fine["state"], fine["reasons"]) == ("ok", [])
    if not postgres:
        assert (skewed["state"], skewed["reasons"]) == ("ok", [])
        return
    assert skewed["state"] == "degraded"
    (reason,) = skewed["reasons"]
    assert reason.startswith("clock skew: this node's clock is ")


async def leases_ignore_the_nodes_clocks(fast: Locks, on_time: Locks) -> None:
    """A lease taken by the node 2 minutes fast is not taken over early by the on-time node, and
    one taken by the on-time node is not taken early by the fast one, whose clock says it expired
    two minutes ago: expiry is the database server's clock (SPEC §14). A backend comparing host
    clocks fails the second half (the negative control is in tests/test_locks_postgres.py)."""
    key, lease_ms = "warmup:forecasts:lock", 60_000
    for holder, taker in ((fast, on_time), (on_time, fast)):
        got = await holder.acquire(key, lease_ms)
        assert isinstance(got, Acquired), got
        assert isinstance(await taker.acquire(key, lease_ms), Held)
        assert await holder.renew(got.lease) is True
        assert await holder.release(got.lease) is True
