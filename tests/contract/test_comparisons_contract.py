"""The comparisons repository, unchanged on every state backend (SPEC §3, §6, §14)."""

from __future__ import annotations

from warmupd.models import Comparison
from warmupd.state import Database
from warmupd.state.store import ComparisonStore

DAY = 86_400_000
NOW = 1_767_225_600_000
WEEK = 7 * DAY
SERIES = ({"date": "2026-01-01", "a": 1, "b": 2}, {"date": "2026-01-02", "a": 3, "b": 4})


def comparison(
    slug: str, term_a: str = "a", term_b: str = "b", geo: str = "", category: str = ""
) -> Comparison:
    return Comparison(
        slug=slug,
        term_a=term_a,
        term_b=term_b,
        timeframe="7d",
        geo=geo,
        category=category,
        series=SERIES,
    )


async def add(
    store: ComparisonStore, slug: str, *, created: int, views: int = 0, visited: int | None = None
) -> None:
    await store.upsert(comparison(slug), created)
    if views or visited is not None:
        await store.add_views(slug, views, visited if visited is not None else 0)
        if visited is None:  # add_views sets last_visited; the fixture wants it NULL
            await store.db.execute(
                "UPDATE comparisons SET last_visited = NULL WHERE slug = ?", (slug,)
            )


async def test_upsert_creates_then_replaces_keeping_views_and_created_at(state: Database) -> None:
    store = ComparisonStore(state)
    created, data_hash = await store.upsert(comparison("x", geo="DE", category="7"), NOW)
    assert created
    assert data_hash == comparison("x").data_hash
    assert await store.add_views("x", 5, NOW + 10) == (5, NOW + 10)
    changed = Comparison(slug="x", term_a="c", term_b="d", timeframe="30d", series=SERIES[:1])
    created, new_hash = await store.upsert(changed, NOW + DAY)
    assert not created
    assert new_hash == changed.data_hash != data_hash
    got = await store.get("x")
    assert got is not None
    assert (got.term_a, got.term_b, got.timeframe, got.geo, got.category) == (
        "c",
        "d",
        "30d",
        "",
        "",
    )
    assert got.series == SERIES[:1]
    assert (got.view_count, got.last_visited_ms) == (5, NOW + 10)
    assert (got.created_at_ms, got.updated_at_ms) == (NOW, NOW + DAY)
    assert await store.get("missing") is None
    assert await store.count() == 1


async def test_add_views_accumulates_and_never_moves_last_visited_back(state: Database) -> None:
    store = ComparisonStore(state)
    await store.upsert(comparison("x"), NOW)
    assert await store.add_views("x", 2, NOW + 100) == (2, NOW + 100)
    assert await store.add_views("x", 3, NOW + 50) == (5, NOW + 100)
    assert await store.add_views("unknown", 1, NOW) is None


async def test_search_by_prefix_of_slug_or_either_term_most_viewed_first(state: Database) -> None:
    store = ComparisonStore(state)
    await store.upsert(comparison("iphone-vs-android", "iphone", "android"), NOW)
    await store.upsert(comparison("cats-vs-dogs", "cats", "dogs"), NOW)
    await store.upsert(comparison("pixel-vs-iphone", "pixel", "iphone"), NOW)
    await store.upsert(comparison("ipad-vs-tablet", "ipad", "tablet"), NOW)
    await store.add_views("pixel-vs-iphone", 9, NOW)
    await store.add_views("ipad-vs-tablet", 3, NOW)
    found = [c.slug for c in await store.search("iph", 10)]
    assert found == ["pixel-vs-iphone", "iphone-vs-android"]
    assert [c.slug for c in await store.search("ip", 2)] == ["pixel-vs-iphone", "ipad-vs-tablet"]
    assert [c.slug for c in await store.search("dog", 10)] == ["cats-vs-dogs"]
    assert await store.search("zzz", 10) == []
    # Code-point order on both backends: a prefix is a range, never a collation's idea of one.
    assert [c.slug for c in await store.search("I", 10)] == []
    everything = [c.slug for c in await store.search("", 2)]
    assert everything == ["pixel-vs-iphone", "ipad-vs-tablet"]


async def test_forecast_selection_branches_and_order(state: Database) -> None:
    store = ComparisonStore(state)
    await add(store, "new-unvisited", created=NOW - DAY)
    await add(store, "old-visited", created=NOW - 90 * DAY, visited=NOW - 2 * DAY)
    await add(store, "old-viewed", created=NOW - 90 * DAY, views=3)
    await add(store, "old-dead", created=NOW - 90 * DAY)
    await add(store, "old-stale-visit", created=NOW - 90 * DAY, visited=NOW - 30 * DAY)
    await add(store, "popular", created=NOW - 90 * DAY, views=50, visited=NOW - 10 * DAY)
    await add(store, "tie-recent-visit", created=NOW - 80 * DAY, views=3, visited=NOW - DAY)
    await add(store, "tie-null-newer", created=NOW - 70 * DAY, views=3)
    selected = [c.slug for c in await store.select_for_forecasts(NOW, WEEK, 50)]
    # view_count DESC, then last_visited DESC with NULLs last (PostgreSQL sorts them first
    # unless told), then created_at DESC.
    assert selected == [
        "popular",
        "tie-recent-visit",
        "tie-null-newer",
        "old-viewed",
        "old-visited",
        "new-unvisited",
    ]
    assert [c.slug for c in await store.select_for_forecasts(NOW, WEEK, 2)] == selected[:2]
    assert [c.slug for c in await store.select_for_forecasts(NOW, WEEK, 5)] == selected[:5]


async def test_insights_selection_branches_and_order(state: Database) -> None:
    store = ComparisonStore(state)
    await add(store, "many-views", created=NOW - 90 * DAY, views=20)
    await add(store, "few-views-recent", created=NOW - 90 * DAY, views=2, visited=NOW - DAY)
    await add(store, "few-views-old", created=NOW - 90 * DAY, views=2, visited=NOW - 60 * DAY)
    await add(store, "min-views-unvisited", created=NOW - 90 * DAY, views=10)
    await add(store, "zero-recent", created=NOW - 90 * DAY, visited=NOW - 2 * DAY)
    selected = [c.slug for c in await store.select_for_insights(NOW, 30 * DAY, 10, 50)]
    assert selected == ["many-views", "min-views-unvisited", "few-views-recent", "zero-recent"]
