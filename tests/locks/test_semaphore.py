"""The semaphore: never more than `limit` holders; a dead holder's permit comes back."""

from __future__ import annotations

import asyncio
import time

import pytest

import redkit
from locks._waiting import queued
from redkit._codegen import async_only
from redkit.locks import Permit


@pytest.mark.cluster
async def test_thirty_tasks_never_exceed_the_limit(rk: redkit.Redkit) -> None:
    sem = rk.semaphore("deploys", limit=3, ttl=10, timeout=30)
    inside = 0
    peak = 0
    served = 0

    async def deploy() -> None:
        nonlocal inside, peak, served
        async with sem:
            inside += 1
            peak = max(peak, inside)
            assert await sem.holders() <= 3
            await asyncio.sleep(0.01)
            inside -= 1
            served += 1

    await asyncio.gather(*(deploy() for _ in range(30)))
    assert served == 30
    assert peak == 3
    assert await sem.holders() == 0


@pytest.mark.cluster
async def test_a_dead_holders_permit_returns_after_its_lease(rk: redkit.Redkit) -> None:
    sem = rk.semaphore("one", limit=1, ttl=0.5, auto_renew=False)
    await sem.acquire()  # the holder "dies": it never releases or renews
    with pytest.raises(redkit.LockNotAcquired):
        await sem.acquire(timeout=0)
    began = time.perf_counter()
    permit = await sem.acquire(timeout=3)
    assert time.perf_counter() - began < 0.5 + 0.4
    await permit.release()


# Async only: its waiter is a task.
@async_only
@pytest.mark.cluster
async def test_a_released_permit_wakes_a_waiter_at_once(rk: redkit.Redkit) -> None:
    sem = rk.semaphore("two", limit=2, ttl=30)
    a, b = await sem.acquire(), await sem.acquire()
    waiting = asyncio.create_task(sem.acquire(timeout=5))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    released = time.perf_counter()
    await a.release()
    third = await waiting
    assert time.perf_counter() - released < 0.2
    await b.release()
    await third.release()


# Async only (it waits with asyncio.wait_for); sync: tests/sync/test_threads.py.
@async_only
@pytest.mark.cluster
async def test_auto_renew_keeps_permits_and_a_lost_one_is_reported(rk: redkit.Redkit) -> None:
    lost: list[Permit] = []
    sem = rk.semaphore("renewed", limit=1, ttl=0.6, on_lost=lost.append)
    async with sem as permit:
        await asyncio.sleep(1.0)  # past the ttl: the watchdog renewed it
        assert permit.held
        assert await sem.holders() == 1
    assert await sem.holders() == 0

    permit = await sem.acquire()
    await rk.redis.delete(rk.keys.group("sem", "renewed").key("holders"))
    await asyncio.wait_for(permit.lost_event.wait(), timeout=2)
    assert lost == [permit]
    with pytest.raises(redkit.LockLost):
        await permit.release()


# Async only: its waiters are tasks.
@async_only
@pytest.mark.cluster
async def test_a_fair_semaphore_serves_waiters_in_arrival_order(rk: redkit.Redkit) -> None:
    sem = rk.semaphore("fifo", limit=1, fair=True, timeout=10)
    first = await sem.acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        async with sem:
            order.append(i)
            await asyncio.sleep(0.01)

    tasks = []
    for i in range(4):
        tasks.append(asyncio.create_task(waiter(i)))
        await asyncio.sleep(0.03)
    await first.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]


# Async only: its waiters are tasks.
@async_only
async def test_a_fair_semaphore_keeps_arrival_order_within_one_millisecond(
    rk: redkit.Redkit,
) -> None:
    # Started together, the waiters' first attempts travel in one pipelined batch (standalone),
    # so they queue within one millisecond; their random tokens must not reorder them.
    for round_ in range(5):
        sem = rk.semaphore(f"fifo-tie-{round_}", limit=1, fair=True, timeout=10)
        first = await sem.acquire()
        order: list[int] = []

        async def waiter(i: int, sem: redkit.Semaphore = sem, order: list[int] = order) -> None:
            async with sem:
                order.append(i)

        tasks = [asyncio.create_task(waiter(i)) for i in range(4)]
        await queued(rk, rk.keys.group("sem", f"fifo-tie-{round_}").key("queue"), 4)
        await first.release()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3]


async def test_a_permit_cannot_be_released_twice(rk: redkit.Redkit) -> None:
    sem = rk.semaphore("twice", limit=1)
    permit = await sem.acquire()
    await permit.release()
    with pytest.raises(redkit.InvalidInput, match="already released"):
        await permit.release()
    assert "released" in repr(permit)
