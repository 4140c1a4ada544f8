"""The floor every primitive is measured against: one round trip.

``PING`` through redkit's client against plain redis-py: redkit adds nothing here, so the
ratio should be ~1.0; a primitive's sequential operation can at best reach this rate.
``script`` is the same floor for a Lua call (EVALSHA), redkit's runner vs redis-py's
``register_script``.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from bench.harness import Comparison, Context, comparison, timed, verify
from redkit.scripts import Script

NOOP = Script("bench_noop", "-- KEYS[1]: any\n-- ARGV: none\n-- Returns: 1\nreturn 1")


def _plain(ctx: Context) -> Redis:
    # The peer: redis-py as a user would create it, with its default pool.
    return Redis.from_url(ctx.url)


@comparison("floor", "PING sequential, 1 connection")
async def ping_sequential(ctx: Context) -> float:
    n = ctx.n(5000)
    replies = 0

    async def op() -> None:
        nonlocal replies
        replies += bool(await ctx.rk.redis.ping())

    rate = await timed(n, op)
    verify(replies == n, f"{replies} of {n} PINGs answered")
    return rate


async def _ping_sequential_redis_py(ctx: Context) -> float:
    n = ctx.n(5000)
    client = _plain(ctx)
    replies = 0

    async def op() -> None:
        nonlocal replies
        replies += bool(await client.ping())

    try:
        rate = await timed(n, op)
    finally:
        await client.aclose()
    verify(replies == n, f"{replies} of {n} PINGs answered")
    return rate


ping_sequential.peers["redis-py"] = _ping_sequential_redis_py

FLOOR = "floor: redis-py PING"
SPIN_OFF = "redkit, spin-wait off"


def with_floor(comp: Comparison, round_trips: int = 1) -> Comparison:
    """Add the floor as a peer of a sequential figure, measured in the same run.

    Its ratio says how close the operation comes to ``round_trips`` bare round trips: the
    design's bar for sequential operations is 0.9 ("within 10% of the floor"). The machine's
    speed drifts by tens of percent between runs, so only a floor from the same run is fair.
    """

    async def floor(ctx: Context) -> float:
        return await _ping_sequential_redis_py(ctx) / round_trips

    name = FLOOR if round_trips == 1 else f"floor: {round_trips} redis-py PINGs"
    comp.peers[name] = floor
    redkit_side = comp.redkit

    async def spin_off(ctx: Context) -> float:
        pipeline = ctx.rk.pipeline
        if pipeline is None:
            return await redkit_side(ctx)
        saved, pipeline.spin_wait = pipeline.spin_wait, 0.0
        try:
            return await redkit_side(ctx)
        finally:
            pipeline.spin_wait = saved

    # The same operation with the spin-wait off (REDKIT_SPIN_WAIT=0): the ratio shows what
    # keeping the event loop turning for a reply is worth on this machine.
    comp.peers[SPIN_OFF] = spin_off
    return comp


async def _pipelined(client: Redis, ctx: Context) -> float:
    batches, depth = ctx.n(200), 100
    loop = asyncio.get_running_loop()
    began = loop.time()
    replies = 0
    for _ in range(batches):
        pipe = client.pipeline(transaction=False)
        for _ in range(depth):
            pipe.ping()
        replies += sum(1 for r in await pipe.execute() if r)
    rate = batches * depth / (loop.time() - began)
    verify(replies == batches * depth, "pipelined PINGs missing")
    return rate


@comparison("floor", "PING pipelined 100 deep", unit="cmd/s")
async def ping_pipelined(ctx: Context) -> float:
    return await _pipelined(ctx.rk.redis, ctx)  # type: ignore[arg-type]


async def _ping_pipelined_redis_py(ctx: Context) -> float:
    client = _plain(ctx)
    try:
        return await _pipelined(client, ctx)
    finally:
        await client.aclose()


ping_pipelined.peers["redis-py"] = _ping_pipelined_redis_py


@comparison("floor", "Lua script call (EVALSHA), sequential")
async def script_sequential(ctx: Context) -> float:
    n = ctx.n(5000)
    key = ctx.rk.keys.group("bench", "noop").key("k")
    ones = 0

    async def op() -> None:
        nonlocal ones
        ones += await ctx.rk.run(NOOP, [key])  # the path every primitive takes

    rate = await timed(n, op)
    verify(ones == n, f"{ones} of {n} script calls returned 1")
    return rate


async def _script_redis_py(ctx: Context) -> float:
    n = ctx.n(5000)
    client = _plain(ctx)
    script = client.register_script(NOOP.source)
    ones = 0

    async def op() -> None:
        nonlocal ones
        ones += await script(keys=["bench:{noop}:k"])

    try:
        rate = await timed(n, op)
    finally:
        await client.aclose()
    verify(ones == n, f"{ones} of {n} script calls returned 1")
    return rate


script_sequential.peers["redis-py register_script"] = _script_redis_py


@comparison("floor", "PING, 50 concurrent tasks")
async def ping_concurrent(ctx: Context) -> float:
    return await _concurrent(ctx, ctx.rk.redis)  # type: ignore[arg-type]


async def _concurrent(ctx: Context, client: Redis) -> float:
    tasks, per_task = 50, ctx.n(200)
    loop = asyncio.get_running_loop()

    async def worker() -> int:
        return sum([bool(await client.ping()) for _ in range(per_task)])

    began = loop.time()
    done = sum(await asyncio.gather(*(worker() for _ in range(tasks))))
    rate = done / (loop.time() - began)
    verify(done == tasks * per_task, "concurrent PINGs missing")
    return rate


async def _ping_concurrent_redis_py(ctx: Context) -> float:
    client = _plain(ctx)
    try:
        return await _concurrent(ctx, client)
    finally:
        await client.aclose()


ping_concurrent.peers["redis-py"] = _ping_concurrent_redis_py
