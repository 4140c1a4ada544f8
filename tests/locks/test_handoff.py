"""Direct hand-off: a release makes the first waiter the owner; nobody may strand that grant."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import pytest

import redkit
from locks._waiting import queued
from redkit.locks import Lock


async def _queued(rk: redkit.Redkit, name: str, count: int) -> None:
    """Wait until ``count`` waiters are queued for lock ``name``."""
    await queued(rk, rk.keys.group("lock", name).key("queue"), count)


async def _last_fence(rk: redkit.Redkit, name: str) -> int:
    """The fencing token lock ``name`` gave last (tokens are not consecutive: the server's
    clock drives them, so "the next token" is the one the server stored last)."""
    return int(await rk.redis.get(rk.keys.group("lock", name).key("fence")) or 0)


@pytest.mark.cluster
async def test_a_release_hands_the_lock_to_the_waiter_with_the_next_fencing_token(
    rk: redkit.Redkit,
) -> None:
    holder = rk.lock("pass", ttl=30)
    first = await holder.acquire()
    waiter = rk.lock("pass", ttl=2, auto_renew=False, timeout=5)
    got = asyncio.create_task(waiter.acquire())
    await _queued(rk, "pass", 1)
    seconds, microseconds = await rk.redis.time()
    await holder.release()
    # Made the owner by the release itself: the token the release gave, after the holder's,
    # and not below the server's clock (see test_lock.py).
    handed = await _last_fence(rk, "pass")
    assert await got == handed > first
    assert handed >= seconds * 1_000_000 + microseconds
    assert await waiter.owned()
    # The new lease is the waiter's own ttl (2 s), not the releasing holder's (30 s).
    owner = rk.keys.group("lock", "pass").key("owner")
    assert 0 < await rk.redis.pttl(owner) <= 2000
    with pytest.raises(redkit.LockNotAcquired):
        await rk.lock("pass").acquire(timeout=0)
    await waiter.release()
    assert not await waiter.locked()


@pytest.mark.cluster
async def test_a_non_fair_release_serves_waiters_in_arrival_order(rk: redkit.Redkit) -> None:
    order: list[int] = []
    holder = rk.lock("order")
    await holder.acquire()

    async def waiter(i: int) -> None:
        async with rk.lock("order", timeout=10):
            order.append(i)

    tasks = []
    for i in range(4):
        tasks.append(asyncio.create_task(waiter(i)))
        await _queued(rk, "order", i + 1)
    await holder.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]


async def test_waiters_arriving_in_the_same_millisecond_are_served_in_arrival_order(
    rk: redkit.Redkit,
) -> None:
    # Started together, the waiters' first attempts travel in one pipelined batch (standalone),
    # so they reach the queue within one millisecond; their random tokens must not reorder
    # them.
    for round_ in range(5):
        name = f"tie-{round_}"
        order: list[int] = []
        holder = rk.lock(name)
        await holder.acquire()

        async def waiter(i: int, name: str = name, order: list[int] = order) -> None:
            async with rk.lock(name, timeout=10):
                order.append(i)

        tasks = [asyncio.create_task(waiter(i)) for i in range(4)]
        await _queued(rk, name, 4)
        await holder.release()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3]


@pytest.mark.cluster
async def test_a_waiter_cancelled_as_the_lock_is_handed_to_it_passes_it_on(
    rk: redkit.Redkit,
) -> None:
    outcomes = set()
    for steps in range(8):
        name = f"cancel-{steps}"
        holder = rk.lock(name, ttl=30)
        await holder.acquire()
        doomed = rk.lock(name, ttl=30)
        doomed_task = asyncio.create_task(doomed.acquire())
        await _queued(rk, name, 1)
        nxt = rk.lock(name, ttl=30, timeout=5)
        next_task = asyncio.create_task(nxt.acquire())
        await _queued(rk, name, 2)
        release = asyncio.create_task(holder.release())
        for _ in range(steps):
            await asyncio.sleep(0)
        # Hold the loop while the server hands the lock over and both replies arrive, so
        # the cancellation lands before the waiter reads its hand-over.
        time.sleep(0.02)
        doomed_task.cancel()
        await release
        try:
            await doomed_task
        except asyncio.CancelledError:
            outcomes.add("cancelled")
        else:
            outcomes.add("acquired")
            await doomed.release()
        # The next waiter gets the lock now, not when the cancelled one's 30 s lease ends.
        began = time.perf_counter()
        await next_task
        assert time.perf_counter() - began < 3
        assert await nxt.owned()
        await nxt.release()
        assert not await nxt.locked()
    assert "cancelled" in outcomes


# Standalone only, like test_cancel.py: on a Cluster, redis-py's client can swallow a
# cancellation that lands early in a command (the call then returns normally), so the
# waiter would not be cancelled at every step.
async def test_a_waiter_cancelled_at_any_step_never_receives_the_lock(rk: redkit.Redkit) -> None:
    holder = rk.lock("steps", ttl=30)
    await holder.acquire()
    for steps in range(1, 20):
        waiter = rk.lock("steps", ttl=30)
        task = asyncio.create_task(waiter.acquire())
        for _ in range(steps):
            await asyncio.sleep(0)
        time.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await asyncio.sleep(0.05)  # shielded leave scripts finish
    await holder.release()
    # No cancelled waiter is left in the queue to be handed the lock.
    assert not await holder.locked()


@pytest.mark.cluster
async def test_a_waiter_that_times_out_as_the_lock_is_released_does_not_keep_it(
    rk: redkit.Redkit,
) -> None:
    for delay in (0.15, 0.19, 0.2, 0.21, 0.25):
        holder = rk.lock("late", ttl=30)
        await holder.acquire()
        waiter = rk.lock("late", ttl=30, timeout=0.2)
        task = asyncio.create_task(waiter.acquire())
        await asyncio.sleep(delay)
        await holder.release()
        try:
            await task
        except redkit.LockNotAcquired:
            # Gave up: whatever was handed over meanwhile was given back.
            assert not await waiter.locked()
        else:
            assert await waiter.owned()
            await waiter.release()


async def _kill_a_queued_waiter(
    rk: redkit.Redkit, redis_url: str, namespace: str, ttl: float, command_timeout: float
) -> None:
    """Queue a waiter for lock ``job`` in another process, then SIGKILL that process."""
    code = (
        "import asyncio, sys, redkit\n"
        "async def main():\n"
        "    async with redkit.connect(sys.argv[1], sys.argv[2],\n"
        f"                              command_timeout={command_timeout}) as rk:\n"
        "        print('waiting', flush=True)\n"
        f"        await rk.lock('job', ttl={ttl}, auto_renew=False).acquire()\n"
        "asyncio.run(main())\n"
    )
    dead = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, redis_url, namespace, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert dead.stdout is not None
        line = await asyncio.wait_for(dead.stdout.readline(), 20)
        assert line.strip() == b"waiting"
        await _queued(rk, "job", 1)
    finally:
        if dead.returncode is None:
            os.kill(dead.pid, signal.SIGKILL)
            await dead.wait()


async def test_a_waiter_whose_process_died_holds_a_handed_lock_only_for_its_ttl(
    redis_url: str, namespace: str
) -> None:
    async with redkit.connect(redis_url, namespace) as rk:
        holder = rk.lock("job", ttl=30)
        first = await holder.acquire()
        await _kill_a_queued_waiter(rk, redis_url, namespace, ttl=1, command_timeout=2.0)
        survivor = rk.lock("job", timeout=10)
        got = asyncio.create_task(survivor.acquire())
        await _queued(rk, "job", 2)
        await holder.release()  # handed to the dead waiter, still within its deadline
        began = time.perf_counter()
        to_the_dead = await _last_fence(rk, "job")
        fence = await got
        # The dead waiter's grant ends with its 1 s ttl; the survivor takes over then.
        assert time.perf_counter() - began < 1.0 + 2.0
        assert first < to_the_dead < fence == await _last_fence(rk, "job")
        await survivor.release()


@pytest.mark.cluster
async def test_concurrent_holders_alternate_without_losing_an_update(rk: redkit.Redkit) -> None:
    counter = rk.keys.key("n")
    await rk.redis.set(counter, 0)
    holders: list[int] = []

    async def worker(fair: bool) -> None:
        for _ in range(25):
            lock: Lock = rk.lock("alt", ttl=5, timeout=30, fair=fair)
            async with lock:
                holders.append(1)
                assert len(holders) == 1, "two holders at once"
                value = int(await rk.redis.get(counter) or 0)
                await asyncio.sleep(0)
                await rk.redis.set(counter, value + 1)
                holders.pop()

    await asyncio.gather(*(worker(i % 2 == 0) for i in range(8)))
    assert int(await rk.redis.get(counter) or 0) == 200


async def test_a_dead_waiter_past_its_deadline_is_skipped_at_release(
    redis_url: str, namespace: str
) -> None:
    # A short command timeout makes the waiter lease short: chunk 0.15 s, lease ~1.35 s.
    async with redkit.connect(redis_url, namespace, command_timeout=0.2) as rk:
        holder = rk.lock("job", ttl=30)
        first = await holder.acquire()
        await _kill_a_queued_waiter(rk, redis_url, namespace, ttl=30, command_timeout=0.2)
        await asyncio.sleep(2.0)  # past the dead waiter's deadline (it stopped refreshing)
        survivor = rk.lock("job", timeout=10)
        got = asyncio.create_task(survivor.acquire())
        # The survivor's attempt pruned the dead entry: only the survivor is queued.
        await _queued(rk, "job", 1)
        began = time.perf_counter()
        await holder.release()
        # The dead waiter is pruned, not handed a lock it would keep for its 30 s ttl: the
        # token the release gave is the survivor's.
        handed = await _last_fence(rk, "job")
        assert await got == handed > first
        assert time.perf_counter() - began < 1.0
        await survivor.release()


async def test_a_grant_the_waiter_pops_too_late_is_never_trusted(
    redis_url: str, namespace: str
) -> None:
    # One blocking slot (max_connections // 2): while a waiter on another lock holds it, the
    # next waiter is queued but not yet blocked when the lock is handed to it.
    async with (
        redkit.connect(redis_url, namespace, max_connections=2) as rk,
        redkit.connect(redis_url, namespace) as other,
    ):
        slot_holder = other.lock("busy", ttl=30)
        await slot_holder.acquire()
        occupant = asyncio.create_task(rk.lock("busy", ttl=30, timeout=3).acquire())
        await _queued(other, "busy", 1)
        first = other.lock("L", ttl=30)
        await first.acquire()
        late = rk.lock("L", ttl=0.3, timeout=10, auto_renew=False)
        waiting = asyncio.create_task(late.acquire())
        await _queued(other, "L", 1)
        await first.release()  # handed to `late`, whose 0.3 s lease runs out unused
        await asyncio.sleep(0.6)
        newcomer = other.lock("L", ttl=30, timeout=0)
        newcomer_fence = await newcomer.acquire()
        # When `late` finally gets a slot, the lapsed grant is gone or refused: it waits for
        # the newcomer instead of believing it holds the lock too.
        await asyncio.sleep(0.2)
        assert not waiting.done()
        assert await newcomer.owned()
        await newcomer.release()
        late_fence = await asyncio.wait_for(waiting, 10)
        assert late_fence > newcomer_fence
        assert await late.owned()
        await late.release()
        await slot_holder.release()
        await asyncio.wait_for(occupant, 10)


async def test_the_watchdog_renews_early_when_the_lease_began_before_acquire_returned() -> None:
    from redkit.locks._common import Renewer

    loop = asyncio.get_running_loop()
    calls: list[float] = []

    async def extend() -> bool:
        calls.append(loop.time())
        return True

    began = loop.time()
    # Half of a 3 s lease is already used (a hand-over granted while the waiter was slow):
    # the first renewal is due now, not a third of a ttl from now.
    early = Renewer(extend, 3.0, lambda reason: None, valid_until=began + 1.5)
    # A fresh lease: the first renewal comes after ttl / 3.
    fresh = Renewer(extend, 3.0, lambda reason: None, valid_until=began + 3.0)
    await asyncio.sleep(0.3)
    assert len(calls) == 1
    assert calls[0] - began < 0.2
    await early.stop()
    await fresh.stop()
