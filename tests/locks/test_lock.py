"""The lock: mutual exclusion, fencing, expiry, renewal, loss, waking without polling."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

import redkit
from redkit._codegen import async_only
from redkit.embedded import ValkeyProcess, find_free_port
from redkit.locks import Lock
from redkit.locks.admin import HOLDER_CHARS, LockInfo, force_release, list_locks
from redkit.locks.lock import SCRIPTS as lock_scripts


@pytest.mark.cluster
async def test_twenty_tasks_incrementing_under_the_lock_lose_no_update(rk: redkit.Redkit) -> None:
    counter = rk.keys.key("counter")
    await rk.redis.set(counter, 0)
    fences: list[int] = []

    async def worker() -> None:
        for _ in range(50):
            async with rk.lock("counter", ttl=5, timeout=30) as lock:
                # A non-atomic read-modify-write: only the lock keeps it correct.
                value = int(await rk.redis.get(counter) or 0)
                await asyncio.sleep(0)
                await rk.redis.set(counter, value + 1)
                assert lock.fencing_token is not None
                fences.append(lock.fencing_token)

    await asyncio.gather(*(worker() for _ in range(20)))
    assert int(await rk.redis.get(counter) or 0) == 1000
    assert len(fences) == 1000
    assert all(a < b for a, b in itertools.pairwise(fences))


@pytest.mark.cluster
async def test_a_holder_paused_past_its_ttl_cannot_release_the_next_holders_lock(
    rk: redkit.Redkit,
) -> None:
    late = rk.lock("deploy", ttl=0.3, auto_renew=False)
    first = await late.acquire()
    await asyncio.sleep(0.45)  # "paused": no renewal, the lease ends
    new = rk.lock("deploy", ttl=10, timeout=2)
    second = await new.acquire()
    assert second > first
    with pytest.raises(redkit.LockLost, match="was lost"):
        await late.release()
    assert late.lost
    assert await new.owned()
    await new.release()
    assert not await new.locked()


@pytest.mark.cluster
async def test_release_and_extend_check_the_token(rk: redkit.Redkit) -> None:
    lock = rk.lock("t", ttl=0.3, auto_renew=False)
    await lock.acquire()
    await lock.extend(5)
    await asyncio.sleep(0.4)
    assert await lock.owned()  # the extension outlived the original ttl
    await force_release(rk, "t")
    with pytest.raises(redkit.LockLost):
        await lock.extend()
    other = rk.lock("t", timeout=0)
    await other.acquire()
    with pytest.raises(redkit.LockLost):
        await lock.release()
    assert await other.owned()


async def _listed(rk: redkit.Redkit, name: str) -> LockInfo | None:
    return next((info for info in await list_locks(rk) if info.name == name), None)


async def _held(rk: redkit.Redkit, name: str) -> tuple[LockInfo, float]:
    """The listing of held lock ``name`` and its time held (which must be known)."""
    info = await _listed(rk, name)
    assert info is not None
    assert info.held_for is not None
    return info, info.held_for


@pytest.mark.cluster
async def test_a_held_lock_shows_how_long_it_has_been_held_and_renewals_do_not_reset_it(
    rk: redkit.Redkit,
) -> None:
    lock = rk.lock("held-for", ttl=30)
    fence = await lock.acquire()
    _, first = await _held(rk, "held-for")
    await asyncio.sleep(0.06)
    await lock.extend(30)  # a renewal keeps the acquisition time
    later, then = await _held(rk, "held-for")
    assert then - first >= 0.05  # by the server's clock: it grows
    # The stamp rides in the owner value, yet holder and fencing token are the lock's own,
    # and the lock is still this object's to release.
    assert lock._token is not None
    assert (later.holder, later.fencing_token) == (lock._token[:HOLDER_CHARS], fence)
    assert await lock.owned()
    await lock.release()
    assert await _listed(rk, "held-for") is None
    assert not await lock.locked()


@async_only  # a waiter task beside the holder
@pytest.mark.cluster
async def test_a_lock_handed_to_a_waiter_counts_its_time_held_from_the_hand_over(
    rk: redkit.Redkit,
) -> None:
    holder = rk.lock("handed", ttl=30)
    await holder.acquire()
    await asyncio.sleep(0.1)
    waiter = rk.lock("handed", ttl=30, timeout=10)
    task = asyncio.ensure_future(waiter.acquire())
    queue = rk.keys.group("lock", "handed").key("queue")
    for _ in range(500):  # bounded: until the waiter is queued
        if await rk.redis.zcard(queue):
            break
        await asyncio.sleep(0.01)
    _, before = await _held(rk, "handed")
    assert before >= 0.1
    await holder.release()
    await asyncio.wait_for(task, 10)
    after, since = await _held(rk, "handed")
    assert waiter._token is not None
    assert after.holder == waiter._token[:HOLDER_CHARS]
    assert since < before
    assert await waiter.owned()
    await waiter.release()


@pytest.mark.cluster
async def test_a_lock_taken_by_a_client_from_before_the_stamp_still_extends_and_releases(
    rk: redkit.Redkit,
) -> None:
    # An older client's token has no 's' marker and its acquire wrote the bare token: the
    # new scripts accept it, and a listing shows no time held rather than a wrong one.
    lock = rk.lock("old-client", ttl=30)
    group = rk.keys.group("lock", "old-client")
    old_token = "0123456789abcdef0123456789abcdef.30000"
    await rk.redis.set(group.key("owner"), old_token, px=30_000)
    listed = await _listed(rk, "old-client")
    assert listed is not None
    assert (listed.holder, listed.held_for) == (old_token[:HOLDER_CHARS], None)
    keys = [group.key("owner")]
    assert await rk.run(lock_scripts["lock_extend"], keys, [old_token, 30_000]) == 1
    assert await rk.run(lock_scripts["lock_extend"], keys, [old_token[:-1], 30_000]) == 0
    released = await rk.run(lock_scripts["lock_release"], lock._keys, [old_token, 10_000])
    assert released == 1
    assert not await lock.locked()


@pytest.mark.cluster
async def test_a_lock_handed_to_a_waiter_of_an_older_client_holds_its_bare_token(
    rk: redkit.Redkit,
) -> None:
    # That client's scripts compare the whole owner value: a stamp would make it lose the
    # lock it was handed.
    lock = rk.lock("mixed", ttl=30)
    await lock.acquire()
    group = rk.keys.group("lock", "mixed")
    old_waiter = "fedcba9876543210fedcba9876543210.30000"
    await rk.redis.zadd(group.key("queue"), {old_waiter: 1})
    await rk.redis.zadd(group.key("deadlines"), {old_waiter: 2**52})
    await lock.release()
    assert await rk.redis.get(group.key("owner")) == old_waiter.encode()
    listed = await _listed(rk, "mixed")
    assert listed is not None
    assert listed.held_for is None


@pytest.mark.cluster
async def test_a_token_that_is_only_a_prefix_of_the_holders_does_not_release_it(
    rk: redkit.Redkit,
) -> None:
    lock = rk.lock("prefix", ttl=30)
    await lock.acquire()
    assert lock._token is not None
    for wrong in (lock._token[:-1], lock._token + "0", lock._token[:-1] + "@"):
        assert await rk.run(lock_scripts["lock_release"], lock._keys, [wrong, 10_000]) == 0
        assert await rk.run(lock_scripts["lock_extend"], lock._keys[:1], [wrong, 30_000]) == 0
    assert await lock.owned()
    await lock.release()


@pytest.mark.cluster
async def test_fencing_tokens_keep_increasing_across_expiry(rk: redkit.Redkit) -> None:
    seen = []
    for _ in range(3):
        lock = rk.lock("fenced", ttl=0.05, auto_renew=False, timeout=1)
        seen.append(await lock.acquire())
        await asyncio.sleep(0.08)  # let it expire rather than releasing it
    assert seen == sorted(seen)
    assert len(set(seen)) == 3


async def _server_microseconds(rk: redkit.Redkit) -> int:
    seconds, microseconds = await rk.redis.time()
    return seconds * 1_000_000 + microseconds


@pytest.mark.cluster
async def test_a_fencing_token_is_never_below_the_servers_clock_in_microseconds(
    rk: redkit.Redkit,
) -> None:
    # So a replica promoted after a failover, whose clock has moved on, gives no token the
    # old master gave, even where the counter's last increments never reached it.
    fence = rk.keys.group("lock", "clocked").key("fence")
    await rk.redis.set(fence, 41)  # a counter left by an older redkit: 1, 2, 3, ...
    for fair in (False, True, False, True):  # the fast path, and the queue-aware one
        before = await _server_microseconds(rk)
        async with rk.lock("clocked", fair=fair) as lock:
            token = lock.fencing_token
        after = await _server_microseconds(rk)
        assert token is not None
        assert before <= token <= after
        assert int(await rk.redis.get(fence) or 0) == token


@pytest.mark.cluster
async def test_fencing_tokens_go_on_from_a_counter_ahead_of_the_clock(rk: redkit.Redkit) -> None:
    # A clock stepped back (or tokens given faster than one a microsecond) must not make a
    # token repeat: the counter goes on by one, exactly, up to the largest integer a Lua
    # number (a double) holds exactly.
    fence = rk.keys.group("lock", "ahead").key("fence")
    for start in (await _server_microseconds(rk) + 10**12, 2**53 - 3):
        await rk.redis.set(fence, start)
        tokens = []
        for _ in range(2):
            async with rk.lock("ahead") as lock:
                tokens.append(lock.fencing_token)
        assert tokens == [start + 1, start + 2]
        assert int(await rk.redis.get(fence) or 0) == start + 2


async def test_fencing_tokens_survive_a_server_restart_with_aof(tmp_path: Path) -> None:
    server = ValkeyProcess(
        tmp_path,
        port=find_free_port(),
        config={"appendonly": "yes", "appendfsync": "always", "save": ""},
    ).start()
    try:
        async with redkit.connect(server.url, "fence") as rk, rk.lock("db") as lock:
            before = lock.fencing_token
        server.stop()
        server.start()
        async with redkit.connect(server.url, "fence") as rk, rk.lock("db") as lock:
            assert before is not None
            assert lock.fencing_token is not None
            assert lock.fencing_token > before
    finally:
        server.stop()


async def test_fencing_tokens_keep_increasing_across_a_restart_that_lost_every_key(
    tmp_path: Path,
) -> None:
    server = ValkeyProcess(
        tmp_path, port=find_free_port(), config={"appendonly": "no", "save": ""}
    ).start()
    try:
        async with redkit.connect(server.url, "fence") as rk, rk.lock("db") as lock:
            before = lock.fencing_token
        server.stop()
        server.start()
        async with redkit.connect(server.url, "fence") as rk:
            assert await rk.redis.dbsize() == 0  # the counter is gone with the rest
            async with rk.lock("db") as lock:
                assert before is not None
                assert lock.fencing_token is not None
                assert lock.fencing_token > before
    finally:
        server.stop()


@pytest.mark.cluster
async def test_a_timeout_bounds_the_wait(rk: redkit.Redkit) -> None:
    async with rk.lock("busy"):
        began = time.perf_counter()
        with pytest.raises(redkit.LockNotAcquired, match=r"within 0.3 s"):
            await rk.lock("busy", timeout=0.3).acquire()
        assert 0.25 < time.perf_counter() - began < 1.5
        with pytest.raises(redkit.LockNotAcquired):
            await rk.lock("busy").acquire(timeout=0)
        with pytest.raises(redkit.LockNotAcquired):
            async with rk.lock("busy", timeout=timedelta(milliseconds=50)):
                pytest.fail("unreachable")  # pragma: no cover
    # Waiters that gave up left the queue: nothing of them stays behind.
    queue = rk.keys.group("lock", "busy").key("queue")
    assert await rk.redis.exists(queue) == 0


async def test_arguments_accepted_once_are_still_checked_by_type_the_next_time(
    rk: redkit.Redkit,
) -> None:
    # Lock options are remembered once checked: True must not pass as the 1 before it, nor
    # an unhashable name slip through as a TypeError.
    assert rk.lock("typed", ttl=1).ttl == 1
    with pytest.raises(redkit.InvalidInput, match="ttl"):
        rk.lock("typed", ttl=True)
    assert rk.lock("typed", timeout=1).timeout == 1
    with pytest.raises(redkit.InvalidInput, match="timeout"):
        rk.lock("typed", timeout=True)
    with pytest.raises(redkit.InvalidInput):
        rk.lock(["typed"])  # type: ignore[arg-type]
    with pytest.raises(redkit.InvalidInput, match="ttl"):
        rk.lock("typed", ttl=[1])  # type: ignore[arg-type]


@pytest.mark.cluster
async def test_a_loss_found_before_anyone_asked_for_the_event_leaves_it_set(
    rk: redkit.Redkit,
) -> None:
    lock = rk.lock("found-lost", ttl=5, auto_renew=False)
    await lock.acquire()
    await force_release(rk, "found-lost")
    with pytest.raises(redkit.LockLost):
        await lock.extend()
    assert (lock.lost, lock.held) == (True, False)
    assert lock.lost_event.is_set()  # made only now, already set
    with pytest.raises(redkit.LockLost):
        await lock.release()
    await lock.acquire()  # a new acquisition starts with no loss and a clear event
    assert (lock.lost, lock.held) == (False, True)
    assert not lock.lost_event.is_set()
    await lock.release()


@pytest.mark.cluster
async def test_auto_renew_keeps_a_short_lock_through_long_work(rk: redkit.Redkit) -> None:
    async with rk.lock("long", ttl=1) as lock:
        for _ in range(3):
            await asyncio.sleep(1)
            assert await lock.owned()
            with pytest.raises(redkit.LockNotAcquired):
                await rk.lock("long", timeout=0).acquire()
    assert not await rk.lock("long").locked()


# Async only (it waits with asyncio.wait_for); sync: tests/sync/test_threads.py.
@async_only
@pytest.mark.cluster
async def test_the_watchdog_tells_the_holder_when_the_lock_is_lost(rk: redkit.Redkit) -> None:
    told: list[Lock] = []
    lock = rk.lock("lost", ttl=0.6, on_lost=told.append)

    async def work() -> None:
        async with lock:
            await force_release(rk, "lost")
            await asyncio.wait_for(lock.lost_event.wait(), timeout=2)
            assert told == [lock]
            assert not lock.held

    with pytest.raises(redkit.LockLost, match="watchdog"):
        await work()


# Async only: it drives the holder's process with asyncio's subprocesses.
@async_only
async def test_a_killed_holders_lock_passes_to_a_waiter_when_its_ttl_ends(
    redis_url: str, namespace: str
) -> None:
    code = (
        "import asyncio, sys, redkit\n"
        "async def main():\n"
        "    async with redkit.connect(sys.argv[1], sys.argv[2]) as rk:\n"
        "        async with rk.lock('job', ttl=1):\n"
        "            print('held', flush=True)\n"
        "            await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, redis_url, namespace, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), 20)
        assert line.strip() == b"held"
        async with redkit.connect(redis_url, namespace) as rk:
            await asyncio.sleep(1.5)  # past the 1 s ttl: the other process renews it
            with pytest.raises(redkit.LockNotAcquired):
                await rk.lock("job").acquire(timeout=0)
            os.kill(holder.pid, signal.SIGKILL)
            killed = time.perf_counter()
            async with rk.lock("job", timeout=5):
                waited = time.perf_counter() - killed
            assert waited < 1.0 + 0.5
    finally:
        if holder.returncode is None:
            holder.kill()
        await holder.wait()


# Async only (a task waits); sync: tests/sync/test_threads.py.
@async_only
@pytest.mark.cluster
async def test_a_waiter_takes_the_lock_right_after_release(rk: redkit.Redkit) -> None:
    latencies = []
    for _ in range(15):
        holder = rk.lock("handover", ttl=30)
        await holder.acquire()
        waiter = rk.lock("handover", ttl=30, timeout=10)
        got = asyncio.create_task(waiter.acquire())
        await asyncio.sleep(0.03)  # the waiter is blocked now
        assert not got.done()
        released = time.perf_counter()
        await holder.release()
        await got
        latencies.append(time.perf_counter() - released)
        await waiter.release()
    # A poller with 100 ms steps would show a median near 50 ms; a wake-up takes ~1 ms.
    assert statistics.median(latencies) < 0.025, latencies


# Async only: its waiters are tasks.
@async_only
@pytest.mark.cluster
async def test_a_fair_lock_serves_waiters_in_arrival_order(rk: redkit.Redkit) -> None:
    order: list[int] = []
    holder = rk.lock("fifo", fair=True)
    await holder.acquire()

    async def waiter(i: int) -> None:
        async with rk.lock("fifo", fair=True, timeout=10):
            order.append(i)
            await asyncio.sleep(0.01)

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(waiter(i)))
        await asyncio.sleep(0.03)  # arrive one after the other
    await holder.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]


@pytest.mark.cluster
async def test_a_lock_object_is_reusable_but_not_reentrant(rk: redkit.Redkit) -> None:
    lock = rk.lock("again")
    first = await lock.acquire()
    with pytest.raises(redkit.InvalidInput, match="re-entrant"):
        await lock.acquire()
    await lock.release()
    with pytest.raises(redkit.InvalidInput, match="not held"):
        await lock.release()
    assert await lock.acquire() > first
    assert "held" in repr(lock)
    await lock.release()


async def test_bad_arguments_are_refused_with_clear_errors(rk: redkit.Redkit) -> None:
    with pytest.raises(redkit.InvalidInput, match="ttl"):
        rk.lock("x", ttl=0)
    with pytest.raises(redkit.InvalidInput, match="ttl"):
        rk.lock("x", ttl=-1)
    with pytest.raises(redkit.InvalidInput, match="is empty"):
        rk.lock("")
    with pytest.raises(redkit.InvalidInput, match="timeout"):
        rk.lock("x", timeout=-1)
    with pytest.raises(redkit.InvalidInput, match="timeout"):
        await rk.lock("x").acquire(timeout=-0.5)
    with pytest.raises(redkit.InvalidInput, match="limit"):
        rk.semaphore("s", limit=0)
    with pytest.raises(redkit.InvalidInput, match="is empty"):
        rk.semaphore("", limit=2)
    with pytest.raises(redkit.InvalidInput, match="ttl"):
        rk.semaphore("s", limit=2, ttl=float("nan"))
