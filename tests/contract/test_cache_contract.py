"""Cache entries, unchanged on every state backend (SPEC §7, §14): freshness, fencing, the joined read."""

from __future__ import annotations

import json
from typing import Any

from warmupd.models import Comparison, Freshness
from warmupd.state import Database
from warmupd.state.cache import CacheStore, forecast_key, insights_key
from warmupd.state.store import ComparisonStore

NOW = 1_767_225_600_000
FRESH, STALE = 1_000, 5_000
SERIES = ({"date": "2026-01-01", "a": 1, "b": 2},)


async def put(
    cache: CacheStore,
    key: str,
    *,
    slug: str = "x",
    data_hash: str = "h",
    value: dict[str, Any] | None = None,
    now_ms: int = NOW,
    fence_key: str = "lock:x",
    fence: int = 1,
    version: str = "v1",
) -> bool:
    return await cache.put(
        key,
        kind=key.split(":", 1)[0],
        slug=slug,
        data_hash=data_hash,
        version=version,
        value=value if value is not None else {"k": key},
        now_ms=now_ms,
        fresh_ttl_ms=FRESH,
        stale_ttl_ms=STALE,
        fence_key=fence_key,
        fence=fence,
    )


async def test_freshness_follows_the_ttls(state: Database) -> None:
    cache = CacheStore(state)
    assert await put(cache, "forecast:x:termA:h")
    keys = ["forecast:x:termA:h", "insights:x:h"]
    assert await cache.freshness(keys, NOW) == {
        keys[0]: (Freshness.FRESH, "v1"),
        keys[1]: (Freshness.MISSING, ""),
    }
    assert (await cache.freshness(keys, NOW + FRESH))[keys[0]] == (Freshness.STALE, "v1")
    assert (await cache.freshness(keys, NOW + STALE))[keys[0]] == (Freshness.MISSING, "v1")
    assert await cache.freshness([], NOW) == {}


async def test_a_stale_holder_never_overwrites_a_newer_one(state: Database) -> None:
    cache = CacheStore(state)
    key = insights_key("x", "h")
    assert await put(cache, key, fence=5, value={"by": 5})
    assert not await put(cache, key, fence=4, value={"by": 4})  # same lineage, older token
    assert await put(cache, key, fence=5, value={"by": "5 again"})  # the holder itself
    row = await state.fetchone("SELECT value, fence FROM cache_entries WHERE key = ?", (key,))
    assert row is not None
    assert (json.loads(row["value"]), row["fence"]) == ({"by": "5 again"}, 5)
    # Tokens of another lock are not comparable: that write replaces the entry.
    assert await put(cache, key, fence=1, fence_key="other", value={"by": "other"})
    row = await state.fetchone("SELECT value, fence_key FROM cache_entries WHERE key = ?", (key,))
    assert row is not None
    assert (json.loads(row["value"]), row["fence_key"]) == ({"by": "other"}, "other")


async def test_the_joined_read_returns_heads_live_entries_and_the_version(state: Database) -> None:
    comparisons, cache = ComparisonStore(state), CacheStore(state)
    _, data_hash = await comparisons.upsert(
        Comparison(slug="x", term_a="a", term_b="b", timeframe="7d", series=SERIES), NOW
    )
    await comparisons.upsert(
        Comparison(slug="y", term_a="c", term_b="d", timeframe="7d", series=SERIES), NOW
    )
    await put(cache, forecast_key("x", "termA", data_hash), data_hash=data_hash, value={"f": 1})
    await put(cache, insights_key("x", data_hash), data_hash=data_hash, value={"i": [1, 2]})
    await put(cache, insights_key("x", "old-hash"), data_hash="old-hash")  # not the current hash
    await put(cache, forecast_key("x", "termB", data_hash), data_hash=data_hash, now_ms=NOW - STALE)
    version, found = await cache.read_comparisons(["x", "y", "nope"], NOW, values=True)
    assert version >= 0
    assert set(found) == {"x", "y"}
    head, entries = found["x"]
    assert (head.slug, head.term_a, head.term_b, head.data_hash, head.points) == (
        "x",
        "a",
        "b",
        data_hash,
        1,
    )
    # Expired entries (termB) and entries of another dataHash are not live.
    assert set(entries) == {forecast_key("x", "termA", data_hash), insights_key("x", data_hash)}
    insights = entries[insights_key("x", data_hash)]
    assert insights.text is not None
    assert json.loads(insights.text) == {"i": [1, 2]}
    assert insights.freshness_at(NOW) is Freshness.FRESH
    assert (insights.fresh_until_ms, insights.stale_until_ms) == (NOW + FRESH, NOW + STALE)
    assert found["y"][1] == {}
    _, heads_only = await cache.read_comparisons(["x"], NOW, values=False)
    assert all(e.text is None for e in heads_only["x"][1].values())
    # Unknown slugs alone still learn the version.
    assert (await cache.read_comparisons(["nope"], NOW, values=False))[0] == version


async def test_every_write_a_reader_serves_bumps_the_state_version(state: Database) -> None:
    comparisons, cache = ComparisonStore(state), CacheStore(state)
    seen = [await cache.state_version()]

    async def bumped() -> bool:
        seen.append(await cache.state_version())
        return seen[-1] > seen[-2]

    comparison = Comparison(slug="x", term_a="a", term_b="b", timeframe="7d", series=SERIES)
    await comparisons.upsert(comparison, NOW)
    assert await bumped()
    await comparisons.add_views("x", 3, NOW)  # views change nothing a read path serves
    assert not await bumped()
    await put(cache, insights_key("x", "h"))
    assert await bumped()
    await cache.purge_expired(NOW + STALE)
    assert await bumped()
    await state.execute("DELETE FROM comparisons WHERE slug = ?", ("x",))
    assert await bumped()


async def test_purge_totals_and_counts(state: Database) -> None:
    cache = CacheStore(state)
    await put(cache, "forecast:a:termA:h", now_ms=NOW)
    await put(cache, "forecast:b:termA:h", now_ms=NOW - FRESH)  # stale at NOW
    await put(cache, "insights:c:h", now_ms=NOW - STALE)  # expired at NOW
    assert await cache.totals(NOW) == {"fresh": 1, "stale": 1, "expired": 1}
    assert await cache.counts(NOW) == {
        ("forecast", "fresh"): 1,
        ("forecast", "stale"): 1,
        ("insights", "expired"): 1,
    }
    assert await cache.purge_expired(NOW) == 1
    assert await cache.totals(NOW) == {"fresh": 1, "stale": 1, "expired": 0}
