"""Jobs with one round trip: each job does real I/O of its own, as jobs in production do.

Every job, on every side, sends one pipelined ``SET``/``SET``/``INCR``/``SETBIT`` through a
Redis client of its own (not the queue's connection: redis-py's asyncio client for the async
workers, its sync client for the thread workers, ioredis for BullMQ). ``PROCESS`` jobs are
queued first, then ONE worker runs them all; the rate is jobs / wall time from the worker's
start to the last job's completion. Afterwards each side checks that every job ran exactly
once: the counter equals the number of jobs, and the bitmap of job indexes has exactly that
many bits set (a job run twice would push the counter past it; one never run leaves a bit
clear).

Sides: redkit's worker; BullMQ on Node (``bench/node/``, installed by ``make bench`` when
``node`` is on the machine, skipped otherwise); arq, SAQ and taskiq (async, in this process);
dramatiq and huey (threads, in this process); RQ's SimpleWorker (one job at a time, in a
thread). The async figures run at the worker default concurrency (10) and at 50; the sync
figure compares redkit running a plain ``def`` in its thread pool with dramatiq's and huey's
thread workers.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis
from rich.console import Console

from bench.harness import Comparison, Context, Runner, comparison, verify
from redkit.jobs import JobSpec, Worker, list_workers

PROCESS = 3000
console = Console(stderr=True)
DEFAULT = 10
"""redkit's Worker default concurrency (and the issue's figure)."""
HIGH = 50
NODE_DIR = Path(__file__).resolve().parent / "node"


def _name(side: str) -> str:
    return f"bench-rt-{side}-{secrets.token_hex(4)}"


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _host_port(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[1].rsplit("/", 1)[0]
    host, _, port = rest.rpartition(":")
    return host, int(port)


class _Keys:
    """One side's keys: two scratch strings (100 of each, so memory stays flat), the counter
    and the bitmap of job indexes."""

    def __init__(self, side: str) -> None:
        self.base = _name(side)
        self.counter = f"{self.base}:count"
        self.bitmap = f"{self.base}:bits"

    async def round_trip(self, client: AsyncRedis, i: int) -> None:
        async with client.pipeline(transaction=False) as pipe:
            pipe.set(f"{self.base}:a:{i % 100}", "x")
            pipe.set(f"{self.base}:b:{i % 100}", "y")
            pipe.incr(self.counter)
            pipe.setbit(self.bitmap, i, 1)
            await pipe.execute()

    def round_trip_sync(self, client: redis.Redis, i: int) -> None:
        pipe = client.pipeline(transaction=False)
        pipe.set(f"{self.base}:a:{i % 100}", "x")
        pipe.set(f"{self.base}:b:{i % 100}", "y")
        pipe.incr(self.counter)
        pipe.setbit(self.bitmap, i, 1)
        pipe.execute()

    async def ran_once(self, client: AsyncRedis, n: int) -> tuple[int, int]:
        """The counter and the bitmap's population (and the keys' removal)."""
        count = int(await client.get(self.counter) or 0)
        bits = int(await client.bitcount(self.bitmap))
        await client.delete(
            self.counter,
            self.bitmap,
            *(f"{self.base}:{s}:{i}" for s in "ab" for i in range(100)),
        )
        return count, bits


async def _check(ctx: Context, keys: _Keys, n: int, side: str, *, repeats_ok: bool = False) -> None:
    """Every job ran exactly once. ``repeats_ok``: a peer that promises at-least-once only
    (SAQ, which now and then runs a job twice in these runs) passes with every job run, and
    its repeats are reported."""
    client = AsyncRedis.from_url(ctx.url)
    try:
        count, bits = await keys.ran_once(client, n)
    finally:
        await client.aclose()
    message = f"{side}: {n} jobs, but the counter says {count} runs and {bits} distinct jobs ran"
    if repeats_ok and bits == n and count > n:
        console.print(f"[yellow]{message}: some ran more than once[/yellow]", highlight=False)
        return
    verify(count == n and bits == n, message)


# -- redkit ------------------------------------------------------------------------------------


async def _redkit(ctx: Context, concurrency: int, sync: bool = False) -> float:
    n = ctx.n(PROCESS)
    keys = _Keys("redkit")
    q = ctx.rk.queue(_name("redkit"))
    await q.enqueue_many([JobSpec("rt", i) for i in range(n)])
    client = AsyncRedis.from_url(ctx.url)
    sync_client = redis.Redis.from_url(ctx.url, max_connections=concurrency)

    async def rt(i: int) -> None:
        await keys.round_trip(client, i)

    def rt_sync(i: int) -> None:
        keys.round_trip_sync(sync_client, i)

    fn: Callable[[int], Any] = rt_sync if sync else rt
    worker = Worker(
        ctx.rk, queues=[q], functions={"rt": fn}, concurrency=concurrency, handle_signals=False
    )
    try:
        began = time.perf_counter()
        task = asyncio.create_task(worker.run())
        while worker.stats.completed < n:  # noqa: ASYNC110 (polling costs < 1% here)
            await asyncio.sleep(0.002)
        rate = n / (time.perf_counter() - began)
        worker.stop()
        await task
    finally:
        await client.aclose()
        sync_client.close()
    await _check(ctx, keys, n, "redkit")
    await q.drain()
    return rate


@comparison("jobs", f"jobs with one round trip, one worker (concurrency {DEFAULT})", "jobs/s")
async def roundtrip_default(ctx: Context) -> float:
    return await _redkit(ctx, DEFAULT)


@comparison("jobs", f"jobs with one round trip, one worker (concurrency {HIGH})", "jobs/s")
async def roundtrip_high(ctx: Context) -> float:
    return await _redkit(ctx, HIGH)


@comparison(
    "jobs",
    f"jobs with one round trip, sync def, {DEFAULT} threads",
    "jobs/s",
    note="redkit runs a plain def in its thread pool; peers: their thread workers",
)
async def roundtrip_sync(ctx: Context) -> float:
    return await _redkit(ctx, DEFAULT, sync=True)


# -- redkit, worker processes (the CLI's --processes) -------------------------------------------

PROCESSES = 2


async def _redkit_processes(ctx: Context, processes: int) -> float:
    """``redkit worker --processes N`` started through the CLI; the rate counts from the
    moment the jobs are enqueued (the children are up and listed by then) to the last
    completion, so the interpreters' start-up is not in it."""
    n = ctx.n(PROCESS) * processes
    keys = _Keys(f"redkit-p{processes}")
    name = _name("redkit")
    q = ctx.rk.queue(name)
    argv = [sys.executable, "-m", "redkit.cli", "worker", "bench.roundtrip_tasks:functions"]
    argv += ["--queue", name, "--processes", str(processes), "--concurrency", str(DEFAULT)]
    argv += ["--url", ctx.url, "--namespace", ctx.rk.namespace, "--grace", "5"]
    argv += ["--keep-completed", str(n)]  # completed counts only what is kept
    env = {**os.environ, "REDKIT_BENCH_URL": ctx.url, "PYTHONPATH": str(NODE_DIR.parents[1])}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(600):  # the children list themselves once connected (at most 60 s)
            listed = [w for w in await list_workers(ctx.rk) if name in w.queues]
            if len(listed) == processes:
                break
            await asyncio.sleep(0.1)
        verify(len(listed) == processes, f"redkit: {processes} worker processes did not start")
        began = time.perf_counter()
        await q.enqueue_many([JobSpec("rt", [keys.base, i]) for i in range(n)])
        for _ in range(12_000):  # polling every 10 ms, at most 120 s
            stats = await q.stats()
            if stats.completed >= n:
                break
            await asyncio.sleep(0.01)
        rate = n / (time.perf_counter() - began)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    await _check(ctx, keys, n, f"redkit --processes {processes}")
    await q.drain()
    return rate


@comparison(
    "jobs",
    f"jobs with one round trip, redkit worker --processes {PROCESSES} (concurrency {DEFAULT})",
    "jobs/s",
    note="peer: the same CLI with --processes 1; the server needs a core of its own too",
)
async def roundtrip_processes(ctx: Context) -> float:
    return await _redkit_processes(ctx, PROCESSES)


async def _one_process(ctx: Context) -> float:
    return await _redkit_processes(ctx, 1)


roundtrip_processes.peers["redkit worker --processes 1"] = _one_process


# -- BullMQ on Node ----------------------------------------------------------------------------


def _bullmq_ready() -> bool:
    return shutil.which("node") is not None and (NODE_DIR / "node_modules" / "bullmq").is_dir()


async def _bullmq(ctx: Context, concurrency: int) -> float:
    n = ctx.n(PROCESS)
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "roundtrip.js"),
        ctx.url,
        _name("bullmq"),
        str(n),
        str(concurrency),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    verify(proc.returncode == 0, f"bullmq: node failed: {err.decode()[-500:]}")
    reply = json.loads(out.decode().strip().splitlines()[-1])
    verify(
        reply["count"] == n and reply["bits"] == n,
        f"bullmq: the jobs did not each run exactly once ({reply})",
    )
    return float(reply["rate"])


# -- arq ---------------------------------------------------------------------------------------


async def _arq(ctx: Context, concurrency: int) -> float:
    arq_connections: Any = importlib.import_module("arq.connections")
    arq_worker: Any = importlib.import_module("arq.worker")
    n = ctx.n(PROCESS)
    keys = _Keys("arq")
    host, port = _host_port(ctx.url)
    pool = await arq_connections.create_pool(arq_connections.RedisSettings(host=host, port=port))
    client = AsyncRedis.from_url(ctx.url)
    queue = _name("arq")

    async def rt(job_ctx: Any, i: int) -> None:
        await keys.round_trip(client, i)

    try:
        for start in range(0, n, 100):
            await asyncio.gather(
                *(
                    pool.enqueue_job("rt", i, _queue_name=queue)
                    for i in range(start, min(n, start + 100))
                )
            )
        worker = arq_worker.Worker(
            functions=[arq_worker.func(rt, name="rt")],
            redis_pool=pool,
            queue_name=queue,
            burst=True,
            max_jobs=concurrency,
            handle_signals=False,
            poll_delay=0.01,
            keep_result=0,
        )
        began = time.perf_counter()
        await worker.main()
        rate = n / (time.perf_counter() - began)
        await worker.close()
    finally:
        await pool.aclose()
        await client.aclose()
    await _check(ctx, keys, n, "arq")
    return rate


# -- SAQ ---------------------------------------------------------------------------------------


async def _saq(ctx: Context, concurrency: int) -> float:
    saq: Any = importlib.import_module("saq")
    n = ctx.n(PROCESS)
    keys = _Keys("saq")
    queue = saq.Queue.from_url(ctx.url, name=_name("saq"))
    await queue.connect()
    client = AsyncRedis.from_url(ctx.url)
    done = 0
    all_run = asyncio.Event()

    async def rt(job_ctx: Any, *, i: int) -> None:
        nonlocal done
        await keys.round_trip(client, i)
        done += 1
        if done == n:
            all_run.set()

    try:
        for start in range(0, n, 100):
            await asyncio.gather(
                *(queue.enqueue("rt", i=i) for i in range(start, min(n, start + 100)))
            )
        worker = saq.Worker(
            queue,
            functions=[("rt", rt)],
            concurrency=concurrency,
            burst=True,
            dequeue_timeout=0.05,
        )
        began = time.perf_counter()
        task = asyncio.create_task(worker.start())
        await all_run.wait()
        rate = n / (time.perf_counter() - began)
        try:
            await asyncio.wait_for(task, 10)
        except TimeoutError:
            await worker.stop()
    finally:
        await queue.disconnect()
        await client.aclose()
    await _check(ctx, keys, n, "saq", repeats_ok=True)
    return rate


# -- taskiq ------------------------------------------------------------------------------------


async def _taskiq(ctx: Context, concurrency: int) -> float:
    taskiq_redis: Any = importlib.import_module("taskiq_redis")
    receiver_mod: Any = importlib.import_module("taskiq.receiver")
    n = ctx.n(PROCESS)
    keys = _Keys("taskiq")
    broker = taskiq_redis.ListQueueBroker(ctx.url, queue_name=_name("taskiq"))
    client = AsyncRedis.from_url(ctx.url)
    done = 0
    all_run = asyncio.Event()

    @broker.task(task_name="rt")  # type: ignore[untyped-decorator]
    async def rt(i: int) -> None:
        nonlocal done
        await keys.round_trip(client, i)
        done += 1
        if done == n:
            all_run.set()

    await broker.startup()
    try:
        for start in range(0, n, 100):
            await asyncio.gather(*(rt.kiq(i) for i in range(start, min(n, start + 100))))
        broker.is_worker_process = True
        receiver = receiver_mod.Receiver(broker, max_async_tasks=concurrency, run_startup=False)
        finish = asyncio.Event()
        began = time.perf_counter()
        task = asyncio.create_task(receiver.listen(finish))
        await all_run.wait()
        rate = n / (time.perf_counter() - began)
        finish.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await broker.shutdown()
        await client.aclose()
    await _check(ctx, keys, n, "taskiq")
    return rate


# -- dramatiq (threads) ------------------------------------------------------------------------


def _dramatiq_run(url: str, n: int, threads: int, keys: _Keys) -> float:
    dramatiq: Any = importlib.import_module("dramatiq")
    brokers: Any = importlib.import_module("dramatiq.brokers.redis")
    broker = brokers.RedisBroker(url=url, namespace=_name("dramatiq"))
    client = redis.Redis.from_url(url, max_connections=threads)
    done = 0
    lock = threading.Lock()
    all_run = threading.Event()

    def rt(i: int) -> None:
        nonlocal done
        keys.round_trip_sync(client, i)
        with lock:
            done += 1
            if done == n:
                all_run.set()

    actor = dramatiq.actor(rt, actor_name="rt", broker=broker, max_retries=0)
    for i in range(n):
        actor.send(i)
    worker = dramatiq.Worker(broker, worker_threads=threads)
    began = time.perf_counter()
    worker.start()
    all_run.wait(120)
    rate = n / (time.perf_counter() - began)
    worker.stop()
    broker.flush_all()
    broker.close()
    client.close()
    return rate


async def _dramatiq(ctx: Context, threads: int) -> float:
    n = ctx.n(PROCESS)
    keys = _Keys("dramatiq")
    rate = await asyncio.to_thread(_dramatiq_run, ctx.url, n, threads, keys)
    await _check(ctx, keys, n, "dramatiq")
    return rate


# -- huey (threads) ----------------------------------------------------------------------------


def _huey_run(url: str, n: int, threads: int, keys: _Keys) -> float:
    huey_mod: Any = importlib.import_module("huey")
    host, port = _host_port(url)
    huey = huey_mod.RedisHuey(_name("huey"), host=host, port=port, results=False)
    client = redis.Redis.from_url(url, max_connections=threads)
    done = 0
    lock = threading.Lock()
    all_run = threading.Event()

    def rt(i: int) -> None:
        nonlocal done
        keys.round_trip_sync(client, i)
        with lock:
            done += 1
            if done == n:
                all_run.set()

    task = huey.task(name="rt")(rt)
    for i in range(n):
        task(i)
    consumer = huey.create_consumer(workers=threads, worker_type="thread", initial_delay=0.01)
    consumer._set_signal_handlers = lambda: None  # signals belong to the main thread
    began = time.perf_counter()
    consumer.start()  # its worker threads and scheduler; run() would add a signal loop
    all_run.wait(120)
    rate = n / (time.perf_counter() - began)
    consumer.stop(graceful=True)
    huey.flush()
    client.close()
    return rate


async def _huey(ctx: Context, threads: int) -> float:
    n = ctx.n(PROCESS)
    keys = _Keys("huey")
    rate = await asyncio.to_thread(_huey_run, ctx.url, n, threads, keys)
    await _check(ctx, keys, n, "huey")
    return rate


# -- RQ (sync, one job at a time, in a thread) -------------------------------------------------

_rq_keys: dict[str, _Keys] = {}
_rq_client: dict[str, redis.Redis] = {}


def rq_rt(base: str, i: int) -> None:
    """RQ's job function (RQ imports it by dotted path)."""
    _rq_keys[base].round_trip_sync(_rq_client[base], i)


def _rq_run(url: str, n: int, keys: _Keys) -> float:
    rq: Any = importlib.import_module("rq")
    timeouts: Any = importlib.import_module("rq.timeouts")

    class ThreadWorker(rq.SimpleWorker):  # type: ignore[misc]
        death_penalty_class = timeouts.TimerDeathPenalty

        def _install_signal_handlers(self) -> None:
            return None

    conn = redis.Redis.from_url(url)
    _rq_keys[keys.base] = keys
    _rq_client[keys.base] = redis.Redis.from_url(url)
    queue = rq.Queue(_name("rq"), connection=conn)
    for start in range(0, n, 1000):
        queue.enqueue_many(
            [
                rq.Queue.prepare_data(rq_rt, (keys.base, i), result_ttl=0)
                for i in range(start, min(n, start + 1000))
            ]
        )
    worker = ThreadWorker([queue], connection=conn)
    began = time.perf_counter()
    worker.work(burst=True, logging_level="WARNING")
    rate = n / (time.perf_counter() - began)
    _rq_client.pop(keys.base).close()
    _rq_keys.pop(keys.base)
    conn.close()
    return rate


async def _rq(ctx: Context) -> float:
    n = ctx.n(PROCESS)
    keys = _Keys("rq")
    rate = await asyncio.to_thread(_rq_run, ctx.url, n, keys)
    await _check(ctx, keys, n, "rq")
    return rate


# -- registration ------------------------------------------------------------------------------


def _at(fn: Callable[[Context, int], Any], concurrency: int) -> Runner:
    async def run(ctx: Context) -> float:
        return float(await fn(ctx, concurrency))

    return run


def _peers(comp: Comparison, concurrency: int, *, sync: bool) -> None:
    if _bullmq_ready() and not sync:
        comp.peers["BullMQ (Node)"] = _at(_bullmq, concurrency)
    candidates: list[tuple[str, str, Runner]] = []
    if not sync:
        candidates += [
            ("arq", "arq", _at(_arq, concurrency)),
            ("SAQ", "saq", _at(_saq, concurrency)),
            ("taskiq", "taskiq_redis", _at(_taskiq, concurrency)),
        ]
    candidates += [
        (f"dramatiq ({concurrency} threads)", "dramatiq", _at(_dramatiq, concurrency)),
        (f"huey ({concurrency} threads)", "huey", _at(_huey, concurrency)),
    ]
    if concurrency == DEFAULT:
        candidates.append(("RQ SimpleWorker (thread)", "rq", _rq))
    for peer, module, runner in candidates:
        if _has(module):
            comp.peers[peer] = runner


_peers(roundtrip_default, DEFAULT, sync=False)
_peers(roundtrip_high, HIGH, sync=False)
_peers(roundtrip_sync, DEFAULT, sync=True)
