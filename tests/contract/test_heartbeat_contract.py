"""Heartbeats on every state backend (SPEC §14): live nodes with their version and clock skew, and
abandoned runs found by any live node at every beat — not only at start-up.

Two nodes are two :class:`Heartbeat` steps (each with its own NodeStore) on one database; time is
a FakeClock the test moves, so "3 leases" pass when the test says so.
"""

from __future__ import annotations

import logging
import time

import pytest

from tests.fakes import FakeClock
from warmupd.heartbeat import SKEW_LIMIT_MS, Heartbeat, interval_s
from warmupd.models import RunStatus, Trigger
from warmupd.state import Database
from warmupd.state.runs import NodeStore, RunStore

LEASE_MS = 60_000
# Node ids on no real host: the "pid is dead on this host" shortcut never applies to them.
A, B = "host-a.example:101:aaaaaa", "host-b.example:202:bbbbbb"


def now_ms() -> int:
    return int(time.time() * 1000)


def heartbeat(state: Database, clock: FakeClock, node: str) -> Heartbeat:
    return Heartbeat(
        nodes=NodeStore(state),
        runs=RunStore(state),
        clock=clock,
        node=node,
        version="9.9.9",
        stale_ms=lambda: 3 * LEASE_MS,
    )


async def pass_time(
    state: Database, clock: FakeClock, dead: str, beat_ms: int, age_ms: int, *, margin_ms: int = 0
) -> None:
    """Make ``dead``'s last beat (taken at ``beat_ms``) ``age_ms`` old: the FakeClock moves on to
    that instant on SQLite; on PostgreSQL (heartbeats on the server's clock) the beat is aged to
    ``age_ms - margin_ms`` on that clock."""
    if (server_clock := state.dialect.clock_ms) is None:
        await clock.advance((beat_ms + age_ms - clock.wall_ms()) / 1000)
        return
    await state.execute(
        f"UPDATE nodes SET heartbeat_at = {server_clock} - ? WHERE node = ?",
        (age_ms - margin_ms, dead),
    )


async def test_a_dead_nodes_run_is_abandoned_at_a_live_nodes_beat_after_3_leases(
    state: Database,
) -> None:
    clock = FakeClock(wall_ms=now_ms())
    a, b = heartbeat(state, clock, A), heartbeat(state, clock, B)
    runs = RunStore(state)
    await a.beat()
    a_beat_ms = clock.wall_ms()
    await b.beat()
    run_id = await runs.start("warmup-forecasts", Trigger.SCHEDULE, A, clock.wall_ms(), {})
    # A stops beating (its host died). B beats on; exactly 3 leases later A is still live. On
    # PostgreSQL a heartbeat's age is the server's clock, which no test can stop: A's beat is aged
    # on that clock instead, to 5 s short of 3 leases (the server's clock moves on meanwhile).
    await pass_time(state, clock, A, a_beat_ms, 3 * LEASE_MS, margin_ms=5_000)
    assert await b.beat() == []
    record = await runs.get(run_id)
    assert record is not None
    assert record.status is RunStatus.RUNNING
    await pass_time(state, clock, A, a_beat_ms, 3 * LEASE_MS + 1)
    assert await b.beat() == [run_id]
    record = await runs.get(run_id)
    assert record is not None
    assert (record.status, record.reason) == (RunStatus.ABANDONED, "owner_died")
    assert [n.node for n in await NodeStore(state).live(clock.wall_ms(), 3 * LEASE_MS)] == [B]
    # A beat of a node that is alive never touches its own run.
    own = await runs.start("housekeeping", Trigger.SCHEDULE, B, clock.wall_ms(), {})
    await clock.advance(10 * LEASE_MS / 1000)
    assert await b.beat() == []
    assert {r.id for r in await runs.running()} == {own}


async def test_each_beat_records_version_and_clock_skew_and_warns_once_per_crossing(
    state: Database, caplog: pytest.LogCaptureFixture
) -> None:
    fast = FakeClock(wall_ms=now_ms() + 120_000)  # a node whose clock is 2 minutes fast
    on_time = FakeClock(wall_ms=now_ms())
    skewed, good = heartbeat(state, fast, A), heartbeat(state, on_time, B)
    with caplog.at_level(logging.INFO, logger="warmupd.heartbeat"):
        await skewed.beat()
        await skewed.beat()
        await good.beat()
        nodes = {n.node: n for n in await NodeStore(state).live(now_ms(), 3_600_000)}
        assert set(nodes) == {A, B}
        assert nodes[A].version == nodes[B].version == "9.9.9"
        if state.dialect.name == "sqlite":
            # Not applicable: the file's clock is the host's, the one the processes read.
            assert (nodes[A].skew_ms, nodes[B].skew_ms) == (None, None)
            assert (skewed.skew_ms, skewed.degraded_reason(), caplog.records) == (None, None, [])
            return
        # Generous bounds: the fake clocks stand still while the server's moves on.
        skew_a, skew_b = nodes[A].skew_ms, nodes[B].skew_ms
        assert skew_a is not None
        assert skew_b is not None
        assert 110_000 <= skew_a <= 120_500, skew_a
        assert -10_000 <= skew_b <= 500, skew_b
        assert f"{skew_a} ms off the database's" in str(skewed.degraded_reason())
        assert good.degraded_reason() is None
        fast.set_wall_ms(now_ms())  # NTP steps the clock back
        await skewed.beat()
    events = [(r.msg, r.levelno) for r in caplog.records]
    assert events == [("clock.skewed", logging.WARNING), ("clock.skew_ok", logging.INFO)]
    assert skewed.skew_ms is not None
    assert abs(skewed.skew_ms) <= SKEW_LIMIT_MS
    assert skewed.degraded_reason() is None


def test_a_short_lease_beats_often_enough_to_stay_live() -> None:
    assert interval_s(60_000) == 10.0
    assert interval_s(3_000) == 1.0  # 3 leases = 9 beats
