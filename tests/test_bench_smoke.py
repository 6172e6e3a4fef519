"""Keep the benchmark scripts from rotting: each runs end to end at a tiny size.

No timing is asserted (benchmarks measure time; tests do not): only that each produces its verdicts
and raw figures and cleans up after itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from bench import common, p4_locks, p5_scheduler, p8_selection
from tests.lock_support import require_redis


def test_percentile_and_describe() -> None:
    assert common.percentile([1, 2, 3, 4], 50) == 2.5
    assert common.percentile([5], 99) == 5
    stats = common.describe([3.0, 1.0, 2.0])
    assert (stats["min"], stats["p50"], stats["max"], stats["n"]) == (1.0, 2.0, 3.0, 3)
    with pytest.raises(ValueError, match="no values"):
        common.percentile([], 50)


async def test_interleaved_alternates_order() -> None:
    calls: list[str] = []

    def variant(name: str) -> Callable[[], Awaitable[float]]:
        async def go() -> float:
            calls.append(name)
            return float(len(calls))

        return go

    out = await common.interleaved({"a": variant("a"), "b": variant("b")}, 3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert out == {"a": [1.0, 4.0, 5.0], "b": [2.0, 3.0, 6.0]}


async def test_p4_sqlite_smoke(tmp_path: Path) -> None:
    rates = await p4_locks.bench_sqlite(20, 2, tmp_path / "p4.db")
    assert set(rates) == {"warmupd", "bare"}
    assert all(len(v) == 2 and min(v) > 0 for v in rates.values())


async def test_p4_redis_smoke() -> None:
    require_redis()
    rates = await p4_locks.bench_redis(20, 2)
    assert set(rates) == {"warmupd", "redis-py"}
    assert all(len(v) == 2 and min(v) > 0 for v in rates.values())


@pytest.mark.slow
async def test_p5_smoke(tmp_path: Path) -> None:
    samples = await p5_scheduler.measure(1.5, 1, tmp_path / "p5.db")
    # A 1.5 s window holds one or two whole seconds for each scheduler.
    assert 1 <= len(samples["warmupd"]) <= 2
    assert 1 <= len(samples["apscheduler"]) <= 2
    assert all(x >= 0 for x in samples["warmupd"])


async def test_p8_smoke(tmp_path: Path) -> None:
    path = tmp_path / "p8.db"
    async with p8_selection.Database(path):
        pass
    p8_selection.generate(path, 3_000)
    data = await p8_selection.measure(path, 2)
    assert data["forecasts"]["rows"] == 50
    assert data["insights"]["rows"] == 30
    assert data["insights_worst"]["rows"] == 0
    assert data["forecasts_worst"]["rows"] == 10
    assert any("comparisons_popularity" in line for line in data["plan_forecasts"])
