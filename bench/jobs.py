"""Jobs: redkit's queue and worker against arq, RQ and SAQ, on the same server, same run.

- **enqueue (sequential)**: one job at a time, each call awaited before the next.
- **enqueue (batch)**: 10,000 jobs. redkit: ``enqueue_many`` (one script call per 1000).
  RQ: its ``enqueue_many`` (one pipeline). arq and SAQ have no batch call: their best is
  ``asyncio.gather`` of ``enqueue`` calls, 100 at a time.
- **processing**: 3000 no-op jobs queued first, then ONE worker (in this process, concurrency
  50 for the async workers) runs them all; the rate is jobs / wall time from worker start to
  the last job's completion. arq runs in burst mode, SAQ in burst mode, RQ's SimpleWorker
  (no fork per job; sync, one job at a time) in burst mode in a thread. Each side's job
  function counts its calls, and the count is checked against the number queued.
- **script calls per job**: redkit's server-side EVALSHA count (``INFO commandstats``)
  during a processing run, divided by the jobs: claim + complete, batched.

Peers that are not installed are skipped (``make bench`` installs them).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import secrets
import time
from typing import Any

import redis

from bench.floor import with_floor
from bench.harness import Context, Runner, comparison, verify
from redkit.jobs import JobSpec, Worker

SEQUENTIAL = 2000
BATCH = 10_000
PROCESS = 3000
CONCURRENCY = 50

_calls = {"rq": 0}


def _name(side: str) -> str:
    return f"bench-{side}-{secrets.token_hex(4)}"


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _host_port(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[1].rsplit("/", 1)[0]
    host, _, port = rest.rpartition(":")
    return host, int(port)


# -- redkit ------------------------------------------------------------------------------------


@comparison("jobs", "enqueue (sequential)", unit="jobs/s")
async def enqueue_sequential(ctx: Context) -> float:
    n = ctx.n(SEQUENTIAL)
    q = ctx.rk.queue(_name("redkit"))
    await q.enqueue("noop", 0)  # registers the queue name once
    began = time.perf_counter()
    for i in range(n):
        await q.enqueue("noop", i)
    rate = n / (time.perf_counter() - began)
    verify((await q.stats()).waiting == n + 1, "redkit: jobs missing")
    await q.drain()
    return rate


@comparison("jobs", "enqueue (batch of 10,000)", unit="jobs/s")
async def enqueue_batch(ctx: Context) -> float:
    n = ctx.n(BATCH)
    q = ctx.rk.queue(_name("redkit"))
    specs = [JobSpec("noop", i) for i in range(n)]
    began = time.perf_counter()
    await q.enqueue_many(specs)
    rate = n / (time.perf_counter() - began)
    verify((await q.stats()).waiting == n, "redkit: jobs missing")
    await q.drain()
    return rate


async def _redkit_process(ctx: Context) -> tuple[float, float]:
    n = ctx.n(PROCESS)
    q = ctx.rk.queue(_name("redkit"))
    await q.enqueue_many([JobSpec("noop", i) for i in range(n)])
    done = 0
    all_run = asyncio.Event()

    async def noop(payload: int) -> int:
        nonlocal done
        done += 1
        if done == n:
            all_run.set()
        return payload

    worker = Worker(
        ctx.rk, queues=[q], functions={"noop": noop}, concurrency=CONCURRENCY, handle_signals=False
    )
    before = await _evalsha(ctx)
    began = time.perf_counter()
    task = asyncio.create_task(worker.run())
    await all_run.wait()
    # The last acknowledgement is in flight when the last function returns.
    while worker.stats.completed < n:  # noqa: ASYNC110 (a few ms at most)
        await asyncio.sleep(0.001)
    rate = n / (time.perf_counter() - began)
    calls = await _evalsha(ctx) - before
    worker.stop()
    await task
    stats = await q.stats()
    verify(done == n and stats.waiting == 0 and stats.active == 0, "redkit: jobs not run")
    return rate, calls / n


async def _evalsha(ctx: Context) -> int:
    stats = await ctx.rk.redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


@comparison("jobs", f"processing no-op jobs, one worker (concurrency {CONCURRENCY})", "jobs/s")
async def processing(ctx: Context) -> float:
    rate, _ = await _redkit_process(ctx)
    return rate


@comparison(
    "jobs",
    "script calls per job (claim + complete)",
    unit="calls/job",
    higher_is_better=False,
    note="redkit only: server-side EVALSHA count during a processing run / jobs",
)
async def calls_per_job(ctx: Context) -> float:
    _, calls = await _redkit_process(ctx)
    verify(calls <= 2, f"redkit: {calls:.2f} script calls per job, over the 2 allowed")
    return calls


# -- arq ---------------------------------------------------------------------------------------


async def _arq_pool(ctx: Context) -> Any:
    arq_connections: Any = importlib.import_module("arq.connections")
    host, port = _host_port(ctx.url)
    return await arq_connections.create_pool(arq_connections.RedisSettings(host=host, port=port))


async def _arq_enqueue_sequential(ctx: Context) -> float:
    n = ctx.n(SEQUENTIAL)
    pool = await _arq_pool(ctx)
    queue = _name("arq")
    try:
        began = time.perf_counter()
        made = 0
        for i in range(n):
            made += (await pool.enqueue_job("noop", i, _queue_name=queue)) is not None
        rate = n / (time.perf_counter() - began)
        verify(made == n and await pool.zcard(queue) == n, "arq: jobs missing")
    finally:
        await pool.aclose()
    return rate


async def _arq_enqueue_batch(ctx: Context) -> float:
    n = ctx.n(BATCH)
    pool = await _arq_pool(ctx)
    queue = _name("arq")
    try:
        began = time.perf_counter()
        for start in range(0, n, 100):
            await asyncio.gather(
                *(
                    pool.enqueue_job("noop", i, _queue_name=queue)
                    for i in range(start, min(n, start + 100))
                )
            )
        rate = n / (time.perf_counter() - began)
        verify(await pool.zcard(queue) == n, "arq: jobs missing")
    finally:
        await pool.aclose()
    return rate


async def _arq_processing(ctx: Context) -> float:
    arq_worker: Any = importlib.import_module("arq.worker")
    n = ctx.n(PROCESS)
    pool = await _arq_pool(ctx)
    queue = _name("arq")
    done = 0

    async def noop(job_ctx: Any, x: int) -> int:
        nonlocal done
        done += 1
        return x

    try:
        for start in range(0, n, 100):
            await asyncio.gather(
                *(
                    pool.enqueue_job("noop", i, _queue_name=queue)
                    for i in range(start, min(n, start + 100))
                )
            )
        worker = arq_worker.Worker(
            functions=[arq_worker.func(noop, name="noop")],
            redis_pool=pool,
            queue_name=queue,
            burst=True,
            max_jobs=CONCURRENCY,
            handle_signals=False,
            poll_delay=0.01,
        )
        began = time.perf_counter()
        await worker.main()
        rate = n / (time.perf_counter() - began)
        await worker.close()
        verify(done == n and worker.jobs_complete == n, f"arq: ran {done} of {n}")
    finally:
        await pool.aclose()
    return rate


# -- SAQ ---------------------------------------------------------------------------------------


async def _saq_enqueue(ctx: Context, n: int, batch: bool) -> float:
    saq: Any = importlib.import_module("saq")
    queue = saq.Queue.from_url(ctx.url, name=_name("saq"))
    await queue.connect()
    try:
        began = time.perf_counter()
        if batch:
            for start in range(0, n, 100):
                await asyncio.gather(
                    *(queue.enqueue("noop", x=i) for i in range(start, min(n, start + 100)))
                )
        else:
            for i in range(n):
                await queue.enqueue("noop", x=i)
        rate = n / (time.perf_counter() - began)
        verify(await queue.count("queued") == n, "saq: jobs missing")
    finally:
        await queue.disconnect()
    return rate


async def _saq_enqueue_sequential(ctx: Context) -> float:
    return await _saq_enqueue(ctx, ctx.n(SEQUENTIAL), batch=False)


async def _saq_enqueue_batch(ctx: Context) -> float:
    return await _saq_enqueue(ctx, ctx.n(BATCH), batch=True)


async def _saq_processing(ctx: Context) -> float:
    saq: Any = importlib.import_module("saq")
    n = ctx.n(PROCESS)
    queue = saq.Queue.from_url(ctx.url, name=_name("saq"))
    await queue.connect()
    done = 0
    all_run = asyncio.Event()

    async def noop(job_ctx: Any, *, x: int) -> int:
        nonlocal done
        done += 1
        if done == n:
            all_run.set()
        return x

    try:
        for start in range(0, n, 100):
            await asyncio.gather(
                *(queue.enqueue("noop", x=i) for i in range(start, min(n, start + 100)))
            )
        worker = saq.Worker(
            queue,
            functions=[("noop", noop)],
            concurrency=CONCURRENCY,
            burst=True,
            dequeue_timeout=0.05,
        )
        began = time.perf_counter()
        task = asyncio.create_task(worker.start())
        await all_run.wait()
        rate = n / (time.perf_counter() - began)
        # Burst mode: the worker ends by itself once the queue stays empty.
        try:
            await asyncio.wait_for(task, 10)
        except TimeoutError:
            await worker.stop()
        verify(done == n, f"saq: ran {done} of {n}")
    finally:
        await queue.disconnect()
    return rate


# -- RQ (sync: run in a thread) ------------------------------------------------------------------


def rq_noop(x: int) -> int:
    """RQ's job function (RQ imports it by dotted path)."""
    _calls["rq"] += 1
    return x


def _rq_enqueue(url: str, n: int, batch: bool) -> float:
    rq: Any = importlib.import_module("rq")
    conn = redis.Redis.from_url(url)
    queue = rq.Queue(_name("rq"), connection=conn)
    began = time.perf_counter()
    if batch:
        for start in range(0, n, 1000):
            queue.enqueue_many(
                [rq.Queue.prepare_data(rq_noop, (i,)) for i in range(start, min(n, start + 1000))]
            )
    else:
        for i in range(n):
            queue.enqueue(rq_noop, i)
    rate = n / (time.perf_counter() - began)
    verify(queue.count == n, "rq: jobs missing")
    queue.empty()
    conn.close()
    return rate


async def _rq_enqueue_sequential(ctx: Context) -> float:
    return await asyncio.to_thread(_rq_enqueue, ctx.url, ctx.n(SEQUENTIAL), False)


async def _rq_enqueue_batch(ctx: Context) -> float:
    return await asyncio.to_thread(_rq_enqueue, ctx.url, ctx.n(BATCH), True)


def _rq_process(url: str, n: int) -> float:
    rq: Any = importlib.import_module("rq")

    timeouts: Any = importlib.import_module("rq.timeouts")

    class ThreadWorker(rq.SimpleWorker):  # type: ignore[misc]
        # The default job timeout uses SIGALRM, which only the main thread can use.
        death_penalty_class = timeouts.TimerDeathPenalty

        def _install_signal_handlers(self) -> None:  # signals belong to the main thread
            return None

    conn = redis.Redis.from_url(url)
    queue = rq.Queue(_name("rq"), connection=conn)
    for start in range(0, n, 1000):
        queue.enqueue_many(
            [rq.Queue.prepare_data(rq_noop, (i,)) for i in range(start, min(n, start + 1000))]
        )
    _calls["rq"] = 0
    worker = ThreadWorker([queue], connection=conn)
    began = time.perf_counter()
    worker.work(burst=True, logging_level="WARNING")
    rate = n / (time.perf_counter() - began)
    verify(_calls["rq"] == n, f"rq: ran {_calls['rq']} of {n}")
    conn.close()
    return rate


async def _rq_processing(ctx: Context) -> float:
    return await asyncio.to_thread(_rq_process, ctx.url, ctx.n(PROCESS))


def _register(comp: Any, peers: dict[str, tuple[str, Runner]]) -> None:
    for peer, (module, runner) in peers.items():
        if _has(module):
            comp.peers[peer] = runner


_register(
    enqueue_sequential,
    {
        "arq": ("arq", _arq_enqueue_sequential),
        "SAQ": ("saq", _saq_enqueue_sequential),
        "RQ (thread)": ("rq", _rq_enqueue_sequential),
    },
)
with_floor(enqueue_sequential)
_register(
    enqueue_batch,
    {
        "arq (gather x100)": ("arq", _arq_enqueue_batch),
        "SAQ (gather x100)": ("saq", _saq_enqueue_batch),
        "RQ enqueue_many (thread)": ("rq", _rq_enqueue_batch),
    },
)
_register(
    processing,
    {
        "arq": ("arq", _arq_processing),
        "SAQ": ("saq", _saq_processing),
        "RQ SimpleWorker (thread)": ("rq", _rq_processing),
    },
)
