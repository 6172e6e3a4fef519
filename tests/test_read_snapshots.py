"""The read snapshots kept in memory: their memory bound and a failing version check (SPEC §7)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeClock
from tests.test_jobs_warmups import comparison
from warmupd.config import parse_config
from warmupd.errors import ServiceUnavailable
from warmupd.jobs import parts
from warmupd.jobs.parts import CHANGE_CHECK_S, Warmer
from warmupd.producers.insights_builtin import BuiltinInsights
from warmupd.state.cache import CacheStore, insights_key
from warmupd.state.sqlite import SqliteDatabase
from warmupd.state.store import ComparisonStore


class NoCpu:
    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("reads never compute")

    def start(self) -> None:
        raise AssertionError("reads never start the pool")


class Counting(CacheStore):
    """Counts the joined read statements."""

    def __init__(self, db: SqliteDatabase) -> None:
        super().__init__(db)
        self.statements: list[list[str]] = []

    async def read_comparisons(self, slugs: list[str], now_ms: int, *, values: bool) -> Any:
        self.statements.append(sorted(slugs))
        return await super().read_comparisons(slugs, now_ms, values=values)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Warmer, Counting, FakeClock]]:
    cfg = parse_config({}, env={})
    clock = FakeClock(wall_ms=1_767_225_600_000)
    async with SqliteDatabase(tmp_path / "s.db") as db:
        cache = Counting(db)
        now = clock.wall_ms()
        for slug in ("s1", "s2", "s3"):
            c = comparison(slug)
            await ComparisonStore(db).upsert(c, now)
            await cache.put(
                insights_key(slug, c.data_hash),
                kind="insights",
                slug=slug,
                data_hash=c.data_hash,
                version="builtin/x/1",
                value={"text": "x" * 1000},
                now_ms=now,
                fresh_ttl_ms=86_400_000,
                stale_ttl_ms=2 * 86_400_000,
                fence_key="k",
                fence=1,
            )
        warmer = Warmer(
            cache=cache,
            cpu=NoCpu(),
            insights=BuiltinInsights(prompt_version="1"),
            cache_config=cfg.cache,
            forecast_config=cfg.forecast,
            clock=clock,
        )
        yield warmer, cache, clock


async def test_the_oldest_snapshots_are_dropped_beyond_the_memory_budget(
    setup: tuple[Warmer, Counting, FakeClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    warmer, cache, _ = setup
    monkeypatch.setattr(parts, "SNAPSHOT_BUDGET_BYTES", 2_500)  # two packs of ~1 KB fit
    for slug in ("s1", "s2", "s3"):
        read = await warmer.read(slug, values=True)
        assert read is not None
        assert read.texts["insights"] is not None
    assert len(cache.statements) == 3
    await warmer.read("s3", values=True)
    await warmer.read("s2", values=True)
    assert len(cache.statements) == 3  # both still kept
    await warmer.read("s1", values=True)  # dropped first: read again
    assert cache.statements[-1] == ["s1"]


async def test_a_failing_version_check_fails_the_read_and_the_next_check_recovers(
    setup: tuple[Warmer, Counting, FakeClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    warmer, cache, clock = setup
    assert await warmer.read("s1") is not None
    assert await warmer.read("s1") is not None  # the first hit checks the version once
    original = cache.state_version

    async def broken() -> int:
        raise ServiceUnavailable("database is gone")

    monkeypatch.setattr(cache, "state_version", broken)
    await clock.advance(CHANGE_CHECK_S)
    with pytest.raises(ServiceUnavailable):
        await warmer.read("s1")
    monkeypatch.setattr(cache, "state_version", original)
    read = await warmer.read("s1")
    assert read is not None
    assert len(cache.statements) == 1  # nothing changed: still the first statement's snapshot


async def test_kept_answers_only_what_snapshot_would_answer_without_waiting(
    setup: tuple[Warmer, Counting, FakeClock],
) -> None:
    warmer, cache, clock = setup
    assert warmer.kept("s1") is None  # nothing read yet
    first = await warmer.snapshot("s1")
    assert first is not None
    assert warmer.kept("s1") is None  # the version was never checked: a check is due
    assert await warmer.snapshot("s1") is first  # makes the check
    assert warmer.kept("s1") is first
    assert warmer.kept("s1", values=True) is None  # kept without the texts
    await clock.advance(CHANGE_CHECK_S)
    assert warmer.kept("s1") is None  # a check is due again
    assert await warmer.snapshot("s1") is first
    assert warmer.kept("s1") is first
    warmer.forget("s1")  # this process wrote it
    assert warmer.kept("s1") is None
    assert len(cache.statements) == 1
