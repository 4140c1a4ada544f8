"""Locks: redkit's Lock against redis-py's asyncio Lock, python-redis-lock and pottery.

- **uncontended**: acquire + release pairs in sequence, one holder. redkit spends two round
  trips per pair (one script each), like redis-py; its auto-renew watchdog is on (the
  default), the peers renew nothing.
- **contended**: 8 tasks x 50 lock-protected read-modify-write increments of one counter,
  checked to end at exactly 400. Waiters: redkit blocks on a wake list (woken by the release);
  redis-py sleeps 0.1 s between tries; pottery retries after a random delay up to 0.2 s.
  The peer ``ceiling`` guards the same increments with an in-process ``asyncio.Lock``
  instead of a Redis lock: two round trips per increment, a bound no Redis lock can pass.
  The peer ``floor`` adds one round trip (a ``PING``) per increment to that, the least a
  Redis lock needs (its release, which hands the lock to the next waiter).
- **hand-over**: from the release call to the blocked waiter holding the lock, median (ms).

python-redis-lock is a synchronous library: its sides run its own code in threads
(``asyncio.to_thread``; 8 threads for the contended figure) with a sync redis-py client.
pottery runs its asyncio ``AIORedlock`` with one master (the same server), which is the
fair way to compare a Redlock implementation against single-server locks.
Peers that are not installed are skipped (``make bench`` installs them).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import itertools
import secrets
import statistics
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any

import redis
from redis.asyncio import Redis

from bench.harness import Context, Runner, comparison, verify

TASKS, INCREMENTS = 8, 50
CEILING = "ceiling: in-process asyncio.Lock, no Redis lock"
CONTENDED_FLOOR = "floor: in-process asyncio.Lock + 1 round trip"
HANDOVERS = 30


def _name(side: str) -> str:
    # A fresh name per run: no state of an earlier run (or side) can help or hurt.
    return f"bench-{side}-{secrets.token_hex(4)}"


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# -- uncontended -----------------------------------------------------------------------------


async def _pairs(n: int, pair: Callable[[], Awaitable[None]]) -> float:
    began = time.perf_counter()
    for _ in range(n):
        await pair()
    return n / (time.perf_counter() - began)


@comparison("locks", "uncontended acquire+release", unit="pairs/s")
async def uncontended(ctx: Context) -> float:
    n = ctx.n(2000)
    name = _name("redkit")
    fences: list[int] = []

    async def pair() -> None:
        lock = ctx.rk.lock(name, ttl=10)
        fences.append(await lock.acquire())
        await lock.release()

    rate = await _pairs(n, pair)
    # Tokens are not consecutive (the server's clock drives them), but each pair got its own.
    verify(
        len(fences) == n and all(a < b for a, b in itertools.pairwise(fences)),
        "redkit pairs missing",
    )
    return rate


async def _uncontended_peer(ctx: Context, side: str, make: Callable[[Redis, str], Any]) -> float:
    """Uncontended pairs of an asyncio peer whose lock ``make(client, name)`` builds."""
    n = ctx.n(2000)
    client = Redis.from_url(ctx.url)
    name = _name(side)
    held = 0

    async def pair() -> None:
        nonlocal held
        lock = make(client, name)
        held += bool(await lock.acquire())
        await lock.release()

    try:
        rate = await _pairs(n, pair)
    finally:
        await client.aclose()
    verify(held == n, f"{side} pairs missing")
    return rate


async def _uncontended_redis_py(ctx: Context) -> float:
    return await _uncontended_peer(ctx, "redis-py", lambda c, name: c.lock(name, timeout=10))


def _redis_lock_pairs(url: str, n: int) -> tuple[float, int]:
    redis_lock: Any = importlib.import_module("redis_lock")
    client = redis.Redis.from_url(url)
    name = _name("python-redis-lock")
    held = 0
    began = time.perf_counter()
    for _ in range(n):
        lock = redis_lock.Lock(client, name, expire=10)
        held += bool(lock.acquire())
        lock.release()
    rate = n / (time.perf_counter() - began)
    client.close()
    return rate, held


async def _uncontended_redis_lock(ctx: Context) -> float:
    n = ctx.n(2000)
    rate, held = await asyncio.to_thread(_redis_lock_pairs, ctx.url, n)
    verify(held == n, "python-redis-lock pairs missing")
    return rate


async def _uncontended_pottery(ctx: Context) -> float:
    pottery: Any = importlib.import_module("pottery")
    return await _uncontended_peer(
        ctx,
        "pottery",
        lambda c, name: pottery.AIORedlock(key=name, masters={c}, auto_release_time=10),
    )


# -- contended -------------------------------------------------------------------------------


async def _contended(
    client: Redis, locks: Callable[[], AbstractAsyncContextManager[Any]], what: str
) -> float:
    counter = _name("counter")
    await client.set(counter, 0)

    async def worker() -> None:
        for _ in range(INCREMENTS):
            async with locks():
                value = int(await client.get(counter) or 0)
                await client.set(counter, value + 1)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(TASKS)))
    rate = TASKS * INCREMENTS / (time.perf_counter() - began)
    final = int(await client.get(counter) or 0)
    await client.delete(counter)
    verify(final == TASKS * INCREMENTS, f"{what}: counter ended at {final}, lost updates")
    return rate


@comparison(
    "locks",
    f"contended {TASKS} tasks x {INCREMENTS} increments",
    unit="increments/s",
)
async def contended(ctx: Context) -> float:
    name = _name("redkit")
    client: Any = ctx.rk.redis
    return await _contended(client, lambda: ctx.rk.lock(name, ttl=10, timeout=60), "redkit")


async def _contended_ceiling(ctx: Context) -> float:
    # No Redis lock at all: the 8 tasks share one in-process asyncio.Lock, so an increment
    # costs just its GET and SET. No distributed lock can beat this; it shows what the
    # contended figure is bounded by (a lock adds at least its release's round trip).
    lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def held() -> AsyncIterator[None]:
        async with lock:
            yield

    return await _contended(ctx.rk.redis, held, "asyncio.Lock")  # type: ignore[arg-type]


async def _contended_floor(ctx: Context) -> float:
    # The floor of a Redis lock here: the ceiling's in-process lock plus one round trip (a
    # PING, standing in for a release that hands the lock over) per increment. A lock cannot
    # do with less than one round trip per holder.
    lock = asyncio.Lock()
    client = ctx.rk.redis

    @contextlib.asynccontextmanager
    async def held() -> AsyncIterator[None]:
        async with lock:
            yield
            await client.ping()

    return await _contended(client, held, "floor")  # type: ignore[arg-type]


async def _contended_redis_py(ctx: Context) -> float:
    client = Redis.from_url(ctx.url)
    name = _name("redis-py")
    try:
        return await _contended(client, lambda: client.lock(name, timeout=10), "redis-py")
    finally:
        await client.aclose()


async def _contended_pottery(ctx: Context) -> float:
    pottery: Any = importlib.import_module("pottery")
    client = Redis.from_url(ctx.url)
    name = _name("pottery")

    def lock() -> AbstractAsyncContextManager[Any]:
        result: AbstractAsyncContextManager[Any] = pottery.AIORedlock(
            key=name, masters={client}, auto_release_time=10
        )
        return result

    try:
        return await _contended(client, lock, "pottery")
    finally:
        await client.aclose()


def _redis_lock_contended(url: str) -> tuple[float, int]:
    redis_lock: Any = importlib.import_module("redis_lock")
    client = redis.Redis.from_url(url)
    name, counter = _name("python-redis-lock"), _name("counter")
    client.set(counter, 0)

    def worker() -> None:
        for _ in range(INCREMENTS):
            with redis_lock.Lock(client, name, expire=10):
                value = int(client.get(counter) or 0)
                client.set(counter, value + 1)

    threads = [threading.Thread(target=worker) for _ in range(TASKS)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rate = TASKS * INCREMENTS / (time.perf_counter() - began)
    final = int(client.get(counter) or 0)
    client.delete(counter)
    client.close()
    return rate, final


async def _contended_redis_lock(ctx: Context) -> float:
    rate, final = await asyncio.to_thread(_redis_lock_contended, ctx.url)
    verify(final == TASKS * INCREMENTS, f"python-redis-lock: counter ended at {final}")
    return rate


# -- hand-over latency -----------------------------------------------------------------------


async def _handovers(
    make: Callable[[], Any],
    acquire: Callable[[Any], Coroutine[Any, Any, None]],
    release: Callable[[Any], Awaitable[Any]],
) -> float:
    latencies = []
    for _ in range(HANDOVERS):
        holder = make()
        await acquire(holder)
        waiter = make()
        got = asyncio.create_task(acquire(waiter))
        await asyncio.sleep(0.02)  # the waiter is blocked (or sleeping between polls)
        verify(not got.done(), "the waiter took a held lock")
        released = time.perf_counter()
        await release(holder)
        await got
        latencies.append(time.perf_counter() - released)
        await release(waiter)
    return statistics.median(latencies) * 1000


@comparison(
    "locks",
    "hand-over latency (release -> waiter holds), median",
    unit="ms",
    higher_is_better=False,
)
async def handover(ctx: Context) -> float:
    name = _name("redkit")

    async def acquire(lock: Any) -> None:
        await lock.acquire()

    async def release(lock: Any) -> None:
        await lock.release()

    return await _handovers(lambda: ctx.rk.lock(name, ttl=10), acquire, release)


async def _handover_redis_py(ctx: Context) -> float:
    client = Redis.from_url(ctx.url)
    name = _name("redis-py")

    async def acquire(lock: Any) -> None:
        verify(await lock.acquire(), "redis-py acquire failed")

    async def release(lock: Any) -> None:
        await lock.release()

    try:
        return await _handovers(lambda: client.lock(name, timeout=10), acquire, release)
    finally:
        await client.aclose()


async def _handover_redis_lock(ctx: Context) -> float:
    redis_lock: Any = importlib.import_module("redis_lock")
    client = redis.Redis.from_url(ctx.url)
    name = _name("python-redis-lock")

    async def acquire(lock: Any) -> None:
        verify(await asyncio.to_thread(lock.acquire), "python-redis-lock acquire failed")

    async def release(lock: Any) -> None:
        lock.release()

    try:
        return await _handovers(lambda: redis_lock.Lock(client, name, expire=10), acquire, release)
    finally:
        client.close()


def _register(comp: Any, peers: dict[str, tuple[str, Runner]]) -> None:
    for peer, (module, runner) in peers.items():
        if _has(module):
            comp.peers[peer] = runner


_register(
    uncontended,
    {
        "redis-py asyncio Lock": ("redis", _uncontended_redis_py),
        "python-redis-lock (thread)": ("redis_lock", _uncontended_redis_lock),
        "pottery AIORedlock (1 master)": ("pottery", _uncontended_pottery),
    },
)
_register(
    contended,
    {
        "redis-py asyncio Lock": ("redis", _contended_redis_py),
        "python-redis-lock (8 threads)": ("redis_lock", _contended_redis_lock),
        "pottery AIORedlock (1 master)": ("pottery", _contended_pottery),
        CONTENDED_FLOOR: ("asyncio", _contended_floor),
        CEILING: ("asyncio", _contended_ceiling),
    },
)
_register(
    handover,
    {
        "redis-py asyncio Lock": ("redis", _handover_redis_py),
        "python-redis-lock (thread)": ("redis_lock", _handover_redis_lock),
    },
)
