"""The "top limited keys" ranking that check.lua keeps on its deny path."""

from __future__ import annotations

import asyncio

import pytest

import redkit
from redkit.errors import InvalidInput
from redkit.ratelimit.limiter import TOP_CAP


async def test_the_most_limited_keys_rank_first_with_their_denials(rk: redkit.Redkit) -> None:
    limiter = rk.rate_limiter(2, 60, "fixed_window", name="api")
    for key, denied in (("ip:a", 5), ("ip:b", 1), ("ip:c", 3)):
        for _ in range(2 + denied):
            await limiter.hit(key)
    await limiter.hit("ip:quiet")  # allowed: never ranked
    assert await limiter.top_limited() == [("ip:a", 5), ("ip:c", 3), ("ip:b", 1)]
    assert await limiter.top_limited(2) == [("ip:a", 5), ("ip:c", 3)]


async def test_allowed_hits_and_peeks_write_no_ranking(rk: redkit.Redkit) -> None:
    limiter = rk.rate_limiter(1, 60, "gcra", name="api")
    await limiter.hit("k")
    for _ in range(3):
        assert not (await limiter.peek("k")).allowed
    assert await limiter.top_limited() == []
    assert await rk.redis.exists(*limiter._top) == 0


async def test_a_reset_key_leaves_the_ranking(rk: redkit.Redkit) -> None:
    limiter = rk.rate_limiter(1, 60, "sliding_window", name="api")
    for _ in range(3):
        await limiter.hit("user:7")
    assert await limiter.top_limited() == [("user:7", 2)]
    await limiter.reset("user:7")
    assert await limiter.top_limited() == []
    assert (await limiter.hit("user:7")).allowed


async def test_the_ranking_is_bounded_and_expires_with_its_minute(rk: redkit.Redkit) -> None:
    limiter = rk.rate_limiter(1, 60, "sliding_log", name="api")
    keys = [f"k{i}" for i in range(TOP_CAP + 20)]
    await asyncio.gather(*(limiter.hit(k) for k in keys))
    await asyncio.gather(*(limiter.hit(k) for k in keys))  # one denial each
    # A key limited again and again climbs into the full set and to its top.
    for _ in range(5):
        await limiter.hit("hot")
    sizes = [await rk.redis.zcard(top) for top in limiter._top]
    assert max(sizes) <= TOP_CAP
    assert (await limiter.top_limited(1))[0][0] == "hot"
    for top in limiter._top:
        ttl = await rk.redis.pttl(top)
        assert ttl == -2 or 0 < ttl <= 120_000  # gone when its slot of the ring comes round


async def test_a_multi_limit_ranks_under_its_own_name(rk: redkit.Redkit) -> None:
    per_s = rk.rate_limiter(1, 1, "fixed_window", name="s")
    per_h = rk.rate_limiter(100, 3600, "fixed_window", name="h")
    both = rk.rate_limits([per_s, per_h])
    await both.hit("u")
    await both.hit("u")
    assert await both.top_limited() == [("u", 1)]
    assert await per_s.top_limited() == []


async def test_top_limited_refuses_a_count_out_of_range(rk: redkit.Redkit) -> None:
    limiter = rk.rate_limiter(1, 60)
    for bad in (0, TOP_CAP + 1, True, "3"):
        with pytest.raises(InvalidInput):
            await limiter.top_limited(bad)  # type: ignore[arg-type]


@pytest.mark.cluster
async def test_on_a_cluster_limiting_works_and_nothing_is_ranked(rk: redkit.Redkit) -> None:
    limiter = rk.rate_limiter(1, 60, "fixed_window", name="api")
    assert (await limiter.hit("a")).allowed
    assert not (await limiter.hit("a")).allowed
    assert limiter.tracks_top_limited is not rk.is_cluster
    assert await limiter.top_limited() == ([] if rk.is_cluster else [("a", 1)])
