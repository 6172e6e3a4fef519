"""The resizable concurrency limit behind on_demand.concurrency (reloadable, SPEC §17)."""

from __future__ import annotations

import asyncio

import pytest

from warmupd.jobs.slots import Slots


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_grow_admits_waiters_at_once_and_shrink_drains_without_interrupting() -> None:
    slots = Slots(1)
    order: list[str] = []
    release = {name: asyncio.Event() for name in "abcd"}

    async def work(name: str) -> None:
        async with slots:
            order.append(name)
            await release[name].wait()

    tasks = [asyncio.create_task(work(n)) for n in "abcd"]
    await settle()
    assert (order, slots.in_use) == (["a"], 1)
    slots.resize(3)
    await settle()
    assert (order, slots.in_use, slots.limit) == (["a", "b", "c"], 3, 3)
    slots.resize(1)  # nobody is interrupted; "d" waits until fewer than one are in use
    release["a"].set()
    release["b"].set()
    await settle()
    assert order == ["a", "b", "c"]
    release["c"].set()
    await settle()
    assert order == ["a", "b", "c", "d"]
    release["d"].set()
    await asyncio.gather(*tasks)
    assert slots.in_use == 0


async def test_a_cancelled_waiter_gives_its_place_and_any_granted_slot_back() -> None:
    slots = Slots(1)
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    await settle()
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    # Granted and cancelled in the same step: the slot is passed on, not lost.
    granted = asyncio.create_task(slots.acquire())
    await settle()
    slots.release()  # hands the slot to `granted`...
    granted.cancel()  # ...which is cancelled before it could run
    await asyncio.gather(granted, return_exceptions=True)
    assert slots.in_use == 0
    await asyncio.wait_for(slots.acquire(), 1)
    assert slots.in_use == 1


def test_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        Slots(0)
