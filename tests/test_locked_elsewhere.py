"""SPEC §17 through the HTTP edge: another daemon's ``locked_elsewhere`` 429 names the holder's
node and runId (was: "running in another process (unknown)"), on both lock backends."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.inprocess import J, in_process
from tests.lock_support import REDIS_URL, delete_prefix, new_prefix, require_redis

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_429_from_another_daemon_names_the_holder_node_and_run(
    tmp_path: Path, aiohttp_client: Any, backend: str
) -> None:
    if backend == "redis":
        require_redis()
        prefix = new_prefix()
        # Two hosts: separate state files, one Redis.
        extra_a = {"redis": {"url": REDIS_URL, "key_prefix": prefix}}
        extra_b = dict(extra_a)
    else:
        # Two processes on one host: one shared state file.
        shared = {"daemon": {"state_dir": str(tmp_path / "shared")}}
        extra_a = extra_b = shared
    try:
        async with (
            in_process(tmp_path, aiohttp_client, extra_a, name="a", gated=True, demo=2) as a,
            in_process(tmp_path, aiohttp_client, extra_b, name="b") as b,
        ):
            resp = await a.client.post("/api/jobs/warmup-forecasts", json={}, headers=J)
            assert resp.status == 202
            run_id = (await resp.json())["runId"]
            await a.cpu.entered.wait()

            refused = await b.client.post("/api/jobs/warmup-forecasts", json={}, headers=J)
            body = await refused.json()
            assert refused.status == 429, body
            assert body["error"] == "locked_elsewhere"
            assert (body["node"], body["runId"]) == (a.daemon.node, run_id)
            assert f"node {a.daemon.node}, run {run_id}" in body["message"]
            assert "unknown" not in body["message"]
            assert refused.headers["Retry-After"]
            # B's skipped run says who held the lock, too.
            (skipped,) = await b.core.runs.list_runs(job="warmup-forecasts", status="skipped")
            assert skipped.metadata["heldBy"] == a.daemon.node
            assert skipped.metadata["heldByRunId"] == run_id
    finally:
        if backend == "redis":
            await asyncio.to_thread(delete_prefix, prefix)
