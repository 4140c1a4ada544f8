"""The namespace's lock registry: what the lock scripts keep so that listing needs no SCAN."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import redkit
from redkit.locks import force_release, list_locks
from redkit.locks._common import registry_keys


async def _scans(rk: redkit.Redkit) -> int:
    stats = await rk.redis.info("commandstats")
    return int(stats.get("cmdstat_scan", {}).get("calls", 0))


async def test_held_locks_semaphores_and_rw_locks_are_listed_without_scan(
    rk: redkit.Redkit,
) -> None:
    lock = rk.lock("deploy:p1", ttl=30)
    await lock.acquire()
    sem = rk.semaphore("builds", limit=3, ttl=30)
    permits = [await sem.acquire(), await sem.acquire()]
    rw = rk.read_write_lock("config", ttl=30)
    write = await rw.acquire_write()
    second = rk.lock("deploy:p1", timeout=5)
    waiter = asyncio.create_task(second.acquire())
    for _ in range(100):  # bounded: until the waiter is queued
        if await rk.redis.zcard(rk.keys.group("lock", "deploy:p1").key("queue")):
            break
        await asyncio.sleep(0.01)
    before = await _scans(rk)
    found = {info.name: info for info in await list_locks(rk)}
    assert await _scans(rk) == before
    assert set(found) == {"deploy:p1", "builds", "config"}
    held = found["deploy:p1"]
    assert held.kind == "lock"
    assert held.waiters == 1
    assert held.fencing_token == lock.fencing_token
    assert lock._token is not None
    assert held.holder == lock._token[:8]
    assert held.held_for is not None
    assert 0 <= held.held_for < 5
    assert 25 < held.ttl <= 30
    assert (found["builds"].kind, found["builds"].holders) == ("semaphore", 2)
    assert (found["config"].mode, found["config"].fencing_token) == ("write", write.fencing_token)
    assert found["config"].held_for is not None
    await lock.release()  # handed to the waiter: the entry follows the new holder
    await asyncio.wait_for(waiter, 5)
    again = {info.name: info for info in await list_locks(rk)}["deploy:p1"]
    assert again.fencing_token == second.fencing_token
    assert second._token is not None
    assert again.holder == second._token[:8]
    await second.release()
    for permit in permits:
        await permit.release()
    await write.release()
    assert await list_locks(rk) == []
    assert await rk.redis.exists(*registry_keys(rk)) == 0  # nothing left behind


async def test_a_crashed_holders_entry_ends_with_its_lease(rk: redkit.Redkit) -> None:
    # Holders that never release nor renew (their process died).
    await rk.lock("a", ttl=0.3, auto_renew=False).acquire()
    await rk.semaphore("s", limit=2, ttl=0.3, auto_renew=False).acquire()
    await rk.read_write_lock("rw", ttl=0.3, auto_renew=False).acquire_read()
    assert {info.name for info in await list_locks(rk)} == {"a", "s", "rw"}
    await asyncio.sleep(0.4)
    assert await list_locks(rk) == []  # ended: no longer listed
    new = rk.lock("new", ttl=30)
    await new.acquire()  # the next new entry drops the ended ones
    held, since = registry_keys(rk)
    assert await rk.redis.zcard(held) == 1
    assert await rk.redis.hlen(since) == 1
    await new.release()
    assert await rk.redis.exists(held, since) == 0


async def test_ended_entries_are_trimmed_by_the_next_new_one(rk: redkit.Redkit) -> None:
    for name in ("x", "y", "z"):
        await rk.lock(name, ttl=0.2, auto_renew=False).acquire()
    long = rk.lock("long", ttl=30)
    await long.acquire()  # the registry now lives 30 s: the ended entries must go otherwise
    await asyncio.sleep(0.3)
    later = rk.lock("later", ttl=30)
    await later.acquire()  # a new member trims the ended ones
    raw: Any = await rk.redis.zrange(registry_keys(rk)[0], 0, -1)
    members = [m.decode() for m in raw]
    assert sorted(m.split("{lock:")[1].split("}")[0] for m in members) == ["later", "long"]
    await long.release()
    await later.release()


async def test_a_renewal_keeps_the_entry_and_a_force_release_removes_it(
    rk: redkit.Redkit,
) -> None:
    lock = rk.lock("renewed", ttl=0.3, auto_renew=False)
    await lock.acquire()
    await lock.extend(30)
    await asyncio.sleep(0.4)
    [info] = await list_locks(rk)
    assert info.name == "renewed"
    assert info.held_for is not None
    assert info.held_for >= 0.3
    assert await force_release(rk, "renewed")
    assert await list_locks(rk) == []
    assert await rk.redis.exists(*registry_keys(rk)) == 0


async def test_a_semaphore_stays_listed_until_its_last_permit_returns(rk: redkit.Redkit) -> None:
    sem = rk.semaphore("pool", limit=2, ttl=30)
    first, second = await sem.acquire(), await sem.acquire()
    await first.release()
    [info] = await list_locks(rk)
    assert (info.name, info.holders) == ("pool", 1)
    await second.release()
    assert await list_locks(rk) == []


@pytest.mark.cluster
async def test_locks_are_listed_on_every_kind_of_server(rk: redkit.Redkit) -> None:
    # On a Cluster there is no registry (its keys would be in other slots): the listing scans.
    assert (registry_keys(rk) == ()) is rk.is_cluster
    lock = rk.lock("everywhere", ttl=30)
    await lock.acquire()
    [info] = await list_locks(rk)
    assert (info.kind, info.name, info.fencing_token) == ("lock", "everywhere", lock.fencing_token)
    await lock.release()
    assert await list_locks(rk) == []
