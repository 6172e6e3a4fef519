"""P5 — scheduler lateness of seconds-level fires, warmupd beside APScheduler 3 in the same run.

Run: ``python -m bench.p5_scheduler`` (``--seconds N``, default 65; ``--quick`` for 5 s).

Both schedulers run **concurrently on one event loop** in one process, on the real clock, each with
an every-second schedule:

* warmupd: :class:`warmupd.scheduler_loop.Scheduler` with ``*/1 * * * * *`` (6-field, seconds first,
  UTC), its real :meth:`~warmupd.scheduler_loop.Scheduler.run` loop, the real
  :class:`~warmupd.locks.sqlite.SqliteLocks` as the fire claimer and the real
  :class:`~warmupd.store.ScheduleStore`, both on a temporary state file: each fire pays its claim
  (a primary-key insert in SQLite) before it is handed over, exactly as in the daemon.
* APScheduler 3: ``AsyncIOScheduler`` with ``CronTrigger(second='*')`` (UTC) and a coroutine job.

Lateness = the wall time at which the callback starts − the fire's due time. warmupd's callback
gets the due time in :class:`~warmupd.models.Fire`; APScheduler's job derives it as the whole second
it runs in (its fires are on whole seconds and any fire later than ``misfire_grace_time`` = 1 s is
dropped and counted as missed instead). Both fire at the same instants, so on each second one of
them runs first and the other may wait for it; that cost falls on both in turn.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from apscheduler.events import EVENT_JOB_MISSED, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from bench.common import Result, Verdict, describe, finish, machine_line
from warmupd.clock import SystemClock
from warmupd.db import Database
from warmupd.locks.sqlite import SqliteLocks
from warmupd.models import Fire
from warmupd.scheduler import JobSchedule
from warmupd.scheduler_loop import Scheduler
from warmupd.store import ScheduleStore

TARGET_P99_MS = 20.0


def _now_ms() -> float:
    return time.time_ns() / 1_000_000


async def measure(seconds: float, state_path: Path) -> dict[str, Any]:
    """Run both schedulers for ``seconds``; return their lateness samples in milliseconds."""
    warmupd_ms: list[float] = []
    aps_ms: list[float] = []
    aps_missed: list[str] = []
    clock = SystemClock()

    async def on_fire(fire: Fire) -> None:
        warmupd_ms.append(_now_ms() - fire.due_ms)

    async def aps_job() -> None:
        now = _now_ms()
        aps_ms.append(now - (now // 1000) * 1000)

    async with Database(state_path) as db:
        scheduler = Scheduler(
            [JobSchedule(name="bench-p5", expr="*/1 * * * * *", timezone="UTC")],
            state=ScheduleStore(db),
            claimer=SqliteLocks(db, clock, "bench"),
            clock=clock,
            on_fire=on_fire,
        )
        aps = AsyncIOScheduler(timezone="UTC")
        aps.add_job(
            aps_job,
            CronTrigger(second="*", timezone="UTC"),
            misfire_grace_time=1,
            coalesce=True,
            max_instances=1,
        )

        def on_missed(event: JobEvent) -> None:
            aps_missed.append(str(event.scheduled_run_time))

        aps.add_listener(on_missed, EVENT_JOB_MISSED)
        aps.start()
        runner = asyncio.create_task(scheduler.run())
        try:
            await asyncio.sleep(seconds)
        finally:
            scheduler.stop()
            aps.shutdown(wait=False)
            await runner
    return {"warmupd": warmupd_ms, "apscheduler": aps_ms, "apscheduler_missed": aps_missed}


async def _run(seconds: float) -> Result:
    # APScheduler logs every execution at INFO and warmupd its fires; keep both quiet and equal.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="warmupd-bench-p5-") as tmp:
        samples = await measure(seconds, Path(tmp) / "warmupd.db")
    ours, ref = describe(samples["warmupd"]), describe(samples["apscheduler"])
    met = ours["p99"] <= ref["p99"] and ours["p99"] <= TARGET_P99_MS
    verdicts = [
        Verdict(
            target="P5",
            what=f"scheduler lateness over {ours['n']} fires",
            figure=f"p50 {ours['p50']:.2f} ms, p99 {ours['p99']:.2f} ms",
            reference=(
                f"APScheduler 3 p50 {ref['p50']:.2f} ms, p99 {ref['p99']:.2f} ms "
                f"({ref['n']} fires, {len(samples['apscheduler_missed'])} missed)"
            ),
            ratio=ours["p99"] / ref["p99"] if ref["p99"] > 0 else None,
            bound=f"p99 ≤ APScheduler's and ≤ {TARGET_P99_MS:.0f} ms",
            met=met,
        )
    ]
    data = {
        "seconds": seconds,
        "mode": "concurrent, one event loop; warmupd claims through SqliteLocks",
        "warmupd": ours | {"raw": samples["warmupd"]},
        "apscheduler": ref | {"raw": samples["apscheduler"]},
        "apscheduler_missed": samples["apscheduler_missed"],
    }
    return Result(name="p5_scheduler", verdicts=verdicts, data=data)


def run(quick: bool = False, seconds: float | None = None) -> Result:
    """Run P5 and return its verdict (printed and saved under ``bench/results/``)."""
    started = time.perf_counter()
    print(f"[p5_scheduler] machine: {machine_line()}")
    duration = seconds if seconds is not None else (5.0 if quick else 65.0)
    result = asyncio.run(_run(duration))
    for name in ("warmupd", "apscheduler"):
        s = result.data[name]
        print(
            f"  {name:11} n={s['n']:3}  p50 {s['p50']:6.2f} ms  p90 {s['p90']:6.2f} ms  "
            f"p99 {s['p99']:6.2f} ms  max {s['max']:6.2f} ms"
        )
    return finish(result, started)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.p5_scheduler [--quick | --seconds N]``; exit 1 when the target is missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.p5_scheduler", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 seconds only")
    parser.add_argument("--seconds", type=float, default=None, help="how long to run (65)")
    args = parser.parse_args(argv)
    return 0 if all(v.met for v in run(args.quick, args.seconds).verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
