"""What a lock, semaphore or read-write lock writes while held, and how an operator lists them."""

from __future__ import annotations

import asyncio

import pytest

import redkit
from redkit.keys import key_slot
from redkit.locks import list_locks
from redkit.locks.admin import HOLDER_CHARS


async def _slots(rk: redkit.Redkit) -> dict[int, set[str]]:
    # On a Cluster, redis-py's scan_iter walks every primary.
    found: dict[int, set[str]] = {}
    async for raw in rk.redis.scan_iter(match=f"{rk.namespace}:*"):
        key = raw.decode()
        found.setdefault(key_slot(key), set()).add(key)
    return found


@pytest.mark.cluster
async def test_held_locks_write_only_keys_of_their_own_hash_tag(rk: redkit.Redkit) -> None:
    lock = rk.lock("deploy:p1", ttl=30)
    await lock.acquire()
    permit = await rk.semaphore("builds", limit=3, ttl=30).acquire()
    write = await rk.read_write_lock("config", ttl=30).acquire_write()
    expected = {
        key_slot(rk.keys.group(kind, name).key("x"))
        for kind, name in (("lock", "deploy:p1"), ("sem", "builds"), ("rwlock", "config"))
    }
    # No namespace-wide index in another slot: each object's keys, and nothing else.
    assert set(await _slots(rk)) == expected
    await lock.release()
    await permit.release()
    await write.release()
    assert set(await _slots(rk)) <= expected


@pytest.mark.cluster
async def test_a_listed_lock_shows_the_start_of_its_holders_token(rk: redkit.Redkit) -> None:
    lock = rk.lock("deploy:p1", ttl=30)
    await lock.acquire()
    second = rk.lock("deploy:p1", timeout=5)
    waiter = asyncio.create_task(second.acquire())
    queue = rk.keys.group("lock", "deploy:p1").key("queue")
    for _ in range(200):  # bounded: until the waiter is queued
        if await rk.redis.zcard(queue):
            break
        await asyncio.sleep(0.01)
    (held,) = await list_locks(rk)
    assert lock._token is not None
    assert (held.name, held.holder, held.waiters) == ("deploy:p1", lock._token[:HOLDER_CHARS], 1)
    assert held.fencing_token == lock.fencing_token
    await lock.release()  # handed to the waiter: the listing names the new holder
    await asyncio.wait_for(waiter, 5)
    (again,) = await list_locks(rk)
    assert second._token is not None
    assert again.holder == second._token[:HOLDER_CHARS]
    assert again.fencing_token == second.fencing_token
    await second.release()
    assert await list_locks(rk) == []
