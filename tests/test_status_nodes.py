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
    create_database,
    drop_database,
    new_database_name,
    require_postgres,
    run_admin,
)
from warmupd import __version__


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(params=["sqlite", pytest.param("postgres+redis", marks=pytest.mark.postgres)])
def shared_state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The config both daemons share: one SQLite state dir, or one fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield {"daemon": {"state_dir": str(tmp_path / "shared")}}
        return
    require_postgres()
    require_redis()
    name, prefix = new_database_name("status_"), new_prefix()
    url = run_admin(lambda: create_database(name))
    try:
        yield {"database": {"url": url}, "redis": {"url": REDIS_URL, "key_prefix": prefix}}
    finally:
        run_admin(lambda: drop_database(name))
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
