"""P1 — job makespan of 200 heavy-tailed items at concurrency 5, vs the lower bound and fixed batches.

Run: ``python -m bench.p1_makespan`` (3 repetitions of each runner, ~25 s; ``--quick`` for one
repetition at a fifth of the time scale).

* warmupd: the real :class:`~warmupd.jobs.runner.JobRunner` (job-level limit, the job lock through
  :class:`~warmupd.locks.sqlite.SqliteLocks` with its renewal task, the run record through
  :class:`~warmupd.state.runs.RunStore`, all on a temporary SQLite state file, the real clock) running a
  bench job whose ``process`` sleeps the item's latency. The makespan is measured from ``trigger``
  to the finished run record, so the lock, the selection and both run-record writes are inside it.
* fixed batches (the seed's approach): the same items in batches of 5, each batch one
  ``asyncio.gather`` that waits for its slowest item before the next batch starts.

Latencies: 200 draws from a seeded lognormal (σ = 1.2: a few items take 10–30× the median), scaled
so that Σt/C = 2 s. Lower bound = max(Σt/C, max t). The two runners alternate (ABBA…) and each
figure is the median over the repetitions.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Result, Verdict, finish, interleaved, machine_line
from warmupd.clock import SystemClock
from warmupd.config import JOB_FORECASTS, parse_config
from warmupd.jobs.base import Fencing, ItemOutcome, Job, RunSettings
from warmupd.jobs.runner import JobRunner
from warmupd.locks.sqlite import SqliteLocks
from warmupd.models import RunStatus, Trigger
from warmupd.state.runs import RunStore
from warmupd.state.sqlite import SqliteDatabase

ITEMS = 200
CONCURRENCY = 5
TARGET_RATIO = 1.10
SIGMA = 1.2


def latencies(n: int, per_slot_s: float, seed: int = 20240901) -> list[float]:
    """``n`` seeded lognormal latencies (seconds) scaled so that their sum / C = ``per_slot_s``."""
    rng = random.Random(seed)
    raw = [rng.lognormvariate(0.0, SIGMA) for _ in range(n)]
    scale = per_slot_s * CONCURRENCY / sum(raw)
    return [x * scale for x in raw]


def lower_bound(items: list[float], concurrency: int = CONCURRENCY) -> float:
    """max(Σt/C, max t): no schedule on C slots can finish sooner."""
    return max(sum(items) / concurrency, max(items))


def ideal_sliding(items: list[float], concurrency: int = CONCURRENCY) -> float:
    """The makespan of a zero-overhead sliding window in list order (greedy list scheduling)."""
    slots = [0.0] * concurrency
    for t in items:
        heapq.heapreplace(slots, slots[0] + t)
    return max(slots)


def ideal_batches(items: list[float], concurrency: int = CONCURRENCY) -> float:
    """The makespan of zero-overhead fixed batches: Σ over batches of the batch's slowest item."""
    return sum(max(items[i : i + concurrency]) for i in range(0, len(items), concurrency))


class SleepJob(Job[tuple[int, float]]):
    """A job whose item ``(index, seconds)`` sleeps ``seconds``; it records the item window."""

    name = JOB_FORECASTS
    lock_key = "warmup:bench-p1:lock"

    def __init__(self, items: list[float]) -> None:
        self.items = list(enumerate(items))
        self.first_start: float | None = None
        self.last_end = 0.0

    async def select(self, settings: RunSettings, now_ms: int) -> list[tuple[int, float]]:
        return self.items[: settings.limit]

    async def process(self, item: tuple[int, float], fencing: Fencing, now_ms: int) -> ItemOutcome:
        if self.first_start is None:
            self.first_start = time.perf_counter()
        await asyncio.sleep(item[1])
        self.last_end = time.perf_counter()
        return ItemOutcome.processed()

    def label(self, item: tuple[int, float]) -> str:
        return f"item-{item[0]}"


async def measure(items: list[float], repetitions: int, state_path: Path) -> dict[str, Any]:
    """Makespans (seconds) of both runners on ``items``, interleaved, plus the runs' records."""
    cfg = parse_config(
        {"jobs": {JOB_FORECASTS: {"concurrency": CONCURRENCY, "limit": len(items)}}}, env={}
    )
    clock = SystemClock()
    windows: list[float] = []
    statuses: list[str] = []
    async with SqliteDatabase(state_path) as db:
        runner_locks = SqliteLocks(db, clock, "bench:p1")
        runs = RunStore(db)

        async def warmupd_runner() -> float:
            job = SleepJob(items)
            runner = JobRunner(
                jobs={job.name: job},
                config=lambda: cfg,
                locks=runner_locks,
                runs=runs,
                clock=clock,
                node="bench:p1",
            )
            started = time.perf_counter()
            handle = await runner.trigger(job.name, Trigger.CLI)
            record = await handle.wait()
            elapsed = time.perf_counter() - started
            statuses.append(f"{record.status.value}/{record.processed}")
            if record.status is not RunStatus.SUCCESS or record.processed != len(items):
                raise RuntimeError(f"P1 run did not complete: {record}")
            assert job.first_start is not None
            windows.append(job.last_end - job.first_start)
            return elapsed

        async def fixed_batches() -> float:
            started = time.perf_counter()
            for i in range(0, len(items), CONCURRENCY):
                await asyncio.gather(*(asyncio.sleep(t) for t in items[i : i + CONCURRENCY]))
            return time.perf_counter() - started

        out = await interleaved(
            {"warmupd": warmupd_runner, "fixed_batches": fixed_batches}, repetitions
        )
    return {**out, "item_window": windows, "records": statuses}


def run(quick: bool = False, repetitions: int | None = None) -> Result:
    """Run P1 and return its verdicts (printed and saved under ``bench/results/``)."""
    started = time.perf_counter()
    print(f"[p1_makespan] machine: {machine_line()}")
    per_slot_s = 0.4 if quick else 2.0
    reps = repetitions or (1 if quick else 3)
    items = latencies(ITEMS, per_slot_s)
    with tempfile.TemporaryDirectory(prefix="warmupd-bench-p1-") as tmp:
        samples = asyncio.run(measure(items, reps, Path(tmp) / "warmupd.db"))
    bound = lower_bound(items)
    ours = statistics.median(samples["warmupd"])
    batches = statistics.median(samples["fixed_batches"])
    ratio = ours / bound
    data = {
        "items": ITEMS,
        "concurrency": CONCURRENCY,
        "distribution": f"lognormal sigma={SIGMA}, seed 20240901, scaled to sum/C={per_slot_s}s",
        "sum_s": sum(items),
        "max_s": max(items),
        "p50_item_s": statistics.median(items),
        "lower_bound_s": bound,
        "ideal_sliding_s": ideal_sliding(items),
        "ideal_batches_s": ideal_batches(items),
        "warmupd_s": samples["warmupd"],
        "warmupd_item_window_s": samples["item_window"],
        "fixed_batches_s": samples["fixed_batches"],
        "records": samples["records"],
        "warmupd_median_s": ours,
        "fixed_batches_median_s": batches,
    }
    print(
        f"  Σt {data['sum_s']:.2f} s, max t {data['max_s']:.3f} s, bound {bound:.3f} s; "
        f"ideal sliding {data['ideal_sliding_s']:.3f} s, ideal batches {data['ideal_batches_s']:.3f} s"
    )
    print(
        f"  warmupd {ours:.3f} s ({ratio:.3f}× bound; item window "
        f"{statistics.median(samples['item_window']):.3f} s), fixed batches {batches:.3f} s "
        f"({batches / bound:.3f}× bound)"
    )
    verdicts = [
        Verdict(
            target="P1",
            what=f"makespan, {ITEMS} lognormal items at concurrency {CONCURRENCY}",
            figure=f"{ours:.3f} s = {ratio:.3f} × bound {bound:.3f} s",
            reference=f"fixed batches of {CONCURRENCY} {batches:.3f} s = {batches / bound:.3f} × bound",
            ratio=ratio,
            bound=f"≤ {TARGET_RATIO:.2f} × max(Σt/C, max t)",
            met=ratio <= TARGET_RATIO,
        )
    ]
    return finish(Result(name="p1_makespan", verdicts=verdicts, data=data), started)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.p1_makespan [--quick] [--repetitions N]``; exit 1 if missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.p1_makespan", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one repetition, 0.4 s per slot")
    parser.add_argument("--repetitions", type=int, default=None, help="per runner (3)")
    args = parser.parse_args(argv)
    result = run(args.quick, args.repetitions)
    return 0 if all(v.met for v in result.verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
