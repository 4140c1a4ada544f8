"""The read-write lock: readers together, writers alone, writers not starved, leases, wake-ups."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import pytest
from typer.testing import CliRunner

import redkit
from locks._waiting import queued
from redkit.cli.locks import app
from redkit.locks import ReadWriteLease, ReadWriteLock, list_locks


def _key(rk: redkit.Redkit, name: str, part: str) -> str:
    return rk.keys.group("rwlock", name).key(part)


async def _queued(rk: redkit.Redkit, name: str, count: int, part: str = "queue") -> None:
    """Wait until ``count`` waiters are in the queue (or, with part="wqueue", writers)."""
    await queued(rk, _key(rk, name, part), count)


async def _settle() -> None:
    """Let woken waiters run their attempts (a few round trips)."""
    await asyncio.sleep(0.05)


@pytest.mark.cluster
async def test_ten_readers_hold_the_lock_together(rk: redkit.Redkit) -> None:
    rw = rk.read_write_lock("shared", timeout=5)
    inside = 0
    all_in = asyncio.Event()
    done = asyncio.Event()

    async def reader() -> None:
        nonlocal inside
        async with rw.read() as lease:
            assert lease.mode == "read"
            inside += 1
            if inside == 10:
                all_in.set()
            await done.wait()

    tasks = [asyncio.create_task(reader()) for _ in range(10)]
    await asyncio.wait_for(all_in.wait(), timeout=5)
    assert await rw.readers() == 10
    assert not await rw.writer_held()
    with pytest.raises(redkit.LockNotAcquired):
        await rw.acquire_write(timeout=0)
    done.set()
    await asyncio.gather(*tasks)
    assert await rw.readers() == 0


@pytest.mark.cluster
async def test_a_writer_excludes_readers_and_other_writers(rk: redkit.Redkit) -> None:
    rw = rk.read_write_lock("counter", ttl=5, timeout=30)
    counter = rk.keys.group("rwlock-test", "counter").key("n")
    await rk.redis.set(counter, 0)
    readers = writers = peak_readers = 0
    fences: list[int] = []

    async def write() -> None:
        nonlocal writers
        async with rw.write() as lease:
            writers += 1
            assert (writers, readers) == (1, 0)
            # A non-atomic read-modify-write: only the write lease keeps it correct.
            value = int(await rk.redis.get(counter) or 0)
            await asyncio.sleep(0)
            await rk.redis.set(counter, value + 1)
            fences.append(lease.fencing_token)
            writers -= 1

    async def read() -> None:
        nonlocal readers, peak_readers
        async with rw.read() as lease:
            readers += 1
            peak_readers = max(peak_readers, readers)
            assert writers == 0, (writers, readers)
            # A read lease carries the token of the latest writer before it.
            assert lease.fencing_token == (fences[-1] if fences else 0)
            before = await rk.redis.get(counter)
            await asyncio.sleep(0.001)
            assert await rk.redis.get(counter) == before  # nobody writes under a read
            readers -= 1

    async def worker(i: int) -> None:
        for j in range(6):
            await (write() if (i + j) % 3 == 0 else read())

    await asyncio.gather(*(worker(i) for i in range(20)))
    assert int(await rk.redis.get(counter) or 0) == len(fences) == 40
    assert all(a < b for a, b in itertools.pairwise(fences))
    assert peak_readers > 1
    assert await rw.readers() == 0
    assert not await rw.writer_held()


@pytest.mark.cluster
async def test_a_queued_writer_is_not_starved_by_readers_that_keep_coming(
    rk: redkit.Redkit,
) -> None:
    rw = rk.read_write_lock("busy", timeout=5)
    order: list[str] = []
    first = await rw.acquire_read()

    async def enter(mode: str, name: str) -> ReadWriteLease:
        lease = await (rw.acquire_write() if mode == "write" else rw.acquire_read())
        order.append(name)
        return lease

    writer = asyncio.create_task(enter("write", "w"))
    await _queued(rk, "busy", 1, "wqueue")
    # Only readers hold the lock, yet a newcomer reader waits: a writer arrived before it.
    with pytest.raises(redkit.LockNotAcquired):
        await rw.acquire_read(timeout=0)
    late = [asyncio.create_task(enter("read", f"r{i}")) for i in range(3)]
    await _queued(rk, "busy", 4)
    await _settle()
    assert not writer.done()
    assert not any(task.done() for task in late)

    await first.release()
    write = await asyncio.wait_for(writer, 2)
    await _settle()
    assert order == ["w"]
    assert await rw.readers() == 0
    await write.release()
    for lease in await asyncio.wait_for(asyncio.gather(*late), 2):
        await lease.release()
    assert order[0] == "w"
    assert sorted(order[1:]) == ["r0", "r1", "r2"]


@pytest.mark.cluster
async def test_readers_queued_before_a_writer_enter_together(rk: redkit.Redkit) -> None:
    rw = rk.read_write_lock("batch", timeout=5)
    holder = await rw.acquire_write()
    early = [asyncio.create_task(rw.acquire_read()) for _ in range(3)]
    await _queued(rk, "batch", 3)
    writer = asyncio.create_task(rw.acquire_write())
    await _queued(rk, "batch", 4)
    late = asyncio.create_task(rw.acquire_read())
    await _queued(rk, "batch", 5)

    await holder.release()
    readers = await asyncio.wait_for(asyncio.gather(*early), 2)
    # All three hold at once; the writer and the reader behind it still wait.
    assert await rw.readers() == 3
    await _settle()
    assert not writer.done()
    assert not late.done()
    for lease in readers:
        await lease.release()
    write = await asyncio.wait_for(writer, 2)
    await _settle()
    assert not late.done()
    await write.release()
    read = await asyncio.wait_for(late, 2)
    assert read.fencing_token == write.fencing_token
    await read.release()


@pytest.mark.cluster
async def test_writers_are_served_in_arrival_order(rk: redkit.Redkit) -> None:
    rw = rk.read_write_lock("fifo", timeout=5)
    holder = await rw.acquire_read()
    order: list[int] = []

    async def writer(i: int) -> None:
        async with rw.write():
            order.append(i)
            await asyncio.sleep(0.005)

    tasks = []
    for i in range(4):
        tasks.append(asyncio.create_task(writer(i)))
        await _queued(rk, "fifo", i + 1, "wqueue")
    await holder.release()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == [0, 1, 2, 3]


@pytest.mark.cluster
async def test_fencing_tokens_increase_and_readers_get_the_latest(rk: redkit.Redkit) -> None:
    rw = rk.read_write_lock("fenced", timeout=5)
    async with rw.read() as read:
        assert read.fencing_token == 0  # no writer yet
    expiring = rk.read_write_lock("fenced", ttl=0.05, auto_renew=False, timeout=1)
    seen = []
    for _ in range(3):
        seconds, microseconds = await rk.redis.time()
        lease = await expiring.acquire_write()
        # Never below the server's clock, as the lock's (see test_lock.py).
        assert lease.fencing_token >= seconds * 1_000_000 + microseconds
        seen.append(lease.fencing_token)
        await asyncio.sleep(0.08)  # let it expire rather than releasing it
    async with rw.write() as write:
        seen.append(write.fencing_token)
    assert all(a < b for a, b in itertools.pairwise(seen))
    async with rw.read() as read:
        assert read.fencing_token == seen[-1]


@pytest.mark.cluster
async def test_a_holder_paused_past_its_ttl_loses_its_lease_and_frees_nothing(
    rk: redkit.Redkit,
) -> None:
    late = rk.read_write_lock("paused", ttl=0.3, auto_renew=False)
    new = rk.read_write_lock("paused", ttl=10, timeout=2)

    old_write = await late.acquire_write()
    await asyncio.sleep(0.4)  # "paused": no renewal, the lease ends
    write = await new.acquire_write()
    assert write.fencing_token > old_write.fencing_token
    with pytest.raises(redkit.LockLost, match="was lost"):
        await old_write.release()
    assert old_write.lost
    assert await new.writer_held()  # the new writer's lease is untouched
    await write.release()

    old_read = await late.acquire_read()
    await asyncio.sleep(0.4)
    write = await new.acquire_write()  # the ended read lease does not block it
    with pytest.raises(redkit.LockLost, match="read lease"):
        await old_read.extend()
    with pytest.raises(redkit.LockLost):
        await old_read.release()
    assert await new.writer_held()
    await write.release()
    assert not await new.writer_held()


@pytest.mark.cluster
async def test_auto_renew_keeps_a_short_lease_through_long_work(rk: redkit.Redkit) -> None:
    rw = rk.read_write_lock("long", ttl=0.5)
    async with rw.write() as lease:
        for _ in range(3):
            await asyncio.sleep(0.5)
            assert lease.held
            assert await rw.writer_held()
            with pytest.raises(redkit.LockNotAcquired):
                await rw.acquire_read(timeout=0)
    assert not await rw.writer_held()


async def test_the_watchdog_tells_a_reader_its_lease_is_gone(rk: redkit.Redkit) -> None:
    told: list[ReadWriteLease] = []
    rw = rk.read_write_lock("lost", ttl=0.3, on_lost=told.append)
    lease = await rw.acquire_read()
    await rk.redis.delete(_key(rk, "lost", "readers"))
    await asyncio.wait_for(lease.lost_event.wait(), timeout=2)
    assert told == [lease]
    assert not lease.held
    assert "lost" in repr(lease)
    with pytest.raises(redkit.LockLost):
        await lease.release()


@pytest.mark.cluster
async def test_a_waiter_is_woken_at_once_on_release(rk: redkit.Redkit) -> None:
    rw = rk.read_write_lock("wake", timeout=5)
    latencies = []
    for holder_mode, waiter_mode in [("write", "read"), ("read", "write"), ("write", "write")]:
        for _ in range(3):
            holder = await (rw.acquire_write() if holder_mode == "write" else rw.acquire_read())
            waiting = asyncio.create_task(
                rw.acquire_write() if waiter_mode == "write" else rw.acquire_read()
            )
            await _queued(rk, "wake", 1)
            await asyncio.sleep(0.02)  # blocked in its BLPOP now
            assert not waiting.done()
            released = time.perf_counter()
            await holder.release()
            lease = await asyncio.wait_for(waiting, 2)
            latencies.append(time.perf_counter() - released)
            await lease.release()
    # A poller would wait for its next step; a wake-up costs a couple of round trips.
    assert max(latencies) < 0.2, latencies


@pytest.mark.cluster
async def test_a_timeout_raises_lock_not_acquired_and_leaves_no_waiter(rk: redkit.Redkit) -> None:
    rw = rk.read_write_lock("taken")
    write = await rw.acquire_write()
    began = time.perf_counter()
    with pytest.raises(redkit.LockNotAcquired, match=r"read lease .* within 0.3 s"):
        await rw.acquire_read(timeout=0.3)
    assert 0.25 < time.perf_counter() - began < 1.5
    with pytest.raises(redkit.LockNotAcquired):
        await rw.acquire_write(timeout=0)
    with pytest.raises(redkit.LockNotAcquired):
        async with rw.read(timeout=0.05):
            pytest.fail("unreachable")  # pragma: no cover
    await write.release()
    read = await rw.acquire_read()
    with pytest.raises(redkit.LockNotAcquired, match="write lease"):
        await rk.read_write_lock("taken", timeout=0.1).acquire_write()
    await read.release()
    for part in ("queue", "wqueue", "deadlines"):
        assert await rk.redis.exists(_key(rk, "taken", part)) == 0


@pytest.mark.cluster
async def test_a_cancelled_waiter_leaves_the_queue_and_the_next_is_still_woken(
    rk: redkit.Redkit,
) -> None:
    rw = rk.read_write_lock("cancel", timeout=5)
    holder = await rw.acquire_read()
    first = asyncio.create_task(rw.acquire_write())
    await _queued(rk, "cancel", 1, "wqueue")
    second = asyncio.create_task(rw.acquire_write())
    await _queued(rk, "cancel", 2, "wqueue")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await rk.redis.zcard(_key(rk, "cancel", "wqueue")) == 1
    assert await rk.redis.zcard(_key(rk, "cancel", "queue")) == 1
    released = time.perf_counter()
    await holder.release()
    write = await asyncio.wait_for(second, 2)
    # woken by the release, not by the end of the reader's lease (seconds away)
    assert time.perf_counter() - released < 1.0
    await write.release()
    for part in ("queue", "wqueue", "deadlines"):
        assert await rk.redis.exists(_key(rk, "cancel", part)) == 0


@pytest.mark.cluster
async def test_readers_behind_a_writer_that_gives_up_enter_at_once(rk: redkit.Redkit) -> None:
    rw = rk.read_write_lock("gaveup", timeout=5)
    holder = await rw.acquire_read()
    writer = asyncio.create_task(rw.acquire_write())
    await _queued(rk, "gaveup", 1, "wqueue")
    reader = asyncio.create_task(rw.acquire_read())
    await _queued(rk, "gaveup", 2)
    await asyncio.sleep(0.02)
    assert not reader.done()
    left = time.perf_counter()
    writer.cancel()  # its leave wakes the reader queued behind it: no release needed
    read = await asyncio.wait_for(reader, 2)
    assert time.perf_counter() - left < 0.2
    assert await rw.readers() == 2
    await read.release()
    await holder.release()
    assert await rk.redis.exists(_key(rk, "gaveup", "queue")) == 0


async def test_an_acquire_cancelled_mid_flight_leaves_nothing_held(rk: redkit.Redkit) -> None:
    locks: list[ReadWriteLock] = []
    for mode, steps in itertools.product(("read", "write"), range(1, 13)):
        rw = rk.read_write_lock(f"mid-{mode}-{steps}", ttl=30)
        locks.append(rw)
        task = asyncio.create_task(rw.acquire_read() if mode == "read" else rw.acquire_write())
        for _ in range(steps):
            await asyncio.sleep(0)
        time.sleep(0.02)  # the server answers while the loop is blocked
        task.cancel()
        try:
            lease = await task
        except asyncio.CancelledError:
            pass
        else:  # it finished before the cancel: a normal holder, give it back
            await lease.release()
    for rw in locks:
        assert await rw.readers() == 0, rw
        assert not await rw.writer_held(), rw


async def test_bad_input_is_refused_with_clear_errors(rk: redkit.Redkit) -> None:
    with pytest.raises(redkit.InvalidInput, match="is empty"):
        rk.read_write_lock("")
    for ttl in (0, -1, float("nan")):
        with pytest.raises(redkit.InvalidInput, match="ttl"):
            rk.read_write_lock("x", ttl=ttl)
    with pytest.raises(redkit.InvalidInput, match="timeout"):
        rk.read_write_lock("x", timeout=-1)
    rw = rk.read_write_lock("x")
    with pytest.raises(redkit.InvalidInput, match="timeout"):
        await rw.acquire_read(timeout=-0.5)
    with pytest.raises(redkit.InvalidInput, match="timeout"):
        async with rw.write(timeout=-1):
            pytest.fail("unreachable")  # pragma: no cover
    lease = await rw.acquire_write()
    with pytest.raises(redkit.InvalidInput, match="ttl"):
        await lease.extend(0)
    await lease.release()
    with pytest.raises(redkit.InvalidInput, match="already released"):
        await lease.release()
    with pytest.raises(redkit.InvalidInput, match="already released"):
        await lease.extend()
    assert "released" in repr(lease)
    assert repr(rw) == "<ReadWriteLock 'x' ttl=30s>"


@pytest.mark.cluster
async def test_list_locks_shows_read_write_locks(rk: redkit.Redkit, redis_url: str) -> None:
    shelf = rk.read_write_lock("shelf", ttl=30, timeout=5)
    reads = [await shelf.acquire_read(), await shelf.acquire_read()]
    desk = rk.read_write_lock("desk", ttl=30, timeout=5)
    write = await desk.acquire_write()
    waiting = asyncio.create_task(desk.acquire_read())
    await _queued(rk, "desk", 1)

    found = {info.name: info for info in await list_locks(rk)}
    assert found["shelf"].kind == "rwlock"
    assert (found["shelf"].mode, found["shelf"].holders) == ("read", 2)
    assert found["shelf"].fencing_token is None
    assert 29 < found["shelf"].ttl <= 30
    assert (found["desk"].mode, found["desk"].holders) == ("write", 1)
    assert found["desk"].fencing_token == write.fencing_token
    assert found["desk"].waiters == 1

    runner = CliRunner()
    args = ["list", "--url", redis_url, "-n", rk.namespace]
    table = await asyncio.to_thread(lambda: runner.invoke(app, args))
    assert table.exit_code == 0, table.output
    assert "rwlock (write)" in table.stdout
    assert "shelf" in table.stdout
    as_json = await asyncio.to_thread(lambda: runner.invoke(app, [*args, "--json"]))
    rows = {row["name"]: row for row in json.loads(as_json.stdout)}
    assert (rows["desk"]["kind"], rows["desk"]["mode"]) == ("rwlock", "write")

    await write.release()
    await (await asyncio.wait_for(waiting, 2)).release()
    for lease in reads:
        await lease.release()
    assert [info for info in await list_locks(rk) if info.kind == "rwlock"] == []


@pytest.mark.cluster
async def test_every_key_has_a_ttl_but_the_fence(rk: redkit.Redkit) -> None:
    rw = rk.read_write_lock("bounded", ttl=30, timeout=5)
    fence = _key(rk, "bounded", "fence")

    async def check() -> set[str]:
        seen = set()
        async for raw in rk.redis.scan_iter(match=rk.keys.pattern, count=1000):
            key = raw.decode() if isinstance(raw, bytes) else raw
            seen.add(key.rsplit(":", 1)[-1] if ":wake:" not in key else "wake list")
            pttl = await rk.redis.pttl(key)
            if key == fence:
                assert pttl == -1  # kept forever, so fencing tokens keep increasing
            else:
                assert pttl > 0, key
        return seen

    read = await rw.acquire_read()
    writer = asyncio.create_task(rw.acquire_write())
    await _queued(rk, "bounded", 1, "wqueue")
    reader = asyncio.create_task(rw.acquire_read())
    await _queued(rk, "bounded", 2)
    assert await check() == {"readers", "queue", "wqueue", "deadlines"}
    await read.release()
    write = await asyncio.wait_for(writer, 2)
    assert await check() == {"writer", "fence", "queue", "deadlines"}
    await write.release()
    await (await asyncio.wait_for(reader, 2)).release()
    assert await check() == {"fence"}


async def test_one_block_object_is_entered_by_one_task_at_a_time(rk: redkit.Redkit) -> None:
    rw = rk.read_write_lock("block", timeout=5)
    write = await rw.acquire_write()
    block = rw.read()
    entered = asyncio.Event()

    async def first() -> None:
        async with block:
            entered.set()

    waiting = asyncio.create_task(first())
    await _queued(rk, "block", 1)
    # The first task is still waiting to enter: a second one must not share (and overwrite)
    # its lease.
    with pytest.raises(redkit.InvalidInput, match="already entered"):
        async with block:
            pytest.fail("unreachable")  # pragma: no cover
    await write.release()
    await asyncio.wait_for(waiting, 2)
    assert entered.is_set()
    assert await rw.readers() == 0
    async with block:  # free again once the first block is left
        assert await rw.readers() == 1


async def test_a_reader_arriving_with_a_writer_in_the_same_millisecond_queues_behind_it(
    rk: redkit.Redkit,
) -> None:
    # Sent together, both attempts reach the server in one batch (automatic pipelining, so
    # standalone only), within the same millisecond; the writer's comes first, so the reader
    # must queue behind it (not sort before it by token, "r" < "w").
    for i in range(10):
        name = f"tie-{i}"
        rw = rk.read_write_lock(name, timeout=5)
        holder = await rw.acquire_read()
        writer = asyncio.create_task(rw.acquire_write())
        reader = asyncio.create_task(rw.acquire_read())
        await _queued(rk, name, 2)
        order = await rk.redis.zrange(_key(rk, name, "queue"), 0, -1)
        assert [token[:1] for token in order] == [b"w", b"r"]
        assert not reader.done()
        await holder.release()
        write = await asyncio.wait_for(writer, 2)
        await asyncio.sleep(0.02)
        assert not reader.done()  # still behind the writer
        await write.release()
        await (await asyncio.wait_for(reader, 2)).release()


async def test_more_than_a_hundred_queued_readers_stream_in_after_a_writer(
    rk: redkit.Redkit,
) -> None:
    rw = rk.read_write_lock("herd", timeout=10)
    write = await rw.acquire_write()
    entered: list[float] = []
    all_in = asyncio.Event()

    async def reader() -> None:
        async with rw.read():
            entered.append(time.perf_counter())
            if len(entered) == 130:
                all_in.set()
            await all_in.wait()  # hold on: no release may wake the ones still queued

    readers = [asyncio.create_task(reader()) for _ in range(130)]
    await _queued(rk, "herd", 130)
    released = time.perf_counter()
    await write.release()
    await asyncio.wait_for(asyncio.gather(*readers), 10)
    # One release wakes 100; each of those that enters wakes the next in line. Without that,
    # the last 30 would wait for their own BLPOP to time out (1.5 s with the default settings).
    assert max(entered) - released < 1.0, max(entered) - released


@pytest.mark.cluster
async def test_a_waiter_presumed_gone_is_dropped_and_blocks_no_one(rk: redkit.Redkit) -> None:
    from redkit.locks.rwlock import SCRIPTS

    rw = rk.read_write_lock("gone", timeout=5)
    holder = await rw.acquire_read()
    # A writer process that queued and died: its entry has a 200 ms waiter lease it never
    # refreshes.
    dead = "w" + "0" * 32
    ok, _ = await rk.run(SCRIPTS["rw_acquire"], keys=rw._keys, args=[dead, 30_000, 1, 200])
    assert not ok
    began = time.perf_counter()
    # This reader queues behind the dead writer; its next attempt after the writer's deadline
    # drops the writer, and it enters although nobody released anything.
    read = await rw.acquire_read()
    assert time.perf_counter() - began < 3.0
    for part in ("queue", "wqueue", "deadlines"):
        assert await rk.redis.zscore(_key(rk, "gone", part), dead) is None
    await read.release()
    await holder.release()


@pytest.mark.cluster
async def test_waiters_wake_when_a_dead_writers_lease_ends(rk: redkit.Redkit) -> None:
    dead = rk.read_write_lock("died", ttl=0.4, auto_renew=False)
    await dead.acquire_write()  # and never released: its holder died
    began = time.perf_counter()
    read = await rk.read_write_lock("died", timeout=5).acquire_read()
    # The failed attempt said when the write lease ends, and the reader's wait ended then,
    # not at its next regular check (1.5 s with the default settings).
    assert 0.3 < time.perf_counter() - began < 1.0
    await read.release()


@pytest.mark.cluster
async def test_a_writer_shows_how_long_it_has_held_the_lock_and_readers_do_not(
    rk: redkit.Redkit,
) -> None:
    rw = rk.read_write_lock("held-for", ttl=30)
    write = await rw.acquire_write()
    (first,) = await list_locks(rk)
    assert first.held_for is not None
    await asyncio.sleep(0.06)
    await write.extend(30)  # a renewal keeps the acquisition time
    (later,) = await list_locks(rk)
    assert later.held_for is not None
    assert later.held_for - first.held_for >= 0.05
    assert later.fencing_token == first.fencing_token
    await write.release()  # the stamped value is still this writer's to release
    assert not await rw.writer_held()
    assert await list_locks(rk) == []
    read = await rw.acquire_read()
    (reading,) = await list_locks(rk)
    assert (reading.mode, reading.held_for) == ("read", None)
    await read.release()
    permit = await rk.semaphore("builds", limit=2, ttl=30).acquire()
    (sem,) = await list_locks(rk)
    assert (sem.kind, sem.held_for) == ("semaphore", None)
    await permit.release()
