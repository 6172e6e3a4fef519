"""The lock contract (SPEC §5 "Tests"), run unchanged against SQLite, real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import pytest

from tests.contract.conftest import Harness
from tests.lock_support import wait_for_condition
from warmupd.errors import LockedElsewhere, LockLost, ServiceUnavailable
from warmupd.locks import Locks, drain_background, hold, lease_margin_ms, renewing
from warmupd.models import Acquired, AcquireResult, Held, Lease, Unavailable
from warmupd.state.cache import CacheStore
from warmupd.state.sqlite import SqliteDatabase

LEASE_MS = 3_000
KEY = "warmup:forecasts:lock"


def lease_of(result: AcquireResult) -> Lease:
    assert isinstance(result, Acquired), result
    return result.lease


async def test_exclusion_and_release(backend: Harness) -> None:
    first = lease_of(await backend.a.acquire(KEY, LEASE_MS))
    assert first.backend == backend.name
    assert first.key == KEY
    assert first.lease_ms == LEASE_MS
    assert isinstance(await backend.b.acquire(KEY, LEASE_MS), Held)
    # The same client is no exception: a second acquisition is a different owner.
    assert isinstance(await backend.a.acquire(KEY, LEASE_MS), Held)

    assert await backend.a.release(first) is True
    second = lease_of(await backend.b.acquire(KEY, LEASE_MS))
    assert second.token != first.token
    assert isinstance(await backend.a.acquire(KEY, LEASE_MS), Held)
    # Releasing twice is harmless and says it changed nothing.
    assert await backend.a.release(first) is False
    assert isinstance(await backend.a.acquire(KEY, LEASE_MS), Held)


async def test_independent_keys_do_not_interfere(backend: Harness) -> None:
    lease_of(await backend.a.acquire("warmup:forecasts:lock", LEASE_MS))
    lease_of(await backend.b.acquire("warmup:ai-explanations:lock", LEASE_MS))
    lease_of(await backend.b.acquire("warmup:on-demand:iphone-vs-android:0123abcd", LEASE_MS))


async def test_unreachable_backend_is_unavailable_not_held(backend: Harness) -> None:
    lease_of(await backend.a.acquire(KEY, LEASE_MS))
    broken = backend.unavailable()
    try:
        result = await broken.acquire(KEY, LEASE_MS)
        assert isinstance(result, Unavailable)
        assert result.reason
        fake = Lease(key=KEY, token="0" * 32, fence=1, backend=backend.name, lease_ms=LEASE_MS)
        with pytest.raises(ServiceUnavailable):
            await broken.renew(fake)
        with pytest.raises(ServiceUnavailable):
            await broken.release(fake)
        with pytest.raises(ServiceUnavailable):
            await broken.claim_fire("warmup-forecasts", 1, 60_000)
    finally:
        await broken.close()


async def test_release_after_expiry_does_not_delete_new_owners_lock(backend: Harness) -> None:
    stale = lease_of(await backend.a.acquire(KEY, LEASE_MS))
    await backend.expire(KEY)
    fresh = lease_of(await backend.b.acquire(KEY, LEASE_MS))

    assert await backend.a.release(stale) is False
    assert isinstance(await backend.a.acquire(KEY, LEASE_MS), Held)
    assert await backend.b.renew(fresh) is True


async def test_only_the_owner_renews(backend: Harness) -> None:
    lease = lease_of(await backend.a.acquire(KEY, LEASE_MS))
    forged = Lease(key=KEY, token="f" * 32, fence=lease.fence, backend=lease.backend, lease_ms=10)
    assert await backend.b.renew(forged) is False
    assert await backend.b.release(forged) is False
    assert await backend.a.renew(lease) is True

    await backend.expire(KEY)
    # Expired but not yet taken: lost all the same (the same rule on both backends).
    assert await backend.a.renew(lease) is False
    taker = lease_of(await backend.b.acquire(KEY, LEASE_MS))
    assert await backend.a.renew(lease) is False
    assert await backend.b.renew(taker) is True


async def test_expiry_boundary(backend: Harness) -> None:
    # Short: on Redis the expiry is the server's own clock and the test waits for it.
    lease_of(await backend.a.acquire(KEY, 300))
    await backend.to_just_before_expiry(KEY)
    assert isinstance(await backend.b.acquire(KEY, LEASE_MS), Held)
    await backend.to_expiry(KEY)
    lease_of(await backend.b.acquire(KEY, LEASE_MS))


async def test_fences_strictly_increase(backend: Harness) -> None:
    fences: list[int] = []
    for _ in range(3):  # acquire -> release -> acquire
        lease = lease_of(await backend.a.acquire(KEY, LEASE_MS))
        fences.append(lease.fence)
        assert await backend.a.release(lease)
    lease_of(await backend.a.acquire(KEY, LEASE_MS))
    await backend.expire(KEY)  # takeover after expiry
    taken = lease_of(await backend.b.acquire(KEY, LEASE_MS))
    fences.append(taken.fence)
    await backend.b.release(taken)

    # Another key gets fences too; then the first key's stored entry goes away and comes back.
    other = lease_of(await backend.a.acquire("warmup:housekeeping:lock", LEASE_MS))
    await backend.a.release(other)
    await backend.forget(KEY)
    reused = lease_of(await backend.b.acquire(KEY, LEASE_MS))
    fences.append(reused.fence)

    assert all(x < y for x, y in itertools.pairwise(fences)), fences


async def test_stale_holders_cache_write_is_rejected(backend: Harness, tmp_path: Path) -> None:
    async with SqliteDatabase(tmp_path / "cache.db") as db:
        store = CacheStore(db)

        async def write(locks: Locks, lease: Lease, value: str) -> bool:
            return await store.put(
                "forecast:iphone-vs-android:iphone:0123abcd",
                kind="forecast",
                slug="iphone-vs-android",
                data_hash="0123abcd",
                version="v1",
                value={"by": value},
                now_ms=backend.clock.wall_ms(),
                fresh_ttl_ms=60_000,
                stale_ttl_ms=120_000,
                fence_key=locks.fence_key(lease),
                fence=lease.fence,
            )

        stale = lease_of(await backend.a.acquire(KEY, LEASE_MS))
        await backend.expire(KEY)  # A is "paused" past its lease
        fresh = lease_of(await backend.b.acquire(KEY, LEASE_MS))
        assert backend.a.fence_key(stale) == backend.b.fence_key(fresh)
        assert await write(backend.b, fresh, "B") is True
        assert await write(backend.a, stale, "A") is False
        row = await db.fetchone(
            "SELECT value FROM cache_entries WHERE key = ?",
            ("forecast:iphone-vs-android:iphone:0123abcd",),
        )
        assert row is not None
        assert json.loads(row["value"]) == {"by": "B"}


async def test_concurrent_tasks_one_winner(backend: Harness) -> None:
    results = await asyncio.gather(
        *(locks.acquire(KEY, LEASE_MS) for locks in [backend.a, backend.b] * 8)
    )
    winners = [r for r in results if isinstance(r, Acquired)]
    assert len(winners) == 1
    assert all(isinstance(r, Held) for r in results if not isinstance(r, Acquired))


async def test_claim_fire_once(backend: Harness) -> None:
    job, due = "warmup-forecasts", 1_700_000_400_000
    assert await backend.a.claim_fire(job, due, 3_600_000) is True
    assert await backend.b.claim_fire(job, due, 3_600_000) is False
    assert await backend.a.claim_fire(job, due, 3_600_000) is False  # a new call, not a retry
    assert await backend.b.claim_fire(job, due + 60_000, 3_600_000) is True
    assert await backend.b.claim_fire("warmup-ai-explanations", due, 3_600_000) is True

    racers = await asyncio.gather(
        *(locks.claim_fire(job, due + 120_000, 3_600_000) for locks in [backend.a, backend.b] * 8)
    )
    assert racers.count(True) == 1

    await backend.expire_claim(job, due)
    assert await backend.b.claim_fire(job, due, 3_600_000) is True


async def test_only_the_claimer_gives_a_fire_back(backend: Harness) -> None:
    job, due = "housekeeping", 1_700_000_500_000
    assert await backend.a.claim_fire(job, due, 3_600_000) is True
    assert await backend.b.release_fire(job, due) is False  # not b's claim: untouched
    assert await backend.b.claim_fire(job, due, 3_600_000) is False
    assert await backend.a.release_fire(job, due) is True
    assert await backend.a.release_fire(job, due) is False  # already given back
    assert await backend.b.claim_fire(job, due, 3_600_000) is True  # another process may run it


async def test_invalid_arguments_are_rejected(backend: Harness) -> None:
    with pytest.raises(ValueError, match="lock key"):
        await backend.a.acquire("bad {key}", LEASE_MS)
    with pytest.raises(ValueError, match="lease_ms"):
        await backend.a.acquire(KEY, 0)
    with pytest.raises(ValueError, match="ttl_ms"):
        await backend.a.claim_fire("job", 1, 0)


async def test_hold_renews_every_third_and_releases(backend: Harness) -> None:
    clock = backend.clock
    async with hold(backend.a, KEY, LEASE_MS, clock) as handle:
        for expected in (1, 2, 3, 4):
            await clock.advance(LEASE_MS / 3000)
            await wait_for_condition(lambda n=expected: handle.renewals == n)  # type: ignore[misc]
        # Four renewals spanned more than a whole lease; the lock is still ours.
        handle.check()
        assert isinstance(await backend.b.acquire(KEY, LEASE_MS), Held)
        assert await backend.b.renew(handle.lease) is True  # the same token renews anywhere
    lease_of(await backend.b.acquire(KEY, LEASE_MS))


async def test_hold_signals_lost_when_taken_over(backend: Harness) -> None:
    clock = backend.clock
    reasons: list[str] = []
    async with hold(backend.a, KEY, LEASE_MS, clock, on_lost=reasons.append) as handle:
        await backend.expire(KEY)
        lease_of(await backend.b.acquire(KEY, LEASE_MS))
        await clock.advance(LEASE_MS / 3000)
        await asyncio.wait_for(handle.lost.wait(), 10)
        assert reasons == ["lost"]
        with pytest.raises(LockLost):
            handle.check()
    # Leaving did not release the new owner's lock.
    assert isinstance(await backend.a.acquire(KEY, LEASE_MS), Held)


async def test_hold_raises_when_not_acquired(backend: Harness) -> None:
    lease_of(await backend.b.acquire(KEY, LEASE_MS))
    with pytest.raises(LockedElsewhere):
        async with hold(backend.a, KEY, LEASE_MS, backend.clock):
            pytest.fail("must not enter")
    broken = backend.unavailable()
    try:
        with pytest.raises(ServiceUnavailable):
            async with hold(broken, KEY, LEASE_MS, backend.clock):
                pytest.fail("must not enter")
    finally:
        await broken.close()


async def test_hold_releases_on_error_and_cancellation(backend: Harness) -> None:
    with pytest.raises(RuntimeError):
        async with hold(backend.a, KEY, LEASE_MS, backend.clock):
            raise RuntimeError("item blew up")
    lease = lease_of(await backend.b.acquire(KEY, LEASE_MS))
    await backend.b.release(lease)

    entered = asyncio.Event()

    async def holder() -> None:
        async with hold(backend.a, KEY, LEASE_MS, backend.clock):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(holder())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    lease_of(await backend.b.acquire(KEY, LEASE_MS))


class StalledRenew(Locks):
    """Wraps a backend; renewals never return (a starved or hung renewal path)."""

    def __init__(self, inner: Locks) -> None:
        super().__init__()
        self.inner = inner
        self.name = inner.name

    async def _acquire(self, key: str, lease_ms: int) -> AcquireResult:
        return await self.inner.acquire(key, lease_ms)

    async def renew(self, lease: Lease) -> bool:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def release(self, lease: Lease) -> bool:
        return await self.inner.release(lease)

    async def claim_fire(self, job: str, due_ms: int, ttl_ms: int) -> bool:
        return await self.inner.claim_fire(job, due_ms, ttl_ms)

    async def release_fire(self, job: str, due_ms: int) -> bool:
        return await self.inner.release_fire(job, due_ms)


async def test_local_deadline_fires_before_the_lease_can_expire(backend: Harness) -> None:
    clock = backend.clock
    stalled = StalledRenew(backend.a)
    async with hold(stalled, KEY, LEASE_MS, clock) as handle:
        margin_s = lease_margin_ms(LEASE_MS) / 1000
        await clock.advance(LEASE_MS / 1000 - margin_s - 0.001)
        handle.check()  # still inside the deadline
        await clock.advance(0.001)
        # check() sees the deadline by itself, even without the renewal task running.
        with pytest.raises(LockLost, match="deadline"):
            handle.check()
        await asyncio.wait_for(handle.lost.wait(), 10)
    lease_of(await backend.b.acquire(KEY, LEASE_MS))


async def test_renewing_an_acquired_lease(backend: Harness) -> None:
    lease = lease_of(await backend.a.acquire(KEY, LEASE_MS))
    async with renewing(backend.a, lease, backend.clock) as handle:
        await backend.clock.advance(LEASE_MS / 3000)
        await wait_for_condition(lambda: handle.renewals == 1)
        assert handle.remaining_s() > 0
    lease_of(await backend.b.acquire(KEY, LEASE_MS))


async def test_cancelled_acquire_leaves_no_orphan_lock(backend: Harness) -> None:
    for delay_rounds in range(6):
        task = asyncio.create_task(backend.a.acquire(KEY, LEASE_MS))
        for _ in range(delay_rounds):  # cancel at different points of the request
            await asyncio.sleep(0)
        task.cancel()
        try:
            result = await task
        except asyncio.CancelledError:
            pass
        else:
            await backend.a.release(lease_of(result))
        await drain_background()
        # Whether or not the request reached the backend, nobody is left holding the lock.
        taken = lease_of(await backend.b.acquire(KEY, LEASE_MS))
        assert await backend.b.release(taken) is True
