"""The "most limited keys": denials counted in the process, added in the background to
per-limiter, per-minute sets by a script of their own (never by the check script)."""

from __future__ import annotations

import asyncio

import pytest

import redkit
from redkit.errors import InvalidInput
from redkit.keys import key_slot
from redkit.ratelimit.limiter import TOP_CAP


async def _namespace_keys(rk: redkit.Redkit) -> list[str]:
    # On a Cluster, redis-py's scan_iter walks every primary.
    return [k.decode() async for k in rk.redis.scan_iter(match=f"{rk.namespace}:*")]


@pytest.mark.cluster
async def test_the_most_limited_keys_rank_first_with_their_denials(rk: redkit.Redkit) -> None:
    limiter = rk.rate_limiter(2, 60, "fixed_window", name="api")
    for key, denied in (("ip:a", 5), ("ip:b", 1), ("ip:c", 3)):
        for _ in range(2 + denied):
            await limiter.hit(key)
    await limiter.hit("ip:quiet")  # allowed: never ranked
    assert await limiter.top_limited() == [("ip:a", 5), ("ip:c", 3), ("ip:b", 1)]
    assert await limiter.top_limited(2) == [("ip:a", 5), ("ip:c", 3)]


@pytest.mark.cluster
async def test_a_denied_hit_writes_nothing_outside_its_keys_slot(rk: redkit.Redkit) -> None:
    limiter = rk.rate_limiter(1, 60, "fixed_window", name="api")
    limiter.top_flush_interval = 60  # this test looks before any flush
    await limiter.hit("user:1")
    assert not (await limiter.hit("user:1")).allowed
    keys = await _namespace_keys(rk)
    assert keys
    assert {key_slot(k) for k in keys} == {key_slot(f"{rk.namespace}:{{rl:user:1}}")}
    assert await rk.redis.exists(*limiter._top) == 0  # counted in the process so far
    await limiter.flush_top_limited()
    # The ranking's own keys share one slot too (one script writes them).
    assert len({key_slot(k) for k in limiter._top}) == 1
    assert await limiter.top_limited() == [("user:1", 1)]


async def test_denials_are_flushed_in_the_background(rk: redkit.Redkit) -> None:
    limiter = rk.rate_limiter(1, 60, "gcra", name="api")
    limiter.top_flush_interval = 0.05
    await limiter.hit("k")
    await limiter.hit("k")
    for _ in range(200):  # bounded: until the timer's flush has written
        if await rk.redis.exists(*limiter._top):
            break
        await asyncio.sleep(0.02)
    assert not limiter._denied
    other = rk.rate_limiter(1, 60, "gcra", name="api")  # another process's view
    assert await other.top_limited() == [("k", 1)]


@pytest.mark.cluster
async def test_the_denials_of_several_processes_add_up(rk: redkit.Redkit) -> None:
    # Two limiter objects of one name share the limit but count denials apart, as two
    # processes would: 1 allowed + 2 denied here, 3 denied there.
    first = rk.rate_limiter(1, 60, "fixed_window", name="api")
    second = rk.rate_limiter(1, 60, "fixed_window", name="api")
    for limiter in (first, second):
        for _ in range(3):
            await limiter.hit("ip:x")
    for _ in range(2):
        await first.hit("ip:y")
    assert first._denied == {"ip:x": 2, "ip:y": 1}
    await first.flush_top_limited()
    assert await second.top_limited() == [("ip:x", 5), ("ip:y", 1)]


async def test_allowed_hits_and_peeks_write_no_ranking(rk: redkit.Redkit) -> None:
    limiter = rk.rate_limiter(1, 60, "gcra", name="api")
    await limiter.hit("k")
    for _ in range(3):
        assert not (await limiter.peek("k")).allowed
    assert await limiter.top_limited() == []
    assert await rk.redis.exists(*limiter._top) == 0


@pytest.mark.cluster
async def test_a_reset_key_leaves_the_ranking(rk: redkit.Redkit) -> None:
    limiter = rk.rate_limiter(1, 60, "sliding_window", name="api")
    for _ in range(3):
        await limiter.hit("user:7")
    assert await limiter.top_limited() == [("user:7", 2)]
    await limiter.hit("user:7")  # pending in the process when it is reset
    await limiter.reset("user:7")
    assert await limiter.top_limited() == []
    assert (await limiter.hit("user:7")).allowed


@pytest.mark.cluster
async def test_the_counts_in_the_process_and_on_the_server_are_bounded(
    rk: redkit.Redkit,
) -> None:
    limiter = rk.rate_limiter(1, 60, "sliding_log", name="api")
    limiter.top_flush_interval = 60  # flushed by hand below
    keys = [f"k{i}" for i in range(TOP_CAP + 20)]
    await asyncio.gather(*(limiter.hit(k) for k in keys))
    await asyncio.gather(*(limiter.hit(k) for k in keys))  # one denial each
    assert len(limiter._denied) == TOP_CAP
    # A key limited again and again climbs into the full counter and to its top.
    for _ in range(5):
        await limiter.hit("hot")
    assert len(limiter._denied) == TOP_CAP
    await limiter.flush_top_limited()
    other = rk.rate_limiter(1, 60, "sliding_log", name="api")
    for i in range(TOP_CAP):  # another process's hundred keys, into the same full set
        other._count_denial(f"o{i}")
    await other.flush_top_limited()
    sizes = [await rk.redis.zcard(top) for top in limiter._top]
    assert 0 < max(sizes) <= TOP_CAP
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
