"""Job functions for the multi-process tests: ``redkit worker jobs.tasks:functions``.

``record`` notes each run in plain keys under ``payload["prefix"]``: a hash of runs per job
id, and a set of the ids running right now, so that a second run of a job while the first
is still active shows up as an overlap.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from redis.asyncio import Redis

from redkit.jobs import Job

_clients: dict[int, Redis] = {}


def _redis() -> Redis:
    # One client per process (the worker runs one event loop).
    client = _clients.get(os.getpid())
    if client is None:
        client = _clients[os.getpid()] = Redis.from_url(os.environ["JOBS_TEST_URL"])
    return client


async def record(payload: dict[str, Any], job: Job) -> dict[str, Any]:
    r = _redis()
    prefix = payload["prefix"]
    if not await r.sadd(prefix + ":running", job.id):
        await r.incr(prefix + ":overlaps")
    await r.hincrby(prefix + ":runs", job.id, 1)
    await asyncio.sleep(payload.get("sleep", 0))
    await r.srem(prefix + ":running", job.id)
    return {"attempt": job.attempts, "pid": os.getpid()}


functions = {"record": record}


def every_second(rk: Any) -> list[Any]:
    """``redkit worker ... --schedules jobs.tasks:every_second``: one schedule whose ticks
    run ``record`` under ``$JOBS_TEST_PREFIX``, on ``$JOBS_TEST_QUEUE``."""
    payload = {"prefix": os.environ["JOBS_TEST_PREFIX"]}
    queue = os.environ.get("JOBS_TEST_QUEUE", "default")
    return [rk.schedule("* * * * * *", "record", payload, queue=queue, name="every-second")]


nightly = [{"cron": "0 3 * * *", "function": "record", "queue": "maintenance", "tz": "UTC"}]
