"""The sync API under threads: what the generated tests (one caller at a time) cannot show.

Hand-written (tools/async_to_sync.py lists it in HAND_WRITTEN): the async versions of these
tests use tasks and events, which have no place in a sync test.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import redkit.sync
from redkit.embedded import ValkeyProcess
from redkit.sync import FailPolicy


@pytest.mark.cluster
def test_threads_that_miss_one_key_at_once_compute_it_once(rk: redkit.sync.Redkit) -> None:
    cache = rk.cache()
    runs = 0
    started = threading.Barrier(16, timeout=10)

    def compute() -> str:
        nonlocal runs
        runs += 1
        time.sleep(0.2)  # long enough for every other thread to find the lock taken
        return "value"

    def call() -> str:
        started.wait()
        return str(cache.get_or_set("cold", compute, ttl=60))

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: call(), range(16)))
    assert results == ["value"] * 16
    assert runs == 1


def test_stale_while_revalidate_answers_at_once_and_refreshes_in_a_thread(
    rk: redkit.sync.Redkit,
) -> None:
    cache = rk.cache(stale_while_revalidate=30, beta=0)
    runs = 0
    refresh_started, refresh_may_finish = threading.Event(), threading.Event()

    def compute() -> int:
        nonlocal runs
        runs += 1
        if runs > 1:
            refresh_started.set()
            assert refresh_may_finish.wait(10)
        return runs

    assert cache.get_or_set("swr", compute, ttl=0.1) == 1
    time.sleep(0.15)  # stale now, inside the revalidation window
    # The old value comes back while the refresh is held: it runs in a thread of its own.
    assert cache.get_or_set("swr", compute, ttl=0.1) == 1
    assert refresh_started.wait(10)
    refresh_may_finish.set()
    cache.drain()
    assert cache.get("swr") == 2


@pytest.mark.cluster
@pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_window", "sliding_log", "gcra"])
def test_threads_hitting_one_limit_get_exactly_the_limit(
    rk: redkit.sync.Redkit, algorithm: str
) -> None:
    limiter = rk.rate_limiter(50, 3600, algorithm, timeout=10)
    with ThreadPoolExecutor(8) as pool:
        decisions = list(pool.map(lambda _: limiter.hit("shared"), range(200)))
    assert sum(d.allowed for d in decisions) == 50


def test_threads_denied_on_hundreds_of_keys_count_them_without_an_error(
    rk: redkit.sync.Redkit,
) -> None:
    # More keys than the in-process ranking holds, from threads at once: eviction and the
    # flush's swap race unless they are one critical section (a KeyError from hit() before).
    limiter = rk.rate_limiter(1, 3600)
    limiter.top_flush_interval = 0.0  # every denial finds the flush due: the most contention
    keys = [f"k{n}" for n in range(400)]
    for key in keys:
        limiter.hit(key)  # each key's one allowed hit
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch between almost any two bytecodes
    try:
        with ThreadPoolExecutor(8) as pool:
            decisions = list(pool.map(limiter.hit, keys * 5))
    finally:
        sys.setswitchinterval(switch)
    assert not any(d.allowed for d in decisions)
    limiter.flush_top_limited()
    top = limiter.top_limited(count=100)
    assert 0 < len(top) <= 100
    assert sum(n for _, n in top) <= len(keys) * 5


def test_the_sync_api_returns_the_async_apis_value_classes(rk: redkit.sync.Redkit) -> None:
    import redkit as async_redkit

    session = rk.sessions().create("alice", {"a": 1})
    assert type(session) is async_redkit.Session
    assert type(rk.rate_limiter(5, 60).hit("k")) is async_redkit.Decision
    assert redkit.sync.SessionNotFound is async_redkit.SessionNotFound


def test_threads_queue_for_a_connection_instead_of_failing(redis_url: str, namespace: str) -> None:
    with redkit.sync.connect(redis_url, namespace, max_connections=2) as rk:
        store = rk.sessions()
        with ThreadPoolExecutor(12) as pool:
            sessions = list(pool.map(lambda i: store.create(f"u{i}", {}), range(60)))
        assert len({s.id for s in sessions}) == 60


@pytest.mark.cluster
def test_a_waiting_thread_takes_the_lock_when_it_is_released(rk: redkit.sync.Redkit) -> None:
    holder = rk.lock("handover", ttl=30)
    holder.acquire()
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(rk.lock("handover").acquire(timeout=10)))
    waiter.start()
    queue = rk.keys.group("lock", "handover").key("queue")
    for _ in range(1000):  # until the waiter queued on the server (~5 s at most)
        if rk.redis.zcard(queue) == 1:
            break
        time.sleep(0.005)
    assert not got
    holder.release()
    waiter.join(10)
    assert holder.fencing_token is not None
    # Handed over: the token the release gave (the last one stored), after the holder's.
    fence = rk.keys.group("lock", "handover").key("fence")
    assert got == [int(rk.redis.get(fence) or 0)]
    assert got[0] > holder.fencing_token


@pytest.mark.cluster
def test_the_watchdog_thread_renews_and_reports_a_lost_lock(rk: redkit.sync.Redkit) -> None:
    from redkit._sync.locks.admin import force_release

    told: list[object] = []
    lock = rk.lock("watched", ttl=0.3, on_lost=told.append)

    def work() -> None:
        with lock:
            time.sleep(0.5)  # past the ttl: only the watchdog keeps it
            assert lock.owned()
            assert force_release(rk, "watched")
            assert lock.lost_event.wait(timeout=2)  # the next renewal finds it gone
            assert told == [lock]
            assert not lock.held

    with pytest.raises(redkit.sync.LockLost, match="watchdog"):
        work()


def test_a_released_lease_leaves_no_watchdog_thread_behind(rk: redkit.sync.Redkit) -> None:
    for _ in range(3):
        with rk.lock("short", ttl=0.15):
            time.sleep(0.1)  # the first renewal is due at ttl / 3: its thread starts
        with rk.semaphore("sem", limit=2, ttl=0.15):
            time.sleep(0.1)
    watchdogs = [t for t in threading.enumerate() if t.name == "redkit-lease-watchdog"]
    assert watchdogs == []


@pytest.mark.cluster
def test_readers_share_a_read_write_lock_and_a_writer_waits_for_them(
    rk: redkit.sync.Redkit,
) -> None:
    rw = rk.read_write_lock("doc", ttl=10)
    all_in = threading.Barrier(4, timeout=10)

    def read() -> int:
        with rw.read() as lease:
            all_in.wait()  # four readers inside at once
            return lease.fencing_token

    with ThreadPoolExecutor(4) as pool:
        tokens = list(pool.map(lambda _: read(), range(4)))
    assert len(set(tokens)) == 1
    with rw.write() as write:
        assert rw.readers() == 0
        assert write.fencing_token > tokens[0]
        with pytest.raises(redkit.sync.LockNotAcquired):
            rw.acquire_read(timeout=0)


@pytest.mark.cluster
def test_a_job_enqueued_by_sync_code_runs_on_the_async_worker(
    rk: redkit.sync.Redkit, redis_url: str, namespace: str
) -> None:
    import asyncio

    import redkit as async_redkit

    def double(payload: dict[str, int]) -> int:  # a plain def: the worker's thread pool runs it
        return payload["n"] * 2

    stop = threading.Event()

    async def run_worker() -> None:
        async with async_redkit.connect(redis_url, namespace) as ark:
            worker = ark.worker(queues=["sync"], functions={"double": double}, concurrency=2)
            task = asyncio.create_task(worker.run())
            for _ in range(1000):  # bounded: ~20 s at most
                if stop.is_set():
                    break
                await asyncio.sleep(0.02)
            worker.stop()
            await task

    thread = threading.Thread(target=asyncio.run, args=(run_worker(),))
    thread.start()
    try:
        job = rk.queue("sync").enqueue("double", {"n": 21})
        assert job.result(timeout=10) == 42
        assert job.status() is redkit.sync.JobState.COMPLETED
        again = rk.queue("sync").get(job.id)
        assert again is not None
        assert again.return_value == 42
    finally:
        stop.set()
        thread.join(30)


def test_connect_without_a_url_starts_the_embedded_server(
    no_redis_url: None, data_dir: Path
) -> None:
    with redkit.sync.connect(data_dir=data_dir) as rk:
        assert rk.embedded is not None
        try:
            assert rk.ping() > 0
            assert rk.sessions().create("alice").user_id == "alice"
            assert rk.server_info().embedded
        finally:
            rk.embedded.release()


def test_a_forked_child_opens_its_own_connections(rk: redkit.sync.Redkit) -> None:
    store = rk.sessions()
    before = store.create("parent")  # the parent's pool now holds a connection
    pid = os.fork()
    if pid == 0:  # the child: redis-py sees the new pid and connects afresh
        code = 1
        try:
            if store.get(before.id) is not None and store.create("child").user_id == "child":
                code = 0
        finally:
            os._exit(code)  # never back into pytest, whatever happened
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.get(before.id) is not None  # and the parent's connections still work
    assert [s.user_id for s in store.list("child")] == ["child"]


@pytest.mark.parametrize("fail", ["open", "closed"])
def test_a_hung_server_gets_the_fail_policy_within_the_command_timeout(
    own_server: ValkeyProcess, fail: FailPolicy
) -> None:
    # The sync API bounds a call by the command timeout (the limiter's own timeout needs
    # the async API's per-call deadline): a short command timeout gives a prompt answer.
    with redkit.sync.connect(own_server.url, "rlfail", command_timeout=0.3) as rk:
        limiter = rk.rate_limiter(5, 60, fail=fail)
        assert limiter.hit("x").allowed
        own_server.pause()
        decision = limiter.hit("x")
        assert decision.degraded
        assert decision.allowed is (fail == "open")
