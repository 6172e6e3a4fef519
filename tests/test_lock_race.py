"""N processes × M rounds on one lock: holds never overlap (SPEC §5), and the harness can fail.

Each worker is a separate interpreter (its own connection / client), started together, logging
``(fence, start_ns, end_ns)`` per hold on CLOCK_MONOTONIC (system-wide on Linux, so intervals of
different processes compare) and doing a non-atomic read → write on a shared counter file.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lock_support import ROOT, delete_prefix, new_prefix, require_redis, worker_env
from tests.pg_support import fresh_database
from warmupd.state.postgres import PostgresDatabase
from warmupd.state.sqlite import SqliteDatabase

WORKER = str(ROOT / "tests" / "lock_worker.py")
PROCESSES = 8
ROUNDS = 200

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "redis", pytest.param("postgresql", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``(backend, target)``: a migrated SQLite file, a private Redis key prefix, or the URL of a
    migrated PostgreSQL database of this test's own."""
    if request.param == "postgresql":
        with fresh_database("race_") as url:

            async def migrate() -> None:
                async with PostgresDatabase(url):
                    pass

            asyncio.run(migrate())
            yield "postgresql", url
        return
    if request.param == "sqlite":
        path = tmp_path / "warmupd.db"

        async def create() -> None:
            async with SqliteDatabase(path):
                pass

        asyncio.run(create())
        yield "sqlite", str(path)
        return
    require_redis()
    prefix = new_prefix()
    try:
        yield "redis", prefix
    finally:
        delete_prefix(prefix)


def run_workers(
    mode: str, backend: str, target: str, tmp_path: Path, n: int, rounds: int, *extra: str
) -> list[list[str]]:
    """Start ``n`` workers, release them together, return each one's log lines."""
    counter = tmp_path / "counter"
    counter.write_text("0")
    outs = [tmp_path / f"out-{mode}-{i}.log" for i in range(n)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                WORKER,
                mode,
                backend,
                target,
                "--id",
                str(i),
                "--rounds",
                str(rounds),
                "--counter",
                str(counter),
                "--out",
                str(outs[i]),
                *extra,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=worker_env(),
            text=True,
        )
        for i in range(n)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.wait(timeout=60) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
    return [out.read_text().split("\n")[:-1] for out in outs]


def holds_of(logs: list[list[str]]) -> list[tuple[int, int, int]]:
    """All ``(start_ns, end_ns, fence)`` in start order."""
    holds = []
    for lines in logs:
        for line in lines:
            fence, start, end = map(int, line.split())
            holds.append((start, end, fence))
    return sorted(holds)


def overlaps(holds: list[tuple[int, int, int]]) -> int:
    """How many holds started before an earlier-started hold had ended."""
    count, latest_end = 0, -1
    for start, end, _ in holds:
        if start < latest_end:
            count += 1
        latest_end = max(latest_end, end)
    return count


def test_race_never_overlaps(target: tuple[str, str], tmp_path: Path) -> None:
    backend, where = target
    logs = run_workers("race", backend, where, tmp_path, PROCESSES, ROUNDS)
    holds = holds_of(logs)

    assert len(holds) >= 100, "too few successful holds for the race to mean anything"
    assert sum(1 for lines in logs if lines) >= 2, "more than one process must have won"
    assert overlaps(holds) == 0
    assert int((tmp_path / "counter").read_text()) == len(holds)  # no lost update
    fences = [fence for _, _, fence in holds]
    assert all(a < b for a, b in itertools.pairwise(fences)), "fences must rise in start order"


def test_broken_lock_is_caught_by_the_same_harness(target: tuple[str, str], tmp_path: Path) -> None:
    backend, where = target
    logs = run_workers("race", backend, where, tmp_path, PROCESSES, 60, "--broken")
    holds = holds_of(logs)

    assert overlaps(holds) > 0
    assert int((tmp_path / "counter").read_text()) < len(holds)  # lost updates too


def test_two_processes_claim_each_fire_once(target: tuple[str, str], tmp_path: Path) -> None:
    backend, where = target
    fires = 150
    logs = run_workers("claim", backend, where, tmp_path, 2, fires)

    wins: dict[int, int] = {}
    for lines in logs:
        assert len(lines) == fires
        for line in lines:
            due, won = map(int, line.split())
            wins[due] = wins.get(due, 0) + won
    assert len(wins) == fires
    assert set(wins.values()) == {1}, "every fire claimed by exactly one process"
