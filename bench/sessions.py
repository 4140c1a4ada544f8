"""Sessions: reading a session, the operation every authenticated request makes.

redkit's ``store.get`` is one ``EVALSHA`` that checks the idle and absolute deadlines and
touches at most once per ``touch_every`` (here the default, idle_ttl/10: no touch during the
run). The peers do less per read: starsessions' Redis store (``RedisStore.read`` + its
``JsonSerializer``) and a bare redis-py ``GET`` + ``json.loads`` check no deadline (the key's
TTL is all they have) and slide nothing. Each side's reads are checked: every read returned the
session's data, and ``INFO commandstats`` shows one command per read and no write.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from bench.floor import with_floor
from bench.harness import Context, comparison, timed, verify

DATA = {
    "name": "Alice Example",
    "email": "alice@example.com",
    "roles": ["admin", "deployer"],
    "project": "p-123",
    "csrf": secrets.token_hex(16),
}
TASKS = 50


async def _commands(ctx: Context) -> Counter[str] | None:
    """Server command counts (None on a Cluster URL, where the check is skipped)."""
    if isinstance(ctx.rk.redis, RedisCluster):
        return None
    info: dict[str, Any] = await ctx.rk.redis.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in info.items()})


async def _checked(
    ctx: Context, reads: int, read_command: str, run: Callable[[], Awaitable[float]]
) -> float:
    """Run ``run`` and verify from the server that it made ``reads`` reads and no write."""
    before = await _commands(ctx)
    rate = await run()
    after = await _commands(ctx)
    if before is not None and after is not None:
        after.subtract(before)
        verify(after[read_command] >= reads, f"{after[read_command]} {read_command} for {reads}")
        for write in ("hset", "set", "pexpireat", "expire"):
            verify(after[write] == 0, f"{after[write]} {write} during a read-only run")
    return rate


async def _concurrently(n: int, op: Callable[[], Awaitable[Any]]) -> float:
    loop = asyncio.get_running_loop()
    per_task = max(1, n // TASKS)

    async def worker() -> None:
        for _ in range(per_task):
            await op()

    began = loop.time()
    await asyncio.gather(*(worker() for _ in range(TASKS)))
    return per_task * TASKS / (loop.time() - began)


async def _reads(
    ctx: Context,
    n: int,
    concurrent: bool,
    read_command: str,
    read: Callable[[], Awaitable[Any]],
    cleanup: Callable[[], Awaitable[Any]],
) -> float:
    """Time ``n`` calls of ``read`` (each must return DATA), checked from the server."""
    good = 0

    async def op() -> None:
        nonlocal good
        data = await read()
        good += data == DATA  # after the await: += across an await would lose counts

    async def run() -> float:
        return await (_concurrently(n, op) if concurrent else timed(n, op))

    reads = n if not concurrent else n // TASKS * TASKS
    try:
        rate = await _checked(ctx, reads, read_command, run)
    finally:
        await cleanup()
    verify(good == reads, f"{good} good reads")
    return rate


# -- redkit -------------------------------------------------------------------------------


async def _redkit(ctx: Context, n: int, concurrent: bool) -> float:
    store = ctx.rk.sessions()
    session = await store.create("bench-user", DATA, ip="127.0.0.1", user_agent="bench")

    async def read() -> Any:
        got = await store.get(session.id)
        return None if got is None else got.data

    return await _reads(ctx, n, concurrent, "hmget", read, lambda: store.revoke(session.id))


@comparison("sessions", "get (touch throttled), sequential")
async def get_sequential(ctx: Context) -> float:
    return await _redkit(ctx, ctx.n(5000), concurrent=False)


@comparison("sessions", f"get (touch throttled), {TASKS} concurrent tasks")
async def get_concurrent(ctx: Context) -> float:
    return await _redkit(ctx, ctx.n(20000), concurrent=True)


# -- starsessions -------------------------------------------------------------------------


async def _starsessions(ctx: Context, n: int, concurrent: bool) -> float:
    # Imported here: starsessions is a benchmark peer, not a redkit dependency.
    stores = importlib.import_module("starsessions.stores.redis")
    serializers = importlib.import_module("starsessions.serializers")
    client = Redis.from_url(ctx.url)
    store = stores.RedisStore(connection=client, prefix="bench-starsessions.")
    serializer = serializers.JsonSerializer()
    session_id = secrets.token_hex(16)
    await store.write(session_id, serializer.serialize(DATA), lifetime=3600, ttl=3600)

    async def read() -> Any:
        return serializer.deserialize(await store.read(session_id, lifetime=3600))

    async def cleanup() -> None:
        await store.remove(session_id)
        await client.aclose()

    return await _reads(ctx, n, concurrent, "get", read, cleanup)


async def _starsessions_sequential(ctx: Context) -> float:
    return await _starsessions(ctx, ctx.n(5000), concurrent=False)


async def _starsessions_concurrent(ctx: Context) -> float:
    return await _starsessions(ctx, ctx.n(20000), concurrent=True)


# -- bare redis-py --------------------------------------------------------------------------


async def _bare(ctx: Context, n: int, concurrent: bool) -> float:
    client = Redis.from_url(ctx.url)
    key = "bench-bare-session:" + secrets.token_hex(16)
    await client.set(key, json.dumps(DATA), ex=3600)

    async def read() -> Any:
        raw = await client.get(key)
        return json.loads(raw) if raw is not None else None

    async def cleanup() -> None:
        await client.delete(key)
        await client.aclose()

    return await _reads(ctx, n, concurrent, "get", read, cleanup)


async def _bare_sequential(ctx: Context) -> float:
    return await _bare(ctx, ctx.n(5000), concurrent=False)


async def _bare_concurrent(ctx: Context) -> float:
    return await _bare(ctx, ctx.n(20000), concurrent=True)


get_sequential.peers["starsessions RedisStore"] = _starsessions_sequential
get_sequential.peers["redis-py GET + json.loads"] = _bare_sequential
with_floor(get_sequential)
get_concurrent.peers["starsessions RedisStore"] = _starsessions_concurrent
get_concurrent.peers["redis-py GET + json.loads"] = _bare_concurrent
