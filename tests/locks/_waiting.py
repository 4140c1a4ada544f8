"""Shared by the lock tests: wait until waiters have queued on the server."""

from __future__ import annotations

import asyncio

import pytest

import redkit


async def queued(rk: redkit.Redkit, queue_key: str, count: int) -> None:
    """Wait (at most ~5 s) until the sorted set ``queue_key`` holds ``count`` waiters."""
    for _ in range(1000):
        if await rk.redis.zcard(queue_key) == count:
            return
        await asyncio.sleep(0.005)
    pytest.fail(f"{count} waiters never queued in {queue_key!r}")  # pragma: no cover
