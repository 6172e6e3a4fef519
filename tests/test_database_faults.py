"""The pieces of SPEC §14 "Faults" one at a time, with fakes and injected time (no services).

The health state's database part; start-up's wait (back-off 1 s doubling to 30 s, configuration
errors not retried, SIGTERM while waiting); the recovery probe; the final run record that waits for
the database; the scheduler giving a fire back when the database is away; which driver errors are
transient. The real daemon against a real server: tests/test_daemon_pg_faults.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tests.fakes import FakeClock
from tests.test_scheduler_tick import FakeClock as SteppingClock
from tests.test_scheduler_tick import MemoryClaimer, MemoryState, at
from warmupd.config import parse_config
from warmupd.errors import DatabaseRejected, DatabaseUnavailable, SchemaTooNew
from warmupd.health import Health
from warmupd.jobs.run_state import ActiveRun, Tally, record_finish
from warmupd.metrics import Metrics
from warmupd.models import Fire, RunStatus
from warmupd.scheduler import JobSchedule
from warmupd.scheduler_loop import Misfire, Scheduler
from warmupd.startup import open_database, probe_database, retry_delays
from warmupd.state.postgres import PostgresDatabase, is_transient
from warmupd.wiring import new_health

DOWN = "cannot connect to postgresql://w@db:5432/w: ConnectionRefusedError"


class FlakyDatabase:
    """Refuses ``failures`` opens (then opens); its statements fail while :attr:`down`."""

    def __init__(self, failures: list[BaseException], health: Health | None = None) -> None:
        self.failures = list(failures)
        self.opens = 0
        self.down = False
        self.health = health

    async def open(self, *, migrate: bool = True) -> None:
        self.opens += 1
        if self.failures:
            raise self.failures.pop(0)

    async def fetchone(self, sql: str, params: Any = ()) -> Any:
        if self.down:
            raise DatabaseUnavailable(DOWN)
        if self.health is not None:  # what the real backend's listener does on an answer
            self.health.observe_database(True)
        return (1,)


class InstantClock(FakeClock):
    """Records each sleep and returns at once (the loop under test decides what comes next)."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)


def test_health_tracks_the_database_and_every_view_follows_at_once() -> None:
    metrics = Metrics()
    health = new_health(parse_config({}, env={}), metrics, database_up=False)
    assert (health.database, metrics.database_up.value()) == ("down", 0)
    assert health.observe_database(False, DOWN) is False  # no change: the reason is kept
    assert health.database_error == DOWN
    assert health.observe_database(True) is True
    assert (health.database, health.database_error) == ("up", None)
    assert metrics.database_up.value() == 1  # before observe_database returned
    health.observe_database(False, "later reason")
    assert (metrics.database_up.value(), health.database_error) == (0, "later reason")


def test_retry_delays_double_from_one_second_to_thirty() -> None:
    delays = retry_delays()
    assert [next(delays) for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]


async def test_start_up_keeps_trying_with_back_off_then_reports_up() -> None:
    clock = InstantClock()
    health = Health(redis_configured=False, database_up=False)
    db = FlakyDatabase([DatabaseUnavailable(DOWN) for _ in range(7)])
    waited: list[tuple[str, float]] = []

    async def on_waiting(reason: str, retry_s: float) -> None:
        assert not health.database_up  # every view says down while waiting
        waited.append((reason, retry_s))

    opened = await open_database(
        db,  # type: ignore[arg-type]
        health=health,
        clock=clock,
        stop=asyncio.Event(),
        on_waiting=on_waiting,
    )
    assert opened is True
    assert db.opens == 8
    assert clock.sleeps == [1, 2, 4, 8, 16, 30, 30]
    assert [r for r, _ in waited] == [DOWN] * 7
    assert health.database_up


@pytest.mark.parametrize(
    "error",
    [
        DatabaseRejected(
            "state database postgresql://w@db/w refused warmupd: InvalidPasswordError"
        ),
        SchemaTooNew("postgresql://w@db/w", 9, 3),
    ],
)
async def test_start_up_does_not_wait_for_a_configuration_error(error: Exception) -> None:
    clock = InstantClock()
    db = FlakyDatabase([DatabaseUnavailable(DOWN), error])
    with pytest.raises(type(error)):
        await open_database(
            db,  # type: ignore[arg-type]
            health=Health(redis_configured=False, database_up=False),
            clock=clock,
            stop=asyncio.Event(),
            on_waiting=lambda *_: asyncio.sleep(0),
        )
    assert (db.opens, clock.sleeps) == (2, [1])


async def test_a_stop_while_waiting_ends_the_wait_without_opening() -> None:
    clock = FakeClock()  # sleeps park until advanced: only the stop can end this one
    stop = asyncio.Event()
    db = FlakyDatabase([DatabaseUnavailable(DOWN) for _ in range(3)])

    async def on_waiting(_reason: str, _retry_s: float) -> None:
        stop.set()  # SIGTERM arrives while waiting

    opened = await open_database(
        db,  # type: ignore[arg-type]
        health=Health(redis_configured=False, database_up=False),
        clock=clock,
        stop=stop,
        on_waiting=on_waiting,
    )
    assert (opened, db.opens) == (False, 1)


async def test_the_probe_tries_a_lost_database_with_back_off_until_it_answers() -> None:
    clock = FakeClock()
    health = Health(redis_configured=False)
    db = FlakyDatabase([], health)
    probe = asyncio.create_task(probe_database(db, health, clock))  # type: ignore[arg-type]
    try:
        await clock.advance(0)
        db.down = True
        health.observe_database(False, DOWN)  # a statement found it gone
        await clock.advance(0)  # the probe wakes and starts its first back-off sleep
        await clock.advance(1)  # first probe: still down
        assert not health.database_up
        db.down = False
        await clock.advance(1.9)  # the next probe is 2 s after the first
        assert not health.database_up
        await clock.advance(0.1)
        assert health.database_up
    finally:
        probe.cancel()
        await asyncio.gather(probe, return_exceptions=True)


class FlakyRuns:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def finish(self, run_id: int, **fields: Any) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise DatabaseUnavailable(DOWN)
        return f"run {run_id} {fields['status']}"


async def test_a_final_run_record_waits_for_the_database_instead_of_being_lost() -> None:
    clock = InstantClock()
    runs = FlakyRuns(failures=3)
    record = await record_finish(runs, clock, 7, status="failed")  # type: ignore[arg-type]
    assert record == "run 7 failed"
    assert (runs.calls, clock.sleeps) == (4, [1, 2, 4])


@pytest.mark.parametrize(
    ("lease_backend", "reason"),
    [("redis", "database_unavailable"), ("postgresql", "lock_lost")],
)
def test_a_run_that_loses_the_database_fails_lock_lost_when_its_lease_lived_there(
    lease_backend: str, reason: str
) -> None:
    active = ActiveRun("warmup-forecasts", lease_backend=lease_backend)
    assert active.database_lost() == reason
    assert active.database_lost() == reason  # the first reason stays
    assert active.final_status(Tally(), selected=5) == (RunStatus.FAILED, reason)


async def test_scheduler_gives_fires_back_while_the_database_is_away_then_follows_misfire_rules() -> (
    None
):
    clock = SteppingClock(at("2026-03-02T10:00:00Z"))
    claimer, state = MemoryClaimer(), MemoryState()
    handed: list[Fire] = []
    missed: list[Misfire] = []
    database_up = True

    async def on_fire(fire: Fire) -> None:
        if not database_up:
            raise DatabaseUnavailable(DOWN)  # the runner could not record the run
        handed.append(fire)

    async def on_misfire(misfire: Misfire) -> None:
        if not database_up:
            raise DatabaseUnavailable(DOWN)
        missed.append(misfire)

    scheduler = Scheduler(
        [JobSchedule(name="h", expr="* * * * *", timezone="UTC", misfire_grace_ms=90_000)],
        state=state,
        claimer=claimer,
        clock=clock,
        on_fire=on_fire,
        on_misfire=on_misfire,
    )
    await scheduler.start_up(at("2026-03-02T10:00:30Z"))
    assert [f.due_ms for f in await scheduler.tick(at("2026-03-02T10:01:00Z"))] == [
        at("2026-03-02T10:01:00Z")
    ]
    database_up = False  # lost while running
    assert await scheduler.tick(at("2026-03-02T10:02:00Z")) == []
    assert await scheduler.tick(at("2026-03-02T10:03:00Z")) == []
    assert list(claimer.claimed) == [("h", at("2026-03-02T10:01:00Z"))]  # the others given back
    database_up = True
    (fire,) = await scheduler.tick(at("2026-03-02T10:04:00Z"))
    # §4: the slot older than misfire_grace is recorded as missed; those within it run once.
    assert [(m.first_due_ms, m.count) for m in missed] == [(at("2026-03-02T10:02:00Z"), 1)]
    assert (fire.due_ms, fire.coalesced) == (at("2026-03-02T10:04:00Z"), 2)
    assert handed[-1] == fire


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionRefusedError(111, "refused"), True),
        (TimeoutError(), True),
        (asyncpg.CannotConnectNowError("the database system is starting up"), True),
        (asyncpg.AdminShutdownError("terminating connection"), True),
        (asyncpg.TooManyConnectionsError("too many clients"), True),
        (asyncpg.ConnectionDoesNotExistError("connection was closed"), True),
        (asyncpg.InterfaceError("cannot call Connection.fetch(): connection is closed"), True),
        (asyncpg.InterfaceError("the server expects 2 arguments, 1 was passed"), False),
        (asyncpg.InvalidPasswordError("password authentication failed"), False),
        (asyncpg.InvalidCatalogNameError('database "x" does not exist'), False),
        (asyncpg.UniqueViolationError("duplicate key"), False),
    ],
)
def test_which_driver_errors_mean_the_server_cannot_answer_now(
    exc: BaseException, transient: bool
) -> None:
    assert is_transient(exc) is transient


async def test_an_unreachable_server_is_transient_and_names_the_url_without_password() -> None:
    from tests.lock_support import free_port

    url = f"postgresql://warmupd@127.0.0.1:{free_port()}/warmupd"
    reports: list[tuple[bool, str | None]] = []
    db = PostgresDatabase(url, password="never-Shown-4242", connect_timeout_ms=2_000)
    db.on_health = lambda up, why: reports.append((up, why))
    with pytest.raises(DatabaseUnavailable) as err:
        await db.open()
    assert err.value.message.startswith(f"cannot connect to {url}: ")
    assert "never-Shown-4242" not in err.value.message
    assert reports == [(False, err.value.message)]
    with pytest.raises(DatabaseUnavailable):
        await db.fetchone("SELECT 1")  # not open: unavailable, never an AttributeError
