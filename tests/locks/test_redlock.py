"""Redlock over three independent masters: majority, validity, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import redkit
from redkit.embedded import ValkeyProcess
from redkit.locks import Redlock
from servers import TEST_CONFIG


@pytest.fixture
def masters(tmp_path: Path) -> Iterator[list[ValkeyProcess]]:
    servers = [ValkeyProcess(tmp_path / f"m{i}", config=TEST_CONFIG).start() for i in range(3)]
    yield servers
    for server in servers:
        server.stop()


def _holders(masters: list[ValkeyProcess], name: str) -> int:
    count = 0
    for server in masters:
        if not server.running():
            continue
        client = redis.Redis.from_url(server.url)
        count += client.exists(f"rl:{{redlock:{name}}}:owner")
        client.close()
    return count


async def test_a_redlock_is_held_on_every_master_and_excludes_others(
    masters: list[ValkeyProcess],
) -> None:
    urls = [m.url for m in masters]
    async with Redlock(urls, "job", ttl=10, namespace="rl") as lock:
        assert lock.held
        assert 9.5 < lock.validity <= 10 - 10 * 0.01
        assert _holders(masters, "job") == 3
        with pytest.raises(redkit.LockNotAcquired, match="0 of 3"):
            async with Redlock(urls, "job", ttl=10, namespace="rl", timeout=0.3):
                pytest.fail("unreachable")  # pragma: no cover
    assert _holders(masters, "job") == 0


async def test_a_redlock_survives_one_dead_master_but_not_two(
    masters: list[ValkeyProcess],
) -> None:
    urls = [m.url for m in masters]
    masters[0].kill()
    lock = Redlock(urls, "job", ttl=5, namespace="rl")
    try:
        await lock.acquire(timeout=0)
        assert _holders(masters, "job") == 2
        await lock.release()
    finally:
        await lock.aclose()
    masters[1].kill()
    lock = Redlock(urls, "job", ttl=5, namespace="rl", retry_delay=0.05)
    try:
        with pytest.raises(redkit.LockNotAcquired, match="1 of 3"):
            await lock.acquire(timeout=0.2)
        assert _holders(masters, "job") == 0  # the minority was undone
    finally:
        await lock.aclose()


async def test_a_redlock_waits_for_the_holder_and_can_renew(
    masters: list[ValkeyProcess],
) -> None:
    handles = [await redkit.connect(m.url, "rl") for m in masters]
    try:
        holder = Redlock(handles, "job", ttl=0.6, auto_renew=True)
        await holder.acquire()
        await asyncio.sleep(0.9)  # renewed past its ttl
        assert holder.held
        waiter = Redlock(handles, "job", ttl=5, retry_delay=0.05)
        task = asyncio.create_task(waiter.acquire(timeout=3))
        await asyncio.sleep(0.1)
        assert not task.done()
        await holder.release()
        assert await task > 0
        for handle in handles:  # the keys vanish everywhere (an operator, a flush)
            await handle.redis.flushall()
        with pytest.raises(redkit.LockLost, match="only 0 masters"):
            await waiter.release()
    finally:
        for handle in handles:
            await handle.close()


def test_redlock_refuses_bad_arguments() -> None:
    with pytest.raises(redkit.InvalidInput, match="list of masters"):
        Redlock("redis://localhost", "x")
    with pytest.raises(redkit.InvalidInput, match="is empty"):
        Redlock(["redis://a", "redis://b", "redis://c"], "")
    with pytest.raises(redkit.InvalidInput, match="ttl"):
        Redlock(["redis://a"], "x", ttl=0)
