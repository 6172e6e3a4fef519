"""schedule_state keeps "never fired" (NULL) apart from a fire at the epoch (issue 17, SPEC §17).

The save used to write ``max(coalesce(old, 0), coalesce(new, 0))``: the second start of a fresh
install stored ``last_fire_at = 0`` and the third counted every slot since 1970 as missed.
"""

from __future__ import annotations

from pathlib import Path

from tests.fakes import FakeClock
from warmupd.models import Fire
from warmupd.scheduler import JobSchedule
from warmupd.scheduler_loop import Misfire, Scheduler
from warmupd.state.sqlite import SqliteDatabase
from warmupd.state.store import ScheduleStore

HOUR_MS = 3_600_000


async def raw_last_fire(db: SqliteDatabase, job: str) -> object:
    row = await db.fetchone("SELECT last_fire_at FROM schedule_state WHERE job = ?", (job,))
    assert row is not None
    return row["last_fire_at"]


async def test_a_round_trip_keeps_never_fired_as_null(db: SqliteDatabase) -> None:
    store = ScheduleStore(db)
    await store.save("daily", None, 1_000)
    await store.save("daily", None, 2_000)  # the update path, where NULL used to become 0
    assert await store.load("daily") == (None, 2_000)
    assert await raw_last_fire(db, "daily") is None


async def test_a_fire_replaces_null_and_null_never_replaces_a_fire(db: SqliteDatabase) -> None:
    store = ScheduleStore(db)
    await store.save("daily", None, 1_000)
    await store.save("daily", 1_000, 2_000)
    assert await store.load("daily") == (1_000, 2_000)
    await store.save("daily", None, 3_000)
    assert await store.load("daily") == (1_000, 3_000)
    await store.save("daily", 500, 4_000)  # last_fire_at never moves backwards
    assert await store.load("daily") == (1_000, 4_000)


async def test_a_fire_at_the_epoch_is_kept_as_zero(db: SqliteDatabase) -> None:
    store = ScheduleStore(db)
    await store.save("daily", 0, 1_000)
    await store.save("daily", None, 2_000)
    assert await store.load("daily") == (0, 2_000)


class Claims:
    """Fire claims in memory, recorded (set-if-absent, as SPEC §4 asks of every backend)."""

    def __init__(self) -> None:
        self.claimed: set[tuple[str, int]] = set()

    async def claim_fire(self, job: str, due_ms: int, ttl_ms: int) -> bool:
        if (job, due_ms) in self.claimed:
            return False
        self.claimed.add((job, due_ms))
        return True

    async def release_fire(self, job: str, due_ms: int) -> bool:
        return (job, due_ms) in self.claimed and not self.claimed.discard((job, due_ms))


async def test_three_starts_of_a_fresh_install_without_a_fire_record_no_misfire(
    tmp_path: Path, clock: FakeClock
) -> None:
    """start, stop, start, stop, start — as the issue reproduced it — on one real SQLite file."""
    fires: list[Fire] = []
    misfires: list[Misfire] = []
    claims = Claims()

    async def on_fire(fire: Fire) -> None:
        fires.append(fire)

    async def on_misfire(missed: Misfire) -> None:
        misfires.append(missed)

    # 22:13 UTC; the daily 02:00 fire is hours away, the hourly :17 one minutes away.
    jobs = [
        JobSchedule(name="daily", expr="0 2 * * *", misfire_grace_ms=6 * HOUR_MS),
        JobSchedule(name="weekly", expr="0 3 * * 0", misfire_grace_ms=24 * HOUR_MS),
    ]
    for _ in range(3):
        async with SqliteDatabase(tmp_path / "warmupd.db") as db:
            scheduler = Scheduler(
                jobs,
                state=ScheduleStore(db),
                claimer=claims,
                clock=clock,
                on_fire=on_fire,
                on_misfire=on_misfire,
            )
            assert await scheduler.start_up(clock.wall_ms()) == []
            assert all(scheduler.next_run_ms(job.name) is not None for job in jobs)
        await clock.advance(60)  # the daemon was down for a minute
    assert (fires, misfires, claims.claimed) == ([], [], set())
    async with SqliteDatabase(tmp_path / "warmupd.db") as db:
        for job in jobs:
            assert await raw_last_fire(db, job.name) is None
