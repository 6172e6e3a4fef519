"""Schedule state, warmup status rows and paused jobs, unchanged on every state backend."""

from __future__ import annotations

from warmupd.models import WarmupState
from warmupd.state import Database
from warmupd.state.pauses import PauseStore
from warmupd.state.store import ScheduleStore, WarmupStore


async def test_schedule_state_round_trip_and_never_fired_stays_null(state: Database) -> None:
    store = ScheduleStore(state)
    assert await store.load("daily") == (None, None)
    await store.save("daily", None, 1_000)
    await store.save("daily", None, 2_000)  # the update path, where NULL once became 0
    assert await store.load("daily") == (None, 2_000)
    await store.save("daily", 1_000, 3_000)
    assert await store.load("daily") == (1_000, 3_000)
    await store.save("daily", None, 4_000)  # NULL never replaces a fire
    assert await store.load("daily") == (1_000, 4_000)
    await store.save("daily", 500, 5_000)  # last_fire_at never moves backwards
    assert await store.load("daily") == (1_000, 5_000)
    await store.save("epoch", 0, 1_000)
    await store.save("epoch", None, 2_000)
    assert await store.load("epoch") == (0, 2_000)
    assert await store.load("daily") == (1_000, 5_000)


async def test_warmup_rows_keep_their_run_id_and_purge_by_age(state: Database) -> None:
    store = WarmupStore(state)
    assert await store.get("x", "h1") is None
    await store.set("x", "h1", WarmupState.QUEUED, 1_000)
    await store.set("x", "h1", WarmupState.RUNNING, 2_000, run_id=7)
    await store.set("x", "h1", WarmupState.FAILED, 3_000, error="boom")
    row = await store.get("x", "h1")
    assert row is not None
    assert (row.status, row.updated_at_ms, row.error, row.run_id) == (
        WarmupState.FAILED,
        3_000,
        "boom",
        7,
    )
    await store.set("x", "h2", WarmupState.READY, 5_000)
    assert await store.purge_before(4_000) == 1
    assert await store.get("x", "h1") is None
    assert await store.get("x", "h2") is not None


async def test_pauses_keep_the_first_pause_time(state: Database) -> None:
    store = PauseStore(state)
    assert await store.pause("daily", 1_000, "node-a") == 1_000
    assert await store.pause("daily", 2_000, "node-b") == 1_000
    assert await store.is_paused("daily")
    assert await store.paused() == {"daily": 1_000}
    assert await store.resume("daily")
    assert not await store.resume("daily")
    assert not await store.is_paused("daily")
