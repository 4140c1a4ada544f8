"""Notifications: redkit's bus against broadcaster (Redis pub/sub and Redis Streams backends).

- **publish**: sequential publishes, one round trip each. redkit's publish is one script that
  appends to the channel's history stream (trimmed) *and* publishes live; broadcaster's
  ``redis://`` backend only PUBLISHes (no history), its ``redis-stream://`` backend only
  XADDs (no trimming, no live fan-out: subscribers poll with XREAD).
- **publish + deliver**: sequential publishes to a channel with one subscriber in the same
  process; the figure is events per second until the subscriber has received the last one
  (checked: all of them, in order).
- **publish + deliver, 50 concurrent publishers**: the same with 50 tasks publishing at once
  (as a web app's request handlers do); each side keeps its own client's defaults (redkit's
  automatic pipelining lets the calls share round trips; broadcaster's pool gives each its own
  connection). Checked: every event once, each publisher's events in its order.
- **fan-out latency**: 1,000 local subscribers of one channel in one process; each event is
  published once the previous one reached everybody; latency is from just before the
  publish call to each subscriber holding the event; p50 and p99 over all (event,
  subscriber) pairs. broadcaster fans out with one asyncio.Queue per subscriber, likewise.
- **SSE fan-out**: the same, to SSE clients of redkit's Starlette route served by uvicorn in
  this process (clients are raw sockets in the same process, so the client side costs as
  little as possible; the machine has 2 cores). No peer: broadcaster has no SSE endpoint.
Peers that are not installed are skipped.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import importlib.util
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.harness import Context, Runner, comparison, verify

SUBSCRIBERS = 1000
SSE_CLIENTS = 1000
FANOUT_EVENTS = 30


def _channel(side: str) -> str:
    return f"bench-{side}-{secrets.token_hex(4)}"


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- publish ---------------------------------------------------------------------------------


@comparison("notify", "publish (history + live, one round trip)", unit="publishes/s")
async def publish(ctx: Context) -> float:
    n = ctx.n(3000)
    bus = ctx.rk.notifications(history=100)
    channel = _channel("redkit")
    began = time.perf_counter()
    for i in range(n):
        await bus.publish(channel, {"n": i})
    rate = n / (time.perf_counter() - began)
    kept = await bus.history(channel)
    verify(len(kept) == 100 and kept[-1].data == {"n": n - 1}, "redkit history is wrong")
    return rate


def _broadcaster(url: str) -> Any:
    module: Any = importlib.import_module("broadcaster")
    return module.Broadcast(url)


def _kick(broadcast: Any) -> None:
    """Work around a race in broadcaster 0.3's ``redis://`` backend with redis-py >= 8.

    Its listener task wakes when ``subscribe()`` starts, calls ``pubsub.listen()`` before
    redis-py has recorded the subscription, sees none, and waits for the next subscribe
    forever: no event is ever delivered. Waking it again after subscribing lets it listen.
    """
    ready = getattr(broadcast._backend, "_ready", None)
    if ready is not None:
        ready.set()


async def _publish_broadcaster(ctx: Context, url: str) -> float:
    n = ctx.n(3000)
    channel = _channel("broadcaster")
    async with _broadcaster(url) as broadcast:
        began = time.perf_counter()
        for i in range(n):
            await broadcast.publish(channel=channel, message=str(i))
        return n / (time.perf_counter() - began)


# -- publish + deliver -----------------------------------------------------------------------


@comparison("notify", "publish + deliver to a subscriber", unit="events/s")
async def publish_deliver(ctx: Context) -> float:
    n = ctx.n(3000)
    bus = ctx.rk.notifications(history=100)
    channel = _channel("redkit")
    async with bus.subscribe(channel) as sub:

        async def consume() -> list[Any]:
            return [(await sub.get(timeout=30)).data for _ in range(n)]  # type: ignore[union-attr]

        began = time.perf_counter()
        consumer = asyncio.create_task(consume())
        for i in range(n):
            await bus.publish(channel, i)
        received = await consumer
        rate = n / (time.perf_counter() - began)
    verify(received == list(range(n)), "redkit lost or reordered events")
    return rate


async def _publish_deliver_broadcaster(ctx: Context, url: str) -> float:
    n = ctx.n(3000)
    channel = _channel("broadcaster")
    async with _broadcaster(url) as broadcast, broadcast.subscribe(channel=channel) as subscriber:
        # broadcaster's subscribe returns before Redis confirms it (or, for streams, before
        # the reader starts): give it time so that no event is lost to the race.
        await asyncio.sleep(0.2)
        _kick(broadcast)

        async def consume() -> list[str]:
            out = []
            for _ in range(n):
                async with asyncio.timeout(30):
                    out.append((await subscriber.get()).message)
            return out

        began = time.perf_counter()
        consumer = asyncio.create_task(consume())
        for i in range(n):
            await broadcast.publish(channel=channel, message=str(i))
        received = await consumer
        rate = n / (time.perf_counter() - began)
    verify(received == [str(i) for i in range(n)], "broadcaster lost or reordered events")
    return rate


# -- fan-out latency to 1,000 local subscribers ---------------------------------------------


async def _fanout(
    publish_one: Callable[[int], Awaitable[Any]],
    receivers: list[Callable[[], Awaitable[Any]]],
    events: int,
) -> list[float]:
    """Latencies (ms) of each (event, receiver) pair; events go one at a time."""
    latencies: list[float] = []
    gc.collect()  # whatever ran before leaves its garbage here, not in the latencies

    async def receive(get: Callable[[], Awaitable[Any]]) -> float:
        await get()
        return time.perf_counter()

    for i in range(events):
        waiting = [asyncio.create_task(receive(get)) for get in receivers]
        await asyncio.sleep(0)  # every receiver is waiting before the publish
        began = time.perf_counter()
        await publish_one(i)
        async with asyncio.timeout(30):
            done = await asyncio.gather(*waiting)
        latencies.extend((t - began) * 1000 for t in done)
    verify(len(latencies) == events * len(receivers), "an event missed a subscriber")
    return latencies


def _getter(sub: Any) -> Callable[[], Awaitable[Any]]:
    # No timeout per get, as broadcaster's side has none: _fanout bounds each round.
    return sub.get  # type: ignore[no-any-return]


async def _fanout_redkit(ctx: Context) -> list[float]:
    bus = ctx.rk.notifications()
    channel = _channel("redkit")
    subs = [bus.subscribe(channel) for _ in range(SUBSCRIBERS)]
    for sub in subs:
        await sub.__aenter__()
    try:
        receivers = [_getter(sub) for sub in subs]
        return await _fanout(lambda i: bus.publish(channel, i), receivers, FANOUT_EVENTS)
    finally:
        for sub in subs:
            await sub.aclose()


async def _fanout_broadcaster(ctx: Context) -> list[float]:
    channel = _channel("broadcaster")
    async with _broadcaster(ctx.url) as broadcast:
        stack = []
        subscribers = []
        for _ in range(SUBSCRIBERS):
            manager = broadcast.subscribe(channel=channel)
            subscribers.append(await manager.__aenter__())
            stack.append(manager)
        await asyncio.sleep(0.2)
        _kick(broadcast)
        try:
            receivers = [sub.get for sub in subscribers]
            return await _fanout(
                lambda i: broadcast.publish(channel=channel, message=str(i)),
                receivers,
                FANOUT_EVENTS,
            )
        finally:
            for manager in reversed(stack):
                await manager.__aexit__(None, None, None)


def _fanout_figure(q: float, side: Callable[[Context], Awaitable[list[float]]]) -> Runner:
    async def run(ctx: Context) -> float:
        return _percentile(await side(ctx), q)

    return run


fanout_p50 = comparison(
    "notify",
    f"fan-out to {SUBSCRIBERS:,} local subscribers, p50 latency",
    unit="ms",
    higher_is_better=False,
)(_fanout_figure(0.5, _fanout_redkit))
fanout_p99 = comparison(
    "notify",
    f"fan-out to {SUBSCRIBERS:,} local subscribers, p99 latency",
    unit="ms",
    higher_is_better=False,
)(_fanout_figure(0.99, _fanout_redkit))


# -- fan-out to SSE clients over HTTP --------------------------------------------------------


async def _sse_latencies(ctx: Context) -> list[float]:
    import uvicorn
    from starlette.applications import Starlette

    from redkit.embedded import find_free_port
    from redkit.notify.web import allow_all, notification_routes

    bus = ctx.rk.notifications()
    channel = _channel("sse")
    app = Starlette(routes=notification_routes(bus, authorize=allow_all, heartbeat=60))
    port = find_free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="error",
        lifespan="off",
        backlog=4096,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn only offers a flag)
        await asyncio.sleep(0.01)
    request = (
        f"GET /events?channel={channel} HTTP/1.1\r\nHost: bench\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    clients: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(SSE_CLIENTS):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            clients.append((reader, writer))
        for reader, _ in clients:  # headers, then the retry: line (subscribed from then on)
            async with asyncio.timeout(30):
                await reader.readuntil(b"retry:")
                await reader.readuntil(b"\n\n")

        def receiver(reader: asyncio.StreamReader) -> Callable[[], Awaitable[Any]]:
            async def get() -> bytes:
                return await reader.readuntil(b"\n\n")

            return get

        receivers = [receiver(reader) for reader, _ in clients]
        return await _fanout(lambda i: bus.publish(channel, i), receivers, FANOUT_EVENTS // 3)
    finally:
        for _, writer in clients:
            writer.close()
        server.should_exit = True
        await serving


sse_p50 = comparison(
    "notify",
    f"SSE fan-out to {SSE_CLIENTS:,} HTTP clients, p50 latency",
    unit="ms",
    higher_is_better=False,
)(_fanout_figure(0.5, _sse_latencies))
sse_p99 = comparison(
    "notify",
    f"SSE fan-out to {SSE_CLIENTS:,} HTTP clients, p99 latency",
    unit="ms",
    higher_is_better=False,
)(_fanout_figure(0.99, _sse_latencies))


# -- publish + deliver with concurrent publishers -------------------------------------------
# Registered last: its 10,000 events per side leave garbage that must not land in the
# latency figures above.

PUBLISHERS = 50


def _split(n: int) -> list[range]:
    """``range(n)`` dealt to PUBLISHERS tasks: task k publishes k, k + 50, k + 100, ..."""
    return [range(k, n, PUBLISHERS) for k in range(PUBLISHERS)]


def _in_order_per_publisher(received: list[int], n: int) -> bool:
    """All of ``range(n)``, once each, and each publisher's events in the order it sent them."""
    if sorted(received) != list(range(n)):
        return False
    last = [-1] * PUBLISHERS
    for value in received:
        if value <= last[value % PUBLISHERS]:
            return False
        last[value % PUBLISHERS] = value
    return True


@comparison(
    "notify",
    f"publish + deliver to a subscriber, {PUBLISHERS} concurrent publishers",
    unit="events/s",
)
async def publish_deliver_concurrent(ctx: Context) -> float:
    n = ctx.n(10000)
    bus = ctx.rk.notifications(history=100)
    channel = _channel("redkit")
    async with bus.subscribe(channel) as sub:

        async def consume() -> list[Any]:
            return [(await sub.get(timeout=30)).data for _ in range(n)]  # type: ignore[union-attr]

        async def publisher(values: range) -> None:
            for i in values:
                await bus.publish(channel, i)

        began = time.perf_counter()
        consumer = asyncio.create_task(consume())
        await asyncio.gather(*(publisher(values) for values in _split(n)))
        received = await consumer
        rate = n / (time.perf_counter() - began)
    verify(_in_order_per_publisher(received, n), "redkit lost, doubled or reordered events")
    kept = await bus.history(channel)
    verify(len(kept) == 100, "redkit history is wrong")
    return rate


async def _publish_deliver_concurrent_broadcaster(ctx: Context, url: str) -> float:
    n = ctx.n(10000)
    channel = _channel("broadcaster")
    async with _broadcaster(url) as broadcast, broadcast.subscribe(channel=channel) as subscriber:
        await asyncio.sleep(0.2)  # as in _publish_deliver_broadcaster
        _kick(broadcast)

        async def consume() -> list[int]:
            out = []
            for _ in range(n):
                async with asyncio.timeout(30):
                    out.append(int((await subscriber.get()).message))
            return out

        async def publisher(values: range) -> None:
            for i in values:
                await broadcast.publish(channel=channel, message=str(i))

        began = time.perf_counter()
        consumer = asyncio.create_task(consume())
        await asyncio.gather(*(publisher(values) for values in _split(n)))
        received = await consumer
        rate = n / (time.perf_counter() - began)
    verify(_in_order_per_publisher(received, n), "broadcaster lost, doubled or reordered events")
    return rate


def _peer(
    side: Callable[[Context, str], Awaitable[float]], backend: str
) -> Callable[[Context], Awaitable[float]]:
    async def run(ctx: Context) -> float:
        return await side(ctx, ctx.url.replace("redis", backend, 1))

    return run


if _has("broadcaster"):
    for _backend in ("redis", "redis-stream"):
        publish.peers[f"broadcaster {_backend}"] = _peer(_publish_broadcaster, _backend)
        publish_deliver.peers[f"broadcaster {_backend}"] = _peer(
            _publish_deliver_broadcaster, _backend
        )
        publish_deliver_concurrent.peers[f"broadcaster {_backend}"] = _peer(
            _publish_deliver_concurrent_broadcaster, _backend
        )
    fanout_p50.peers["broadcaster redis"] = _fanout_figure(0.5, _fanout_broadcaster)
    fanout_p99.peers["broadcaster redis"] = _fanout_figure(0.99, _fanout_broadcaster)

__all__ = [
    "fanout_p50",
    "fanout_p99",
    "publish",
    "publish_deliver",
    "publish_deliver_concurrent",
    "sse_p50",
    "sse_p99",
]
