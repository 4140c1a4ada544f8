"""``redis+sentinel://s1:p1,s2:p2,s3:p3/service``: the master found through Sentinel."""

from __future__ import annotations

import asyncio

import pytest

import redkit
from servers import SentinelGroup

pytestmark = pytest.mark.failover


async def test_every_primitive_works_through_a_sentinel_url_even_with_one_sentinel_down(
    sentinel_group: SentinelGroup, namespace: str
) -> None:
    # The first Sentinel of the URL is down: the client asks the next one.
    sentinel_group.sentinels[0].kill()
    async with redkit.connect(sentinel_group.url, namespace) as rk:
        assert rk.mode == "sentinel"
        store = rk.sessions()
        session = await store.create("u1", {"cart": 1})
        found = await store.get(session.id)
        assert found is not None
        assert found.data == {"cart": 1}
        cache = rk.cache()
        await cache.set("page", {"html": "<p>"})
        assert await cache.get("page") == {"html": "<p>"}
        decision = await rk.rate_limiter(limit=2, window=60).hit("ip")
        assert decision.allowed
        assert decision.remaining == 1
        async with rk.lock("db", ttl=5) as lock:
            assert lock.fencing_token is not None
        bus = rk.notifications()
        event_id = await bus.publish("news", {"n": 1})
        assert [e.id for e in await bus.history("news")] == [event_id]
        job = await rk.queue("mail").enqueue("send", {"to": "a@b.c"})
        assert (await rk.queue("mail").stats()).waiting == 1
        assert job.id
        # Everything went to the master the Sentinels name, none of it to the replica.
        master = sentinel_group.current_master()
        assert master is sentinel_group.master
        info = await rk.redis.info("replication")
        assert info["role"] == "master"


async def test_five_hundred_concurrent_calls_through_sentinel_queue_for_connections(
    sentinel_group: SentinelGroup, namespace: str
) -> None:
    async with redkit.connect(sentinel_group.url, namespace, max_connections=8) as rk:
        key = rk.keys.key("n")
        results = await asyncio.gather(*(rk.redis.incr(key) for _ in range(500)))
        assert sorted(results) == list(range(1, 501))
