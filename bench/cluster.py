"""Cluster: the concurrent figures on a 3-master Cluster beside the same figures standalone.

A 3-master Cluster (the test suite's: three Valkey servers from the embedded binary, a third
of the slots each, with the embedded server's settings: AOF on) is started on first use, in
this process's run. Each figure is 50
concurrent tasks doing one kind of work, each task on a key of its own (so the work spreads
over the masters as a real service's does), measured three ways in the same run:

- **redkit on the Cluster** (the figure): automatic pipelining per node, kept connections;
- **redkit standalone** (peer): the same work on the run's standalone server; the ratio is
  Cluster / standalone, the goal being >= 0.8;
- **redis-py RedisCluster** (peer): the same redkit calls through redis-py's own Cluster
  client (``RedisCluster``, default pool), each call on its own, as redkit did before it
  pipelined on a Cluster.

When the bench pins the standalone server to a CPU of its own, the Cluster's three servers
get that same CPU: the same hardware for both.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from redis.asyncio.cluster import ClusterNode, RedisCluster

import redkit
from bench.harness import Context, comparison, verify
from redkit.client import Redkit
from redkit.embedded import EmbeddedValkey
from redkit.settings import Settings

_TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(_TESTS) not in sys.path:
    sys.path.append(str(_TESTS))
from servers import Cluster  # noqa: E402 (the suite's Cluster, from the test helpers)

TASKS = 50
BIG = 10**9  # every check is allowed


class _Sides:
    """The Cluster and the two clients of it, made once per run (bounded: one of each)."""

    def __init__(self) -> None:
        self.cluster: Cluster | None = None
        self.pipelined: Redkit | None = None
        self.plain: Redkit | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    async def get(self) -> tuple[Redkit, Redkit]:
        if self.pipelined is None or self.plain is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="redkit-bench-cluster-")
            # The embedded server's settings (AOF on, fsync every second), as the
            # standalone side runs with.
            cluster = Cluster(Path(self._tmp.name), config=EmbeddedValkey.DEFAULT_CONFIG)
            self.cluster = await asyncio.to_thread(cluster.start)
            atexit.register(self.stop)
            _share_the_servers_cpu(self.cluster)
            self.pipelined = await redkit.connect(self.cluster.url, "bench")
            self.plain = await _redis_py_cluster(self.cluster)
        return self.pipelined, self.plain

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


SIDES = _Sides()


def _share_the_servers_cpu(cluster: Cluster) -> None:
    """Put the Cluster's servers on the CPU(s) this process was kept off (the standalone
    server's, when the bench pinned it); leave them alone otherwise."""
    count = os.cpu_count() or 1
    server_cpus = set(range(count)) - os.sched_getaffinity(0)
    if not server_cpus:
        return
    try:
        for node in cluster.nodes:
            for tid in os.listdir(f"/proc/{node.pid}/task"):
                os.sched_setaffinity(int(tid), server_cpus)
    except OSError:
        pass  # not Linux, or not allowed: the figures are then unpinned on both sides


async def _redis_py_cluster(cluster: Cluster) -> Redkit:
    """redkit's primitives over a plain redis-py ``RedisCluster``: every call on its own."""
    client = RedisCluster(startup_nodes=[ClusterNode(n.host, n.port) for n in cluster.nodes])
    settings = Settings(redis_url=cluster.url, namespace="bench", auto_pipeline=False)
    rk = Redkit(client, mode="cluster", url=cluster.url, settings=settings)
    await rk._check_server()
    return rk


async def _spread(n: int, work: Callable[[int], Awaitable[int]]) -> float:
    """``TASKS`` tasks, task ``k`` doing ``work(k)`` n / TASKS times; ops per second. Each
    ``work`` returns 1 when the operation did what it should (checked: all of them)."""
    per_task = max(1, n // TASKS)

    async def task(k: int) -> int:
        return sum([await work(k) for _ in range(per_task)])

    began = time.perf_counter()
    done = sum(await asyncio.gather(*(task(k) for k in range(TASKS))))
    rate = TASKS * per_task / (time.perf_counter() - began)
    verify(done == TASKS * per_task, f"only {done} of {TASKS * per_task} operations did their work")
    return rate


# -- the work, the same on every side ----------------------------------------------------------


async def _ratelimit(rk: Redkit, n: int) -> float:
    limiter = rk.rate_limiter(BIG, 3600, "sliding_window", timeout=30)
    base = "bench:" + secrets.token_hex(4)

    async def work(k: int) -> int:
        return int((await limiter.hit(f"{base}:{k}")).allowed)

    return await _spread(n, work)


async def _cache_hits(rk: Redkit, n: int) -> float:
    cache = rk.cache(default_ttl=600)
    base = "bench:" + secrets.token_hex(4)
    for k in range(TASKS):
        await cache.set(f"{base}:{k}", k)

    async def work(k: int) -> int:
        return int(await cache.get(f"{base}:{k}") == k)

    return await _spread(n, work)


async def _session_reads(rk: Redkit, n: int) -> float:
    store = rk.sessions()
    sessions = [await store.create(f"user{k}", {"k": k}) for k in range(TASKS)]

    async def work(k: int) -> int:
        session = await store.get(sessions[k].id)
        return int(session is not None and session.data == {"k": k})

    rate = await _spread(n, work)
    for session in sessions:
        await store.revoke(session.id)
    return rate


async def _enqueue(rk: Redkit, n: int) -> float:
    # One queue per task: queues spread over the masters, as a service's queues do.
    base = "bench-" + secrets.token_hex(4)
    queues = [rk.queue(f"{base}-{k}") for k in range(TASKS)]

    async def work(k: int) -> int:
        await queues[k].enqueue("noop", {"k": k})
        return 1

    rate = await _spread(n, work)
    per_task = max(1, n // TASKS)
    waiting = sum([(await q.stats()).waiting for q in queues])
    verify(waiting == TASKS * per_task, f"{waiting} jobs waiting, {TASKS * per_task} enqueued")
    await _drop(rk, base)
    return rate


async def _drop(rk: Redkit, base: str) -> None:
    """Delete the keys whose name holds ``base`` (a run's queues), so runs do not pile up."""
    doomed = [
        key
        async for key in rk.redis.scan_iter(match=rk.keys.pattern, count=1000)
        if base in (key.decode() if isinstance(key, bytes) else str(key))
    ]
    for key in doomed:
        await rk.redis.unlink(key)


async def _publish_deliver(rk: Redkit, n: int) -> float:
    """TASKS publishers on a channel each, one subscriber of every channel; the rate counts
    until the subscriber holds the last event (checked: every event once, in order per
    channel)."""
    bus = rk.notifications(history=100)
    base = "bench-" + secrets.token_hex(4)
    channels = [f"{base}-{k}" for k in range(TASKS)]
    per_task = max(1, n // TASKS)
    total = TASKS * per_task
    async with bus.subscribe(*channels) as sub:

        async def consume() -> dict[str, list[int]]:
            got: dict[str, list[int]] = {c: [] for c in channels}
            for _ in range(total):
                event = await sub.get(timeout=30)
                assert event is not None
                got[event.channel].append(int(event.data))
            return got

        async def publisher(k: int) -> None:
            for i in range(per_task):
                await bus.publish(channels[k], i)

        began = time.perf_counter()
        consumer = asyncio.create_task(consume())
        await asyncio.gather(*(publisher(k) for k in range(TASKS)))
        received = await consumer
        rate = total / (time.perf_counter() - began)
    verify(
        all(values == list(range(per_task)) for values in received.values()),
        "events lost, doubled or reordered",
    )
    return rate


# -- the figures ---------------------------------------------------------------------------------

Work = Callable[[Redkit, int], Awaitable[float]]
FIGURES: list[tuple[str, Work, int]] = [
    ("rate-limit checks (sliding_window)", _ratelimit, 10000),
    ("cache hits", _cache_hits, 10000),
    ("session reads", _session_reads, 10000),
    ("enqueue", _enqueue, 5000),
    ("publish + deliver", _publish_deliver, 5000),
]


def _register(name: str, work: Work, base: int) -> None:
    async def on_cluster(ctx: Context) -> float:
        pipelined, _plain = await SIDES.get()
        return await work(pipelined, ctx.n(base))

    async def standalone(ctx: Context) -> float:
        return await work(ctx.rk, ctx.n(base))

    async def redis_py(ctx: Context) -> float:
        _pipelined, plain = await SIDES.get()
        return await work(plain, ctx.n(base))

    comp = comparison(
        "cluster",
        f"{name}, {TASKS} concurrent tasks, 3-master Cluster",
        note="peer 'redkit standalone': ratio = Cluster / standalone (goal >= 0.8)",
    )(on_cluster)
    comp.peers["redkit standalone"] = standalone
    comp.peers["redis-py RedisCluster"] = redis_py


for _name, _work, _base in FIGURES:
    _register(_name, _work, _base)
