"""Cache hits: through the decorator, and through the HTTP middleware.

redkit's hit is one round trip carrying ``GET`` + ``TIME`` (freshness and XFetch decided on
the server's clock; ``get.lua`` runs only for a miss, a stale value or an early refresh).
The peer is cashews with its Redis backend on the same server: ``@cache(ttl=...)`` on the
function (its default setup), and for HTTP, a Starlette endpoint decorated with ``@cache``
(cashews' way of caching responses), alone and with cashews' FastAPI middlewares for ETag and
Cache-Control (the documented setup that gives the HTTP behaviour redkit's middleware has).
Both HTTP sides are driven by calling the ASGI app directly, so the figure is the cache and
the framework, not an HTTP client.

Each side checks its work: every call returned the cached value, the function or endpoint ran
once (the warm-up), and for redkit ``INFO commandstats`` shows one ``GET`` and no script per
hit, the pipeline counted one round trip per hit, and the cache's own stats count every hit.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.cluster import RedisCluster
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.floor import with_floor
from bench.harness import Context, comparison, timed, verify
from redkit.cache.middleware import CacheMiddleware, CacheRule

VALUE = {"id": 42, "name": "Project Example", "owner": "alice", "tags": ["a", "b", "c"]}
TASKS = 50


async def _commands(ctx: Context) -> Counter[str] | None:
    if isinstance(ctx.rk.redis, RedisCluster):
        return None
    info: dict[str, Any] = await ctx.rk.redis.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in info.items()})


async def _one_round_trip_each(
    ctx: Context, hits: int, run: Callable[[], Awaitable[float]]
) -> float:
    # On a fresh server the warm-up's scripts are sent with EVAL, and the server may count
    # their inner commands a moment later: let that settle before the first snapshot.
    await asyncio.sleep(0.05)
    before = await _commands(ctx)
    pipeline = ctx.rk.pipeline
    trips = pipeline.round_trips if pipeline is not None else 0
    rate = await run()
    after = await _commands(ctx)
    if before is not None and after is not None and pipeline is not None:
        after.subtract(before)
        verify(after["get"] == hits, f"{after['get']} GET for {hits} hits")
        verify(after["evalsha"] + after["eval"] == 0, "scripts ran for hits")
        trips = pipeline.round_trips - trips
        verify(trips <= hits, f"{trips} round trips for {hits} hits")
    return rate


async def _concurrently(n: int, op: Callable[[int], Awaitable[Any]]) -> tuple[float, int]:
    per_task = max(1, n // TASKS)
    loop = asyncio.get_running_loop()

    async def worker(i: int) -> None:
        for _ in range(per_task):
            await op(i)

    began = loop.time()
    await asyncio.gather(*(worker(i) for i in range(TASKS)))
    return per_task * TASKS / (loop.time() - began), per_task * TASKS


# -- the decorator ------------------------------------------------------------------------


async def _redkit_decorator(ctx: Context, concurrent: bool) -> float:
    cache = ctx.rk.cache(name="bench", beta=0)
    await cache.reset_stats()
    runs = 0
    good = 0

    await cache.invalidate("bench")  # earlier runs' entries

    @cache.cached(ttl=600, tags=["bench"])
    async def project(project_id: int) -> dict[str, Any]:
        nonlocal runs
        runs += 1
        return {**VALUE, "id": project_id}

    ids = range(TASKS if concurrent else 1)
    for i in ids:
        await project(i)  # warm-up: the one miss per key

    async def op(i: int = 0) -> None:
        nonlocal good
        value = await project(i)  # awaited first: `good += await ...` loses updates
        good += value["id"] == i

    n = ctx.n(5000)
    if concurrent:
        result: list[tuple[float, int]] = []

        async def run() -> float:
            result.append(await _concurrently(n, op))
            return result[0][0]

        rate = await _one_round_trip_each(ctx, (n // TASKS) * TASKS, run)
        n = result[0][1]
    else:
        rate = await _one_round_trip_each(ctx, n, lambda: timed(n, op))
    stats = await cache.stats()
    verify(good == n, f"{good} of {n} hits returned the value")
    verify(runs == len(ids), f"the function ran {runs} times, expected {len(ids)}")
    verify(stats.hits == n, f"the cache counted {stats.hits} hits for {n}")
    return rate


def _cashews(ctx: Context) -> Any:
    from cashews import Cache

    peer = Cache()
    peer.setup(ctx.url)
    return peer


async def _cashews_decorator(ctx: Context, concurrent: bool) -> float:
    peer = _cashews(ctx)
    runs = 0
    good = 0

    @peer(ttl="10m")  # type: ignore[untyped-decorator]
    async def project(project_id: int) -> dict[str, Any]:
        nonlocal runs
        runs += 1
        return {**VALUE, "id": project_id}

    ids = range(TASKS if concurrent else 1)
    for i in ids:
        await project(i)

    async def op(i: int = 0) -> None:
        nonlocal good
        value = await project(i)  # awaited first: `good += await ...` loses updates
        good += value["id"] == i

    n = ctx.n(5000)
    try:
        if concurrent:
            rate, n = await _concurrently(n, op)
        else:
            rate = await timed(n, op)
    finally:
        await peer.clear()
        await peer.close()
    verify(good == n, f"{good} of {n} cashews hits returned the value")
    verify(runs == len(ids), f"the function ran {runs} times under cashews")
    return rate


@comparison("cache", "decorator hit, sequential", unit="calls/s")
async def decorator_sequential(ctx: Context) -> float:
    return await _redkit_decorator(ctx, concurrent=False)


@comparison("cache", "decorator hit, 50 concurrent tasks", unit="calls/s")
async def decorator_concurrent(ctx: Context) -> float:
    return await _redkit_decorator(ctx, concurrent=True)


async def _cashews_decorator_sequential(ctx: Context) -> float:
    return await _cashews_decorator(ctx, concurrent=False)


async def _cashews_decorator_concurrent(ctx: Context) -> float:
    return await _cashews_decorator(ctx, concurrent=True)


decorator_sequential.peers["cashews"] = _cashews_decorator_sequential
with_floor(decorator_sequential)
decorator_concurrent.peers["cashews"] = _cashews_decorator_concurrent


# -- the middleware -----------------------------------------------------------------------


class _Driver:
    """Calls an ASGI app the way a server would, for one GET, and checks the reply."""

    def __init__(self, app: Any, path: str) -> None:
        self.app = app
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"b=2&a=1",
            "root_path": "",
            "headers": [(b"host", b"bench"), (b"accept", b"application/json")],
            "server": ("bench", 80),
            "client": ("127.0.0.1", 5000),
        }
        self.good = 0

    async def get(self) -> None:
        status = 0
        body = b""

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, body
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body += message.get("body", b"")

        await self.app(dict(self.scope), receive, send)
        self.good += status == 200 and b'"Project Example"' in body


async def _redkit_middleware(ctx: Context) -> float:
    cache = ctx.rk.cache(name="benchhttp", beta=0)
    await cache.reset_stats()
    runs = 0

    async def project(request: Request) -> Response:
        nonlocal runs
        runs += 1
        return JSONResponse(VALUE)

    app = Starlette(routes=[Route("/projects/{pid}", project)])
    rules = [CacheRule("/projects/{pid}", ttl=600, tags=["project:{pid}"])]
    driver = _Driver(CacheMiddleware(app, cache=cache, rules=rules), "/projects/42")
    await cache.invalidate("project:42")  # earlier runs' entry
    await driver.get()
    n = ctx.n(3000)
    rate = await _one_round_trip_each(ctx, n, lambda: timed(n, driver.get))
    stats = await cache.stats()
    verify(driver.good == n + 1, f"{driver.good - 1} of {n} responses were right")
    verify(runs == 1, f"the endpoint ran {runs} times")
    verify(stats.hits == n, f"the cache counted {stats.hits} hits for {n}")
    return rate


async def _cashews_endpoint(ctx: Context, with_middlewares: bool) -> float:
    peer = _cashews(ctx)
    runs = 0

    @peer(ttl="10m", key="project:{pid}")  # type: ignore[untyped-decorator]
    async def load(pid: str) -> dict[str, Any]:
        nonlocal runs
        runs += 1
        return VALUE

    async def project(request: Request) -> Response:
        return JSONResponse(await load(request.path_params["pid"]))

    app: Any = Starlette(routes=[Route("/projects/{pid}", project)])
    if with_middlewares:
        from cashews.contrib.fastapi import CacheEtagMiddleware, CacheRequestControlMiddleware

        app = CacheEtagMiddleware(CacheRequestControlMiddleware(app, peer), peer)
    driver = _Driver(app, "/projects/42")
    await driver.get()
    n = ctx.n(3000)
    try:
        rate = await timed(n, driver.get)
    finally:
        await peer.clear()
        await peer.close()
    verify(driver.good == n + 1, f"{driver.good - 1} of {n} cashews responses were right")
    verify(runs == 1, f"the endpoint's loader ran {runs} times under cashews")
    return rate


@comparison("cache", "HTTP middleware hit, sequential", unit="requests/s")
async def middleware_sequential(ctx: Context) -> float:
    return await _redkit_middleware(ctx)


async def _cashews_endpoint_plain(ctx: Context) -> float:
    return await _cashews_endpoint(ctx, with_middlewares=False)


async def _cashews_endpoint_middlewares(ctx: Context) -> float:
    return await _cashews_endpoint(ctx, with_middlewares=True)


middleware_sequential.peers["cashews @cache endpoint"] = _cashews_endpoint_plain
middleware_sequential.peers["cashews + ETag/Cache-Control middlewares"] = (
    _cashews_endpoint_middlewares
)
