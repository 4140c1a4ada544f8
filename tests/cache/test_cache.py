"""The cache: values, single flight, XFetch, stale windows and tag invalidation."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

import redkit
from redkit._codegen import async_only
from redkit.cache import Cache
from redkit.cache.core import _shard_idents
from redkit.embedded import ValkeyProcess
from redkit.keys import Keyspace


@pytest.fixture
async def rk2(redis_url: str, namespace: str) -> AsyncIterator[redkit.Redkit]:
    """A second client on the same server and namespace: another process, as far as the
    cache can tell (nothing is shared in memory)."""
    async with redkit.connect(redis_url, namespace) as client:
        yield client


async def commandstats(rk: redkit.Redkit) -> dict[str, int]:
    """Calls per command, summed over the primaries."""
    totals: dict[str, int] = {}
    for info in await rk._infos("commandstats"):
        for name, value in info.items():
            if name.startswith("cmdstat_"):
                calls = value["calls"] if isinstance(value, dict) else 0
                totals[name[len("cmdstat_") :]] = totals.get(name[len("cmdstat_") :], 0) + calls
    return totals


@pytest.mark.cluster
async def test_values_round_trip_as_json_and_bytes_stay_raw(rk: redkit.Redkit) -> None:
    cache = rk.cache(default_ttl=30)
    await cache.set("user:1", {"name": "Ada", "roles": ["admin"]})
    await cache.set("blob", b"\x00\xffraw")
    assert await cache.get("user:1") == {"name": "Ada", "roles": ["admin"]}
    assert await cache.get("blob") == b"\x00\xffraw"
    assert await cache.get("missing", "dflt") == "dflt"
    assert await cache.delete("user:1") is True
    assert await cache.delete("user:1") is False
    assert await cache.get("user:1") is None
    assert repr(cache).startswith("<Cache 'default'")


async def test_an_entry_expires_after_its_ttl(rk: redkit.Redkit) -> None:
    cache = rk.cache()
    await cache.set("k", 1, ttl=0.1)
    assert await cache.get("k") == 1
    await asyncio.sleep(0.15)
    assert await cache.get("k") is None


async def test_large_values_are_compressed_and_the_cap_is_enforced(rk: redkit.Redkit) -> None:
    cache = rk.cache(compress_above=1000, max_bytes=100_000)
    big = "x" * 50_000
    await cache.set("big", big)
    stored = await rk.redis.get(cache.keys_for("big").entry)
    assert stored is not None
    assert len(stored) < 5_000  # zlib did its work
    assert await cache.get("big") == big
    with pytest.raises(redkit.InvalidInput, match="cap"):
        await cache.set("huge", "y" * 200_000)
    with pytest.raises(redkit.InvalidInput, match="JSON"):
        await cache.set("obj", object())
    assert await cache.get("huge") is None


def test_bad_options_are_refused_before_anything_is_written() -> None:
    class FakeRk:
        is_cluster = False
        keys = Keyspace("x")

    fake: Any = FakeRk()
    with pytest.raises(redkit.InvalidInput, match="default_ttl"):
        Cache(fake, default_ttl=-1)
    with pytest.raises(redkit.InvalidInput, match="shards"):
        Cache(fake, shards=0)
    with pytest.raises(redkit.InvalidInput, match="name"):
        Cache(fake, name="a b")
    with pytest.raises(redkit.InvalidInput, match="beta"):
        Cache(fake, beta=-1)


def test_shards_spread_evenly_over_the_slots() -> None:
    idents = _shard_idents(16)
    slots = [Keyspace("any").group("cache", ident).slot for ident in idents]
    assert [slot * 16 // 16384 for slot in slots] == list(range(16))
    assert _shard_idents(16) == idents  # deterministic: every process finds the same


@pytest.mark.cluster
async def test_decorator_caches_per_arguments_and_tags_invalidate(rk: redkit.Redkit) -> None:
    cache = rk.cache(default_ttl=60)
    calls: list[int] = []

    @cache.cached(tags=lambda user_id: [f"user:{user_id}"])
    async def profile(user_id: int) -> dict[str, int]:
        calls.append(user_id)
        return {"id": user_id, "version": len(calls)}

    assert await profile(1) == {"id": 1, "version": 1}
    assert await profile(1) == {"id": 1, "version": 1}
    assert await profile(2) == {"id": 2, "version": 2}
    assert calls == [1, 2]
    assert await cache.invalidate("user:1") == 1
    assert await profile(1) == {"id": 1, "version": 3}
    assert await profile(2) == {"id": 2, "version": 2}
    stats = await cache.stats()
    assert (stats.hits, stats.misses, stats.recomputes) == (2, 3, 3)


async def test_key_and_tag_templates_use_the_arguments_by_name(rk: redkit.Redkit) -> None:
    cache = rk.cache()

    @cache.cached(ttl=60, key="project:{project_id}", tags=["project:{project_id}", "projects"])
    async def project(project_id: str, verbose: bool = False) -> str:
        return f"p-{project_id}"

    assert await project("a") == "p-a"
    assert await cache.get("project:a") == "p-a"
    assert await cache.invalidate("projects") == 1
    assert await cache.get("project:a") is None


@pytest.mark.cluster
async def test_get_or_set_computes_once_and_stores_under_its_tags(rk: redkit.Redkit) -> None:
    cache = rk.cache()
    runs = 0

    async def compute() -> dict[str, int]:
        nonlocal runs
        runs += 1
        return {"n": runs}

    assert await cache.get_or_set("k", compute, ttl=60, tags=["t"]) == {"n": 1}
    assert await cache.get_or_set("k", compute) == {"n": 1}
    assert runs == 1
    assert await cache.get("k") == {"n": 1}
    assert await cache.invalidate("t") == 1
    assert await cache.get_or_set("k", compute) == {"n": 2}
    with pytest.raises(redkit.InvalidInput, match="callable"):
        await cache.get_or_set("k", 42)  # type: ignore[arg-type]


@async_only  # the sync API's @cached takes a plain function
def test_the_async_decorator_refuses_a_plain_function(rk: redkit.Redkit) -> None:
    with pytest.raises(redkit.InvalidInput, match="async"):
        rk.cache().cached()(lambda: 1)  # type: ignore[arg-type, return-value]


@pytest.mark.cluster
async def test_200_concurrent_callers_on_a_cold_key_compute_once(
    rk: redkit.Redkit, rk2: redkit.Redkit
) -> None:
    # Two clients with two caches each: four "processes" that share nothing in memory.
    caches = [rk.cache(), rk.cache(), rk2.cache(), rk2.cache()]
    runs = 0

    async def compute() -> str:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.2)
        return "value"

    fns = [c.cached(ttl=60, key="cold")(compute) for c in caches]
    results = await asyncio.gather(*(fns[i % 4]() for i in range(200)))
    assert runs == 1
    assert results == ["value"] * 200
    for cache in caches:
        await cache.flush_stats()
    stats = await caches[0].stats()
    assert stats.recomputes == 1


@pytest.fixture
def crashing_holder(redis_url: str, namespace: str) -> Iterator[subprocess.Popen[str]]:
    code = (
        "import asyncio, sys, redkit\n"
        "async def main():\n"
        "    async with redkit.connect(sys.argv[1], sys.argv[2]) as rk:\n"
        "        cache = rk.cache(lock_timeout=1.0)\n"
        "        @cache.cached(ttl=30, key='report')\n"
        "        async def report():\n"
        "            print('computing', flush=True)\n"
        "            await asyncio.sleep(60)\n"
        "        await report()\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, redis_url, namespace], stdout=subprocess.PIPE, text=True
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


# Async only: its waiters are tasks in flight while the holder is killed.
@async_only
@pytest.mark.cluster
async def test_waiters_recover_when_the_single_flight_holder_crashes(
    rk: redkit.Redkit, rk2: redkit.Redkit, crashing_holder: subprocess.Popen[str]
) -> None:
    assert crashing_holder.stdout is not None
    line = await asyncio.to_thread(crashing_holder.stdout.readline)
    assert line.strip() == "computing"  # the holder has the lock and is computing
    runs = 0

    async def report() -> str:
        nonlocal runs
        runs += 1
        return "recovered"

    fns = [c.cached(ttl=30, key="report")(report) for c in (rk.cache(), rk2.cache())]
    began = time.perf_counter()
    waiters = asyncio.gather(*(fns[i % 2]() for i in range(20)))
    await asyncio.sleep(0.05)
    os.kill(crashing_holder.pid, signal.SIGKILL)  # dies holding the lock
    assert await waiters == ["recovered"] * 20
    # The lock's deadline was 1 s after the holder took it; generous slack for a busy host.
    assert time.perf_counter() - began < 2.5
    assert runs == 1


# Async only: its three loaders run concurrently for three seconds.
@async_only
@pytest.mark.cluster
async def test_xfetch_refreshes_a_hot_key_before_it_expires(
    rk: redkit.Redkit, rk2: redkit.Redkit
) -> None:
    caches = [rk.cache(beta=2.0), rk.cache(beta=2.0), rk2.cache(beta=2.0)]
    runs = 0

    async def compute() -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.03)
        return runs

    fns = [c.cached(ttl=1, key="hot")(compute) for c in caches]
    await fns[0]()  # the one cold miss
    lookups = 0
    stop = time.monotonic() + 3.2

    async def load(fn: Any) -> None:
        nonlocal lookups
        while time.monotonic() < stop:
            await fn()
            lookups += 1
            await asyncio.sleep(0.01)

    await asyncio.gather(*(load(fn) for fn in fns))
    for cache in caches:
        await cache.drain()
    stats = await caches[0].stats()
    # Every lookup is counted: one miss (the first call), everything else a hit.
    assert stats.misses == 1
    assert stats.hits == lookups
    assert stats.early >= 2  # refreshed early, not after expiry
    assert 3 <= runs <= 10  # about one refresh per TTL, not one per caller


@pytest.mark.cluster
async def test_invalidate_deletes_tagged_entries_without_keys_or_scan(rk: redkit.Redkit) -> None:
    cache = rk.cache()
    for i in range(30):
        await cache.set(f"item:{i}", i, tags=["items", f"item:{i}"])
    await cache.set("other", "kept", tags=["others"])
    before = await commandstats(rk)
    assert await cache.invalidate("items") == 30
    after = await commandstats(rk)
    for command in ("keys", "scan"):
        assert after.get(command, 0) == before.get(command, 0)
    assert [await cache.get(f"item:{i}") for i in range(30)] == [None] * 30
    assert await cache.get("other") == "kept"
    assert await cache.invalidate("items") == 0
    assert await cache.invalidate("nothing", "item:3") == 0


async def test_tag_sets_are_trimmed_and_expire_with_their_entries(rk: redkit.Redkit) -> None:
    cache = rk.cache()
    await cache.set("a", 1, ttl=0.05, tags=["t"])
    await asyncio.sleep(0.1)
    await cache.set("b", 2, ttl=30, tags=["t"])
    tag_key = cache.keys_for("b").shard.tag("t")
    assert await rk.redis.zcard(tag_key) == 1  # the expired member was trimmed on write
    assert 29_000 < await rk.redis.pttl(tag_key) <= 30_000
    assert await cache.invalidate("t") == 1


# Async only (tasks and events); sync: tests/sync/test_threads.py.
@async_only
@pytest.mark.cluster
async def test_a_value_computed_before_an_invalidation_is_not_stored(rk: redkit.Redkit) -> None:
    cache = rk.cache()
    release = asyncio.Event()
    runs = 0

    @cache.cached(ttl=60, key="report", tags=["reports"])
    async def report() -> int:
        nonlocal runs
        runs += 1
        if runs == 1:
            await release.wait()
        return runs

    first = asyncio.create_task(report())
    await asyncio.sleep(0.05)
    await cache.invalidate("reports")  # the data changed while the first call computed
    release.set()
    assert await first == 1  # the caller still gets its result...
    assert await cache.get("report") is None  # ...but it is not cached
    assert await report() == 2


# Async only (tasks and events); sync: tests/sync/test_threads.py.
@async_only
async def test_stale_while_revalidate_serves_the_old_value_and_refreshes(
    rk: redkit.Redkit,
) -> None:
    cache = rk.cache(stale_while_revalidate=10)
    version = 0
    refresh_started, refresh_may_finish = asyncio.Event(), asyncio.Event()

    @cache.cached(ttl=0.1, key="swr")
    async def compute() -> int:
        nonlocal version
        version += 1
        if version > 1:  # the refresh: held until the stale answer is in
            refresh_started.set()
            await refresh_may_finish.wait()
        return version

    assert await compute() == 1
    await asyncio.sleep(0.15)
    # Stale, at once: answered while the refresh is still held (waiting for it would hang
    # here until the bound), not "within N ms", which a loaded machine cannot promise.
    assert await asyncio.wait_for(compute(), timeout=5) == 1
    await asyncio.wait_for(refresh_started.wait(), timeout=5)  # in the background
    refresh_may_finish.set()
    await cache.drain()
    assert await compute() == 2
    assert (await cache.stats()).stale == 1


async def test_stale_if_error_serves_the_old_value_when_the_recompute_fails(
    rk: redkit.Redkit,
) -> None:
    cache = rk.cache(stale_if_error=10, beta=0)
    fail = False

    @cache.cached(ttl=0.1, key="sie")
    async def compute() -> str:
        if fail:
            raise RuntimeError("backend down")
        return "good"

    @rk.cache(beta=0).cached(ttl=0.1, key="plain")
    async def plain() -> str:
        if fail:
            raise RuntimeError("backend down")
        return "good"

    assert await compute() == "good"
    assert await plain() == "good"
    await asyncio.sleep(0.15)
    fail = True
    assert await compute() == "good"
    with pytest.raises(RuntimeError, match="backend down"):
        await plain()
    # The failed recompute released its lock: the next caller tries again at once.
    fail = False
    assert await plain() == "good"


# Async only: an error is shared between the tasks of one process.
@async_only
async def test_an_error_is_shared_and_the_lock_is_released(rk: redkit.Redkit) -> None:
    cache = rk.cache()
    attempts = 0

    @cache.cached(ttl=60, key="flaky")
    async def flaky() -> int:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.02)
        if attempts == 1:
            raise ValueError("first try fails")
        return attempts

    results = await asyncio.gather(flaky(), flaky(), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)
    assert await rk.redis.exists(cache.keys_for("flaky").lock) == 0
    assert await flaky() == 2


# Async only: a thread is not cancelled.
@async_only
async def test_a_cancelled_caller_does_not_strand_the_others(rk: redkit.Redkit) -> None:
    cache = rk.cache()
    gate = asyncio.Event()

    @cache.cached(ttl=60, key="slow")
    async def slow() -> str:
        await gate.wait()
        return "done"

    first = asyncio.create_task(slow())
    await asyncio.sleep(0.02)
    second = asyncio.create_task(slow())
    await asyncio.sleep(0.02)
    first.cancel()
    await asyncio.sleep(0.02)
    gate.set()
    assert await second == "done"


async def test_the_decorator_fails_open_when_the_server_is_gone(own_server: ValkeyProcess) -> None:
    async with redkit.connect(own_server.url, "cachefault") as rk:
        cache, strict = rk.cache(), rk.cache(fail_open=False)

        async def compute() -> str:
            return "computed"

        lenient_fn = cache.cached(ttl=60, key="k")(compute)
        strict_fn = strict.cached(ttl=60, key="k")(compute)
        assert await lenient_fn() == "computed"
        own_server.kill()
        assert await lenient_fn() == "computed"
        with pytest.raises(redkit.ConnectionLost):
            await strict_fn()
        with pytest.raises(redkit.ConnectionLost):
            await cache.get("k")


@pytest.mark.cluster
async def test_entries_spread_over_the_cluster_masters(rk: redkit.Redkit) -> None:
    if not isinstance(rk.redis, RedisCluster):
        pytest.skip("a Cluster property")
    cache = rk.cache()
    nodes = set()
    for i in range(64):
        node = rk.redis.get_node_from_key(cache.keys_for(f"k{i}").entry)
        assert node is not None
        nodes.add(node.name)
    assert len(nodes) == 3


# Async only: the plain hit reads through the automatic pipeline.
@async_only
async def test_a_fresh_hit_is_one_round_trip_without_a_script(rk: redkit.Redkit) -> None:
    if rk.pipeline is None:
        pytest.skip("without the automatic pipeline (auto_pipeline=False) hits run the script")
    cache = rk.cache()
    await cache.set("fresh", {"a": 1}, ttl=60)
    before = await commandstats(rk)
    trips = rk.pipeline.round_trips
    for _ in range(20):
        assert await cache.get("fresh") == {"a": 1}
    after = await commandstats(rk)
    assert rk.pipeline.round_trips - trips == 20
    assert after.get("get", 0) - before.get("get", 0) == 20
    assert after.get("evalsha", 0) == before.get("evalsha", 0)
    assert (await cache.stats()).hits >= 20
