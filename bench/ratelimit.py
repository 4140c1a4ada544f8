"""Rate limiting: checks per second against ``limits`` (its async Redis storage on redis-py).

Same server, same run, each side's limit set so that every check is allowed (the common
path), on one hot key. ``limits`` has no GCRA; redkit's ``sliding_log`` is compared with
its moving window, the exact algorithm of both. A separate figure counts redkit's round
trips per check from ``INFO commandstats`` (top-level EVALSHA/EVAL calls per check).
"""

from __future__ import annotations

import asyncio
import importlib.util
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.floor import with_floor
from bench.harness import Context, comparison, verify

BIG = 10**9  # every check is allowed: the hot path of a healthy service
# redkit's algorithm -> the name of limits' strategy for it. limits is imported only when
# its side runs (it is installed in .venv-bench only; without it the peer is skipped).
PAIRS: dict[str, str] = {
    "fixed_window": "FixedWindowRateLimiter",
    "sliding_window": "SlidingWindowCounterRateLimiter",
    "sliding_log": "MovingWindowRateLimiter",
}
HAVE_LIMITS = importlib.util.find_spec("limits") is not None


async def _sequential(n: int, check: Callable[[], Awaitable[bool]]) -> float:
    allowed = 0
    began = time.perf_counter()
    for _ in range(n):
        allowed += await check()
    rate = n / (time.perf_counter() - began)
    verify(allowed == n, f"only {allowed} of {n} checks were allowed")
    return rate


async def _concurrent(n: int, check: Callable[[], Awaitable[bool]], tasks: int = 50) -> float:
    per_task = max(1, n // tasks)

    async def worker() -> int:
        return sum([await check() for _ in range(per_task)])

    began = time.perf_counter()
    allowed = sum(await asyncio.gather(*(worker() for _ in range(tasks))))
    rate = tasks * per_task / (time.perf_counter() - began)
    verify(allowed == tasks * per_task, f"only {allowed} checks were allowed")
    return rate


def _redkit_check(ctx: Context, algorithm: str) -> Callable[[], Awaitable[bool]]:
    limiter = ctx.rk.rate_limiter(BIG, 3600, algorithm, timeout=30)
    key = "bench:" + secrets.token_hex(4)

    async def check() -> bool:
        return (await limiter.hit(key)).allowed

    return check


async def _limits_side(
    ctx: Context, algorithm: str, run: Callable[[Callable[[], Awaitable[bool]]], Awaitable[float]]
) -> float:
    from limits import RateLimitItemPerHour
    from limits.aio import strategies
    from limits.aio.storage import RedisStorage

    storage = RedisStorage("async+" + ctx.url, implementation="redispy")
    strategy = getattr(strategies, PAIRS[algorithm])(storage)
    item = RateLimitItemPerHour(BIG)
    key = "bench-" + secrets.token_hex(4)

    async def check() -> bool:
        return bool(await strategy.hit(item, key))

    return await run(check)


def _register(algorithm: str) -> None:
    seq = comparison("ratelimit", f"{algorithm} check, sequential")(
        lambda ctx: _sequential(ctx.n(3000), _redkit_check(ctx, algorithm))
    )
    if HAVE_LIMITS:
        seq.peers["limits"] = lambda ctx: _limits_side(
            ctx, algorithm, lambda check: _sequential(ctx.n(3000), check)
        )
    with_floor(seq)
    conc = comparison("ratelimit", f"{algorithm} check, 50 concurrent tasks")(
        lambda ctx: _concurrent(ctx.n(10000), _redkit_check(ctx, algorithm))
    )
    if HAVE_LIMITS:
        conc.peers["limits"] = lambda ctx: _limits_side(
            ctx, algorithm, lambda check: _concurrent(ctx.n(10000), check)
        )


for _algorithm in PAIRS:
    _register(_algorithm)


@comparison("ratelimit", "gcra check, 50 concurrent tasks (no peer has GCRA)")
async def gcra_concurrent(ctx: Context) -> float:
    return await _concurrent(ctx.n(10000), _redkit_check(ctx, "gcra"))


async def _calls(ctx: Context) -> dict[str, int]:
    info: dict[str, Any] = await ctx.rk.redis.info("commandstats")
    return {name: int(stats["calls"]) for name, stats in info.items()}


@comparison(
    "ratelimit", "round trips per check (all 4 algorithms)", unit="rt", higher_is_better=False
)
async def round_trips(ctx: Context) -> float:
    n = ctx.n(500)
    checks = [
        _redkit_check(ctx, a) for a in ("fixed_window", "sliding_window", "sliding_log", "gcra")
    ]
    for check in checks:
        await check()  # load the script first
    before = await _calls(ctx)
    for check in checks:
        for _ in range(n):
            await check()
    after = await _calls(ctx)
    top_level = sum(
        after.get(name, 0) - before.get(name, 0) for name in ("cmdstat_evalsha", "cmdstat_eval")
    )
    # The INFO call itself is not counted: it runs after the second snapshot is taken.
    verify(top_level >= len(checks) * n, "fewer script calls than checks")
    return top_level / (len(checks) * n)
