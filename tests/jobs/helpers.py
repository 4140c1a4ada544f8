"""Shared test helpers: claim like a (dead) worker would, wait for a condition, run a worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import redkit
from redkit._codegen import async_only
from redkit.jobs import Queue, Worker
from redkit.jobs.queue import SCRIPTS

FAKE_WORKER = "f" * 32


async def claim(q: Queue, n: int, worker: str = FAKE_WORKER, lease_ms: int = 30_000) -> list[str]:
    """Claim like a worker does, without running anything: the ids handed out, in order."""
    keys = [
        q.waiting_key,
        q.delayed_key,
        q.active_key,
        q.failed_key,
        q.paused_key,
        q.seq_key,
        q.events_key,
        q.wake_key,
        q.cancelled_key,
    ]
    args: list[str | int] = [
        q.job_prefix,
        q.done_prefix,
        worker,
        n,
        lease_ms,
        q.events_maxlen,
        q.keep_failed,
    ]
    reply = await q.rk.run(SCRIPTS["claim"], keys, [*args, q.failed_ttl_ms])
    return [reply[i].decode() for i in range(1, len(reply), 7)]


async def complete(q: Queue, job_id: str, attempt: int, worker: str = FAKE_WORKER) -> bool:
    """Acknowledge like a worker does; False if the attempt is no longer the worker's."""
    keys = [q.active_key, q.completed_key, q.events_key]
    args: list[str | int | bytes] = [
        q.job_prefix,
        q.done_prefix,
        worker,
        100,
        60_000,
        0,
        1,
        job_id,
        attempt,
        b"null",
    ]
    reply = await q.rk.run(SCRIPTS["complete"], keys, args)
    return bool(reply[0])


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def evalsha_calls(rk: redkit.Redkit) -> int:
    """Script calls the server has run (EVALSHA + EVAL), from INFO commandstats."""
    stats = await rk.redis.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


# Async only: it runs a worker.
@async_only
@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """``worker`` running in this loop for the block; stopped (and awaited, 10 s at most) after."""
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
