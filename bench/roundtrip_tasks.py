"""The job of the "jobs with one round trip" figures for worker processes started through the
CLI (``redkit worker bench.roundtrip_tasks:functions``): the same pipelined
SET/SET/INCR/SETBIT as bench/roundtrip.py, through one client per process."""

from __future__ import annotations

import os
from typing import Any

from redis.asyncio import Redis

_client: dict[int, Redis] = {}


async def rt(payload: list[Any]) -> None:
    """``payload``: [key base, job index]."""
    client = _client.get(os.getpid())
    if client is None:
        client = _client[os.getpid()] = Redis.from_url(os.environ["REDKIT_BENCH_URL"])
    base, i = payload
    async with client.pipeline(transaction=False) as pipe:
        pipe.set(f"{base}:a:{i % 100}", "x")
        pipe.set(f"{base}:b:{i % 100}", "y")
        pipe.incr(f"{base}:count")
        pipe.setbit(f"{base}:bits", i, 1)
        await pipe.execute()


functions = {"rt": rt}
