"""Workers alive: a running worker is listed with its load; it leaves when it stops, and an
entry that stopped beating is dropped."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import redkit
from redkit.jobs.presence import announce, list_workers, workers_key


async def test_a_running_worker_is_listed_with_its_queues_and_leaves_when_it_stops(
    rk: redkit.Redkit,
) -> None:
    async def noop(payload: Any) -> None:
        return None

    worker = rk.worker(["a", "b"], {"noop": noop}, concurrency=7, handle_signals=False)
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(500):
            if await list_workers(rk):
                break
            await asyncio.sleep(0.02)
        [info] = await list_workers(rk)
        assert (info.id, info.queues, info.concurrency, info.running) == (
            worker.id,
            ["a", "b"],
            7,
            0,
        )
        assert info.pid > 0
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
    assert await list_workers(rk) == []


async def test_a_worker_that_stopped_beating_is_dropped_and_the_hash_expires(
    rk: redkit.Redkit,
) -> None:
    key = workers_key(rk)
    await rk.redis.hset(key, "dead", '1000|{"queues": ["x"]}')  # last beat long ago
    assert await announce(rk, "alive", {"queues": ["x"]}, 30_000) == 1
    assert [w.id for w in await list_workers(rk)] == ["alive"]
    assert 0 < await rk.redis.pttl(key) <= 60_000
    assert await announce(rk, "alive", None, 30_000) == 0


@pytest.mark.cluster
async def test_a_worker_killed_without_a_goodbye_is_not_listed_once_its_window_passed(
    rk: redkit.Redkit,
) -> None:
    # SIGKILL sends no "leaving" beat, and no other worker may beat to drop the line: the
    # listing itself judges each line by the alive window it was written with.
    assert await announce(rk, "killed", {"queues": ["x"]}, 100) == 1
    assert await announce(rk, "alive", {"queues": ["x"]}, 30_000) == 2  # keeps the hash
    assert sorted(w.id for w in await list_workers(rk)) == ["alive", "killed"]
    await asyncio.sleep(0.3)
    assert [w.id for w in await list_workers(rk)] == ["alive"]
