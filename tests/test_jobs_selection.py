"""The seed's selection rules (SPEC §6), one fixture per OR branch and per ordering key."""

from __future__ import annotations

from warmupd.models import Comparison
from warmupd.state.sqlite import SqliteDatabase
from warmupd.state.store import ComparisonStore

DAY = 86_400_000
NOW = 1_767_225_600_000
WEEK = 7 * DAY


async def add(
    store: ComparisonStore, slug: str, *, created: int, views: int = 0, visited: int | None = None
) -> None:
    series = ({"date": "2026-01-01", "a": 1, "b": 2},)
    await store.upsert(
        Comparison(slug=slug, term_a="a", term_b="b", timeframe="7d", series=series), created
    )
    if views or visited is not None:
        await store.add_views(slug, views, visited if visited is not None else 0)
        if visited is None:  # add_views sets last_visited; the fixture wants it NULL
            await store.db.execute(
                "UPDATE comparisons SET last_visited = NULL WHERE slug = ?", (slug,)
            )


async def test_forecast_selection_branches_and_order(db: SqliteDatabase) -> None:
    store = ComparisonStore(db)
    await add(store, "new-unvisited", created=NOW - DAY)  # branch 1: created within window
    await add(store, "old-visited", created=NOW - 90 * DAY, visited=NOW - 2 * DAY)  # branch 2
    await add(store, "old-viewed", created=NOW - 90 * DAY, views=3)  # branch 3 (NULL visit)
    await add(store, "old-dead", created=NOW - 90 * DAY)  # no branch: excluded
    await add(store, "old-stale-visit", created=NOW - 90 * DAY, visited=NOW - 30 * DAY)  # excluded
    await add(store, "popular", created=NOW - 90 * DAY, views=50, visited=NOW - 10 * DAY)
    # Ties on views: last_visited DESC decides, NULL last; then created_at DESC.
    await add(store, "tie-recent-visit", created=NOW - 80 * DAY, views=3, visited=NOW - DAY)
    await add(store, "tie-null-newer", created=NOW - 70 * DAY, views=3)
    selected = [c.slug for c in await store.select_for_forecasts(NOW, WEEK, 50)]
    assert selected == [
        "popular",  # view_count DESC first
        "tie-recent-visit",  # 3 views, visited
        "tie-null-newer",  # 3 views, NULL visit, created later
        "old-viewed",  # 3 views, NULL visit, created earlier
        "old-visited",  # 0 views, visited 2 days ago
        "new-unvisited",  # 0 views, NULL visit
    ]
    assert [c.slug for c in await store.select_for_forecasts(NOW, WEEK, 2)] == selected[:2]


async def test_forecast_selection_boundary_is_inclusive(db: SqliteDatabase) -> None:
    store = ComparisonStore(db)
    await add(store, "exactly-window", created=NOW - WEEK)
    await add(store, "just-outside", created=NOW - WEEK - 1)
    assert [c.slug for c in await store.select_for_forecasts(NOW, WEEK, 10)] == ["exactly-window"]


async def test_insights_selection_branches_and_order(db: SqliteDatabase) -> None:
    store = ComparisonStore(db)
    window = 30 * DAY
    await add(store, "many-views-old", created=NOW - 400 * DAY, views=500)  # branch 1 (NULL visit)
    await add(store, "few-views-recent", created=NOW - 400 * DAY, views=2, visited=NOW - DAY)  # 2
    await add(store, "few-views-old", created=NOW - 400 * DAY, views=9, visited=NOW - 60 * DAY)
    await add(store, "brand-new", created=NOW - DAY)  # created recently is NOT a branch here
    await add(store, "ten-views", created=NOW - 400 * DAY, views=10, visited=NOW - 40 * DAY)
    await add(store, "ten-views-recent", created=NOW - 400 * DAY, views=10, visited=NOW - 2 * DAY)
    selected = [c.slug for c in await store.select_for_insights(NOW, window, 10, 30)]
    assert selected == ["many-views-old", "ten-views-recent", "ten-views", "few-views-recent"]
    assert [c.slug for c in await store.select_for_insights(NOW, window, 10, 1)] == [
        "many-views-old"
    ]


async def test_selection_walks_the_popularity_index_and_stops_early(db: SqliteDatabase) -> None:
    store = ComparisonStore(db)
    await add(store, "viewed", created=NOW - 90 * DAY, views=3)
    sent: list[tuple[str, object]] = []
    original = db.fetchall

    async def recording(sql: str, params: object = ()) -> object:
        sent.append((sql, params))
        return await original(sql, params)  # type: ignore[arg-type]

    db.fetchall = recording  # type: ignore[method-assign, assignment]
    await store.select_for_forecasts(NOW, WEEK, 1)  # enough popular rows: one statement
    assert len(sent) == 1
    await store.select_for_forecasts(NOW, WEEK, 5)  # too few: the recent rows are asked next
    assert len(sent) == 3
    del db.fetchall
    plans = [
        " ".join(str(tuple(r)) for r in await db.fetchall(f"EXPLAIN QUERY PLAN {sql}", params))  # type: ignore[arg-type]
        for sql, params in sent
    ]
    assert "comparisons_popularity" in plans[0]
    assert "TEMP B-TREE" not in plans[0]  # no sort: the index order is the result order
    assert "comparisons_recent" in plans[2]
    assert "comparisons_visited" in plans[2]
