"""The run log and the node registry, unchanged on every state backend (SPEC §6, §11, §14)."""

from __future__ import annotations

import pytest

from warmupd.models import RunStatus, Trigger
from warmupd.state import Database
from warmupd.state.runs import NodeStore, RunStore, recover_abandoned

NOW = 1_767_225_600_000


async def test_a_run_starts_finishes_and_reads_back(state: Database) -> None:
    runs = RunStore(state)
    run_id = await runs.start("daily", Trigger.SCHEDULE, "node-a", NOW, {"due": 1})
    assert run_id > 0
    await runs.update_metadata(run_id, {"due": 1, "lock": "k"})
    record = await runs.finish(
        run_id,
        status=RunStatus.SUCCESS,
        now_ms=NOW + 250,
        processed=3,
        skipped=1,
        failed=1,
        errors=[f"e{i}" for i in range(15)],
    )
    assert (record.id, record.job, record.status, record.trigger, record.node) == (
        run_id,
        "daily",
        RunStatus.SUCCESS,
        Trigger.SCHEDULE,
        "node-a",
    )
    assert (record.started_at_ms, record.finished_at_ms, record.duration_ms) == (
        NOW,
        NOW + 250,
        250,
    )
    assert (record.processed, record.skipped, record.failed) == (3, 1, 1)
    assert record.errors == tuple(f"e{i}" for i in range(10))  # at most ten kept
    assert record.metadata == {"due": 1, "lock": "k"}  # kept when finish passes none
    assert await runs.get(run_id) == record
    assert await runs.get(run_id + 100) is None
    with pytest.raises(LookupError):
        await runs.finish(run_id + 100, status=RunStatus.FAILED, now_ms=NOW)
    # A clock that went backwards never makes a negative duration.
    other = await runs.start("daily", Trigger.HTTP, "node-a", NOW, {})
    finished = await runs.finish(other, status=RunStatus.FAILED, now_ms=NOW - 5, metadata={"x": 1})
    assert (finished.duration_ms, finished.metadata) == (0, {"x": 1})


async def test_listing_filters_and_pages_newest_first(state: Database) -> None:
    runs = RunStore(state)
    ids = []
    for i, job in enumerate(["a", "b", "a", "a"]):
        ids.append(await runs.start(job, Trigger.SCHEDULE, "n", NOW + i, {}))
    await runs.finish(ids[0], status=RunStatus.SUCCESS, now_ms=NOW + 10)
    skipped = await runs.record(
        "a",
        status=RunStatus.SKIPPED,
        trigger=Trigger.SCHEDULE,
        node="n",
        now_ms=NOW + 20,
        reason="locked_elsewhere",
        metadata={"holder": "m"},
    )
    assert (skipped.status, skipped.reason, skipped.duration_ms) == (
        RunStatus.SKIPPED,
        "locked_elsewhere",
        0,
    )
    assert [r.id for r in await runs.list_runs()] == [skipped.id, *reversed(ids)]
    assert [r.id for r in await runs.list_runs(job="a", limit=2)] == [skipped.id, ids[3]]
    assert [r.id for r in await runs.list_runs(job="a", before=ids[3])] == [ids[2], ids[0]]
    assert [r.id for r in await runs.list_runs(status="success")] == [ids[0]]
    assert [r.id for r in await runs.list_runs(job="a", status="running")] == [ids[3], ids[2]]
    spans = await runs.since(NOW + 2, 10)
    assert [r.id for r in spans] == [skipped.id, ids[3], ids[2]]
    assert spans[0].errors == ()
    assert {r.id for r in await runs.running()} == {ids[1], ids[2], ids[3]}
    last = await runs.last_finished("a")
    assert last is not None
    assert last.id == skipped.id
    assert await runs.last_finished("c") is None
    assert await runs.last_success_ms("a") == NOW + 10
    assert await runs.last_success_ms("b") is None


async def test_purge_keeps_running_runs(state: Database) -> None:
    runs = RunStore(state)
    old_done = await runs.start("a", Trigger.SCHEDULE, "n", NOW, {})
    await runs.finish(old_done, status=RunStatus.SUCCESS, now_ms=NOW + 1)
    old_running = await runs.start("a", Trigger.SCHEDULE, "n", NOW, {})
    new_done = await runs.start("a", Trigger.SCHEDULE, "n", NOW + 100, {})
    await runs.finish(new_done, status=RunStatus.SUCCESS, now_ms=NOW + 101)
    assert await runs.purge(NOW + 50) == 1
    assert await runs.get(old_done) is None
    assert await runs.get(old_running) is not None
    assert await runs.get(new_done) is not None


async def beat(state: Database, node: str, age_ms: int, now_ms: int = NOW) -> None:
    """A heartbeat of ``node`` that is ``age_ms`` old: taken at that instant of the caller's clock
    on SQLite; on PostgreSQL, whose heartbeats are the server's clock, aged on that clock."""
    await NodeStore(state).heartbeat(node, now_ms - age_ms)
    if (clock := state.dialect.clock_ms) is not None:
        await state.execute(
            f"UPDATE nodes SET heartbeat_at = {clock} - ? WHERE node = ?", (age_ms, node)
        )


async def test_nodes_heartbeat_and_abandoned_runs_of_dead_nodes(state: Database) -> None:
    runs, nodes = RunStore(state), NodeStore(state)
    lease = 60_000
    await beat(state, "alive-elsewhere:1:aaaaaa", 0)
    await beat(state, "gone-elsewhere:2:bbbbbb", 10 * lease)
    await beat(state, "me:3:cccccc", 10 * lease)
    assert await nodes.alive(NOW, 3 * lease) == {"alive-elsewhere:1:aaaaaa"}
    live = await runs.start("j", Trigger.SCHEDULE, "alive-elsewhere:1:aaaaaa", NOW, {})
    dead = await runs.start("j", Trigger.SCHEDULE, "gone-elsewhere:2:bbbbbb", NOW - 1000, {})
    mine = await runs.start("j", Trigger.SCHEDULE, "me:3:cccccc", NOW, {})
    marked = await recover_abandoned(
        runs, nodes, self_node="me:3:cccccc", now_ms=NOW, stale_after_ms=3 * lease
    )
    assert marked == [dead]
    record = await runs.get(dead)
    assert record is not None
    assert (record.status, record.reason, record.duration_ms) == (
        RunStatus.ABANDONED,
        "owner_died",
        1000,
    )
    assert {r.id for r in await runs.running()} == {live, mine}
    assert await runs.mark_abandoned([dead], NOW) == 0  # only running runs are marked
    await nodes.heartbeat("gone-elsewhere:2:bbbbbb", NOW)  # started_at is kept, heartbeat moves
    assert "gone-elsewhere:2:bbbbbb" in await nodes.alive(NOW, lease)
    await nodes.remove("alive-elsewhere:1:aaaaaa")
    assert await nodes.purge(NOW, lease) == 1  # me:3, whose heartbeat is old
    assert await nodes.alive(NOW, NOW) == {"gone-elsewhere:2:bbbbbb"}


async def test_on_postgresql_a_nodes_age_is_the_servers_clock_not_the_hosts(
    state: Database,
) -> None:
    """A node whose clock is 10 leases slow beats; a node whose clock is 10 leases fast checks.
    On PostgreSQL both ages are the server's clock, so the slow node is alive and its run is left
    alone; on SQLite (one host, one clock) the instants the callers pass are the clock, and the same
    numbers make the slow node dead — which is what would happen on PostgreSQL with host clocks."""
    runs, nodes = RunStore(state), NodeStore(state)
    lease, off = 60_000, 10 * 60_000
    await nodes.heartbeat("slow-host:1:aaaaaa", NOW - off)
    run_id = await runs.start("j", Trigger.SCHEDULE, "slow-host:1:aaaaaa", NOW - off, {})
    marked = await recover_abandoned(
        runs, nodes, self_node="fast-host:2:bbbbbb", now_ms=NOW + off, stale_after_ms=3 * lease
    )
    if state.dialect.clock_ms is None:
        assert marked == [run_id]
        return
    assert marked == []
    assert await nodes.alive(NOW + off, 3 * lease) == {"slow-host:1:aaaaaa"}
    assert [n.node for n in await nodes.live(NOW + off, 3 * lease)] == ["slow-host:1:aaaaaa"]
    # And a node that stopped beating is dead after 3 leases of the server's clock, whatever the
    # checker's clock says (its clock here is 10 leases *behind* the dead node's last beat).
    await beat(state, "slow-host:1:aaaaaa", 3 * lease + 1)
    marked = await recover_abandoned(
        runs, nodes, self_node="fast-host:2:bbbbbb", now_ms=NOW - off, stale_after_ms=3 * lease
    )
    assert marked == [run_id]
    assert await nodes.purge(NOW - off, 3 * lease) == 1
