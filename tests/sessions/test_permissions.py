"""The permission cache: per user and project, with a TTL, dropped by revoke_all."""

from __future__ import annotations

import asyncio

import pytest

import redkit


@pytest.mark.cluster
async def test_permissions_are_cached_per_user_and_project(rk: redkit.Redkit) -> None:
    store = rk.sessions()
    await store.permissions("alice", "p1").set({"role": "admin"})
    await store.permissions("alice", "p2").set(["read"])
    assert await store.permissions("alice", "p1").get() == {"role": "admin"}
    assert await store.permissions("alice", "p2").get() == ["read"]
    assert await store.permissions("alice", "p3").get() is None
    assert await store.permissions("bob", "p1").get() is None
    assert await store.permissions("alice", "p1").invalidate() is True
    assert await store.permissions("alice", "p1").get() is None
    assert await store.permissions("alice", "p2").get() == ["read"]
    assert await store.invalidate_permissions("alice") is True
    assert await store.permissions("alice", "p2").get() is None


@pytest.mark.cluster
async def test_cached_permissions_expire_and_are_pruned(rk: redkit.Redkit) -> None:
    store = rk.sessions(permission_ttl=0.3)
    perms = store.permissions("carol", "p1")
    await perms.set("admin")
    await store.permissions("carol", "long").set("reader", ttl=30)
    key = perms._key
    assert await rk.redis.hlen(key) == 2
    assert 29_000 < await rk.redis.pttl(key) <= 30_000  # the hash lives as long as its last entry
    await asyncio.sleep(0.4)
    assert await perms.get() is None
    await store.permissions("carol", "p2").set("writer", ttl=0.3)
    assert await rk.redis.hlen(key) == 2  # 'long' and 'p2': the expired entry was pruned
    assert await store.permissions("carol", "long").get() == "reader"


@pytest.mark.cluster
async def test_revoke_all_drops_the_users_cached_permissions(rk: redkit.Redkit) -> None:
    store = rk.sessions()
    await store.create("dave", {})
    await store.permissions("dave", "p1").set({"role": "owner"})
    await store.permissions("erin", "p1").set({"role": "owner"})
    assert await store.revoke_all("dave") == 1
    assert await store.permissions("dave", "p1").get() is None
    assert await store.permissions("erin", "p1").get() == {"role": "owner"}


def test_permission_input_is_checked(rk: redkit.Redkit) -> None:
    store = rk.sessions()
    with pytest.raises(redkit.InvalidInput, match="project_id"):
        store.permissions("alice", "")
    with pytest.raises(redkit.InvalidInput, match="user_id"):
        store.permissions("", "p1")


async def test_none_and_non_json_permissions_are_refused(rk: redkit.Redkit) -> None:
    perms = rk.sessions().permissions("alice", "p1")
    with pytest.raises(redkit.InvalidInput, match="None"):
        await perms.set(None)
    with pytest.raises(redkit.InvalidInput, match="JSON"):
        await perms.set({1, 2})
