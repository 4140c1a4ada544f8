"""Entries per tag, from the tag index that put.lua keeps in each shard (no SCAN)."""

from __future__ import annotations

import asyncio

import pytest

import redkit
from redkit.errors import InvalidInput


@pytest.mark.cluster
async def test_tag_counts_rank_the_live_entries_of_each_tag(rk: redkit.Redkit) -> None:
    cache = rk.cache(name="pages")  # 16 shards on a Cluster: the counts add up across them
    await asyncio.gather(
        *(cache.set(f"user:1:{i}", i, tags=["user:1", "pages"]) for i in range(12)),
        *(cache.set(f"user:2:{i}", i, tags=["user:2", "pages"]) for i in range(3)),
        cache.set("plain", 1),
    )
    assert await cache.tag_counts() == [("pages", 15), ("user:1", 12), ("user:2", 3)]
    assert await cache.tag_counts(1) == [("pages", 15)]


@pytest.mark.cluster
async def test_an_invalidated_tag_leaves_the_counts(rk: redkit.Redkit) -> None:
    cache = rk.cache(name="pages")
    await cache.set("a", 1, tags=["t1"])
    await cache.set("b", 2, tags=["t2"])
    assert await cache.invalidate("t1") == 1
    assert await cache.tag_counts() == [("t2", 1)]
    index = [await rk.redis.zrange(s.tag_index, 0, -1) for s in cache._shards]
    assert all(b"t1" not in members for members in index)


async def test_expired_entries_stop_counting_and_the_index_expires(rk: redkit.Redkit) -> None:
    cache = rk.cache(name="short")
    await cache.set("a", 1, ttl=0.2, tags=["soon"])
    await cache.set("b", 1, ttl=60, tags=["later"])
    assert dict(await cache.tag_counts()) == {"soon": 1, "later": 1}
    index = cache._shards[0].tag_index
    assert 0 < await rk.redis.pttl(index) <= 60_000
    await asyncio.sleep(0.3)
    assert await cache.tag_counts() == [("later", 1)]
    await cache.set("c", 1, ttl=60, tags=["later"])  # a tagged write trims the ended tag
    assert await rk.redis.zrange(index, 0, -1) == [b"later"]


async def test_untagged_writes_leave_no_index(rk: redkit.Redkit) -> None:
    cache = rk.cache(name="plain")
    await cache.set("a", 1)
    assert await rk.redis.exists(cache._shards[0].tag_index) == 0
    assert await cache.tag_counts() == []


async def test_tag_counts_refuse_a_limit_out_of_range(rk: redkit.Redkit) -> None:
    cache = rk.cache()
    for bad in (0, 1001, True, 2.5):
        with pytest.raises(InvalidInput):
            await cache.tag_counts(bad)  # type: ignore[arg-type]
