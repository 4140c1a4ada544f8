"""Idle and absolute timeouts, touch throttling, and the user index keeping itself small."""

from __future__ import annotations

import asyncio

import pytest

import redkit
from sessions.counting import CommandCounter


@pytest.mark.cluster
async def test_an_idle_session_expires_and_a_used_one_does_not(rk: redkit.Redkit) -> None:
    store = rk.sessions(idle_ttl=0.6, absolute_ttl=30, touch_every=0.1)
    idle = await store.create("alice", {})
    used = await store.create("alice", {})
    for _ in range(8):  # 1.2 s of use, twice the idle timeout
        await asyncio.sleep(0.15)
        assert await store.get(used.id) is not None
    assert await store.get(idle.id) is None
    assert await store.get(used.id) is not None


@pytest.mark.cluster
async def test_the_absolute_timeout_ends_a_session_despite_touches(rk: redkit.Redkit) -> None:
    store = rk.sessions(idle_ttl=0.5, absolute_ttl=1.0, touch_every=0)
    s = await store.create("bob", {})
    loop = asyncio.get_running_loop()
    began = loop.time()
    alive_until = began
    while loop.time() - began < 1.6:
        if await store.get(s.id) is not None:
            alive_until = loop.time()
        await asyncio.sleep(0.05)
    lived = alive_until - began
    assert 0.7 < lived <= 1.05  # touched every 50 ms, yet gone at the absolute deadline
    assert await store.list("bob") == []
    # Updating and rotating cannot revive it either.
    with pytest.raises(redkit.SessionNotFound):
        await store.update(s.id, {"x": 1})


@pytest.mark.cluster
async def test_reads_write_at_most_once_per_touch_every(
    rk: redkit.Redkit, commands: CommandCounter
) -> None:
    store = rk.sessions(idle_ttl=60, absolute_ttl=600, touch_every=0.5)
    s = await store.create("carol", {"x": 1})
    before = await commands.snapshot()
    for _ in range(200):
        assert await store.get(s.id) is not None
    done = await commands.since(before)
    # One read of the session per get, and no write: it was touched when it was created.
    # Standalone reads need no script (HMGET + TIME, pipelined); a Cluster runs the script.
    assert done["hmget"] == 200
    assert done["evalsha"] == (0 if rk.pipeline is not None else 200)
    assert done["hset"] == 0
    assert done["pexpireat"] == 0

    await asyncio.sleep(0.55)
    before = await commands.snapshot()
    for _ in range(50):
        got = await store.get(s.id)
    done = await commands.since(before)
    assert done["hset"] == 1  # the first read after touch_every records the touch
    assert done["pexpireat"] == 1
    assert got is not None
    assert got.last_seen_at > s.last_seen_at + 0.5
    assert got.expires_at == pytest.approx(got.last_seen_at + 60, abs=0.01)


@pytest.mark.cluster
async def test_expired_sessions_leave_the_user_index(rk: redkit.Redkit) -> None:
    store = rk.sessions(idle_ttl=0.3, absolute_ttl=30)
    for _ in range(20):
        await store.create("dave", {})
    index = rk.keys.group("sess", (await store.create("dave", {})).id[-4:]).key("u", "dave")
    assert await rk.redis.zcard(index) == 21
    assert 0 < await rk.redis.pttl(index) <= 30_000
    await asyncio.sleep(0.45)
    keeper = await store.create("dave", {})
    # The create pruned the 21 idle-expired entries: only the live session is indexed.
    assert await rk.redis.zcard(index) == 1
    assert [i.id_prefix for i in await store.list("dave")] == [keeper.id_prefix]


@pytest.mark.cluster
async def test_absolutely_expired_entries_leave_the_index_and_keys_expire(
    rk: redkit.Redkit,
) -> None:
    store = rk.sessions(idle_ttl=0.3, absolute_ttl=0.5, touch_every=0)
    s = await store.create("erin", {})
    group = rk.keys.group("sess", s.id[-4:])
    index = group.key("u", "erin")
    session_keys = [k async for k in rk.redis.scan_iter(match=group.key("s", "*"))]
    assert len(session_keys) == 1
    assert 0 < await rk.redis.pttl(session_keys[0]) <= 300
    assert 0 < await rk.redis.pttl(index) <= 500
    await asyncio.sleep(0.6)
    # Every key of the user is gone by itself: nothing outlives the last session.
    assert await rk.redis.exists(index, session_keys[0]) == 0
    assert await store.list("erin") == []
