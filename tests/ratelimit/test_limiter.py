"""Rate limiters against a real server: exactness, timing, all-or-nothing, failure policies."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

import redkit
from redkit._codegen import async_only
from redkit.embedded import ValkeyProcess
from redkit.ratelimit import Algorithm, CircuitBreaker, FailPolicy

ALGORITHMS = [a.value for a in Algorithm]


async def commandstats(rk: redkit.Redkit) -> dict[str, int]:
    """Calls per command, summed over every primary."""
    nodes: list[Any] = rk.redis.get_primaries() if isinstance(rk.redis, RedisCluster) else [None]
    totals: dict[str, int] = {}
    for node in nodes:
        kwargs = {"target_nodes": node} if node is not None else {}
        info = await rk.redis.info("commandstats", **kwargs)
        for name, stats in info.items():
            totals[name] = totals.get(name, 0) + int(stats["calls"])
    return totals


@pytest.mark.cluster
@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_500_concurrent_hits_on_limit_100_allow_exactly_100(
    rk: redkit.Redkit, algorithm: str
) -> None:
    # A generous timeout: this is about exactness, not the fail policy of a slow machine.
    limiter = rk.rate_limiter(100, 3600, algorithm, timeout=10)
    decisions = await asyncio.gather(*(limiter.hit("user:1") for _ in range(500)))
    assert not any(d.degraded for d in decisions)
    assert sum(d.allowed for d in decisions) == 100
    assert min(d.remaining for d in decisions) == 0
    assert all(d.retry_after > 0 for d in decisions if not d.allowed)


@pytest.mark.cluster
@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_a_rejected_hit_writes_nothing_and_extends_no_ttl(
    rk: redkit.Redkit, algorithm: str
) -> None:
    limiter = rk.rate_limiter(3, 60, algorithm)
    for _ in range(3):
        assert (await limiter.hit("k")).allowed
    key = rk.keys.group("rl", "k").key(limiter.name)
    before_value = await rk.redis.dump(key)
    before_ttl = await rk.redis.pttl(key)
    await asyncio.sleep(0.05)
    for _ in range(5):
        assert not (await limiter.hit("k")).allowed
    assert await rk.redis.dump(key) == before_value
    assert await rk.redis.pttl(key) <= before_ttl - 40


@pytest.mark.cluster
@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_retry_after_is_the_real_wait_and_the_limit_comes_back(
    rk: redkit.Redkit, algorithm: str
) -> None:
    limiter = rk.rate_limiter(5, 0.5, algorithm)
    if algorithm == "fixed_window":
        # Start the burst early in a window: one that ends between the hits (a loaded machine
        # can take 100 ms for six) opens a fresh window, and the sixth hit is rightly allowed.
        probe = await limiter.hit("w")
        if probe.reset_after < 0.35:
            await asyncio.sleep(probe.reset_after + 0.01)
        await limiter.reset("w")
    for _ in range(5):
        assert (await limiter.hit("w")).allowed
    rejected = await limiter.hit("w")
    assert not rejected.allowed
    assert 0 < rejected.retry_after <= 1.0  # never more than the real wait (<= 2 windows)
    await asyncio.sleep(rejected.retry_after + 0.03)
    assert (await limiter.hit("w")).allowed, "still rejected after retry_after"
    await asyncio.sleep(1.05)  # two windows: every algorithm is back to full
    fresh = await limiter.peek("w")
    assert fresh.allowed
    assert fresh.remaining == 5


async def test_fixed_window_retry_after_is_the_time_left_in_the_window(rk: redkit.Redkit) -> None:
    limiter = rk.rate_limiter(2, 1, "fixed_window")
    for attempt in range(5):
        key = f"f{attempt}"
        await limiter.hit(key)
        began = time.perf_counter()
        first = await limiter.hit(key)
        rejected = await limiter.hit(key)
        elapsed = time.perf_counter() - began
        if not rejected.allowed:
            break
        # The window ended between the hits (a slow moment of a loaded machine): a new key.
    assert not rejected.allowed
    # The wait left in the window: what `first` saw, less the time between the two hits.
    assert first.reset_after - elapsed - 0.01 <= rejected.retry_after <= first.reset_after + 0.01
    assert rejected.retry_after <= 1.0


async def test_gcra_allows_a_burst_then_the_steady_rate(rk: redkit.Redkit) -> None:
    limiter = rk.rate_limiter(10, 10, "gcra", burst=3)
    began = time.perf_counter()
    results = [await limiter.hit("g") for _ in range(4)]
    elapsed = time.perf_counter() - began
    assert [d.allowed for d in results] == [True, True, True, False]
    assert [d.remaining for d in results[:3]] == [2, 1, 0]
    # One unit comes back every second, counted from the first hit of the burst (however
    # slowly a loaded machine sent the four).
    assert 1.0 - elapsed - 0.01 <= results[3].retry_after <= 1.0 + 0.01
    await asyncio.sleep(results[3].retry_after + 0.02)
    assert (await limiter.hit("g")).allowed


@pytest.mark.cluster
@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_peek_consumes_nothing_and_reset_forgets(rk: redkit.Redkit, algorithm: str) -> None:
    limiter = rk.rate_limiter(4, 60, algorithm)
    await limiter.hit("p", cost=3)
    for _ in range(3):
        seen = await limiter.peek("p")
        assert seen.allowed
        assert seen.remaining == 1
    assert not (await limiter.peek("p", cost=2)).allowed
    await limiter.reset("p")
    assert (await limiter.peek("p")).remaining == 4


@pytest.mark.cluster
async def test_a_reject_by_the_second_limit_leaves_the_first_unchanged(rk: redkit.Redkit) -> None:
    per_minute = rk.rate_limiter(10, 60, "sliding_log")
    tight = rk.rate_limiter(3, 60, "fixed_window")
    both = rk.rate_limits([per_minute, tight])
    for _ in range(3):
        assert (await both.hit("user:7")).allowed
    rejected = await both.hit("user:7")
    assert not rejected.allowed
    assert rejected.policy == tight.name
    assert [d.allowed for d in rejected.all()] == [True, False]
    assert (await per_minute.peek("user:7")).remaining == 7  # not 6: nothing was consumed
    assert rejected.decisions[0].remaining == 7


@pytest.mark.cluster
async def test_several_limits_report_the_binding_one(rk: redkit.Redkit) -> None:
    per_second = rk.rate_limiter(10, 1, "gcra")
    per_hour = rk.rate_limiter(1000, 3600, "sliding_window")
    both = rk.rate_limits([per_second, per_hour])
    decision = await both.hit("u", cost=4)
    assert decision.allowed
    assert decision.policy == per_second.name
    assert decision.remaining == 6
    assert [d.remaining for d in decision.all()] == [6, 996]


@pytest.mark.cluster
async def test_each_hit_is_exactly_one_round_trip(rk: redkit.Redkit) -> None:
    limiters = [rk.rate_limiter(50, 60, a) for a in ALGORITHMS]
    multi = rk.rate_limits(limiters)
    for limiter in [*limiters, multi]:
        await limiter.hit("warm")  # the first call may load the script with EVAL
    before = await commandstats(rk)
    for limiter in [*limiters, multi]:
        for _ in range(10):
            await limiter.hit("rt")
    after = await commandstats(rk)
    calls = {
        name: after.get(name, 0) - before.get(name, 0)
        for name in ("cmdstat_evalsha", "cmdstat_eval")
    }
    assert calls == {"cmdstat_evalsha": 50, "cmdstat_eval": 0}


@pytest.mark.cluster
@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_state_keys_expire_and_the_log_is_bounded(rk: redkit.Redkit, algorithm: str) -> None:
    limiter = rk.rate_limiter(5, 30, algorithm)
    for _ in range(20):
        await limiter.hit("b")
    key = rk.keys.group("rl", "b").key(limiter.name)
    assert 0 < await rk.redis.pttl(key) <= 60_000
    if algorithm == "sliding_log":
        assert await rk.redis.zcard(key) == 5


@async_only  # it runs its own event loop; the sync tests' rk covers the same
def test_names_and_repr_describe_the_limit(redis_url: str) -> None:
    async def go() -> None:
        async with redkit.connect(redis_url) as rk:
            limiter = rk.rate_limiter(100, 60)
            assert limiter.name == "sliding_window:100/60s"
            assert rk.rate_limiter(5, 0.5, "gcra", burst=2).name == "gcra:5/500ms:b2"
            assert "sliding_window" in repr(limiter)

    asyncio.run(go())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0, "window": 1}, "limit must be"),
        ({"limit": -3, "window": 1}, "limit must be"),
        ({"limit": 1.5, "window": 1}, "limit must be"),
        ({"limit": 10, "window": 0}, "window must be"),
        ({"limit": 10, "window": -1}, "window must be"),
        ({"limit": 10, "window": 1, "algorithm": "leaky"}, "unknown algorithm"),
        ({"limit": 10, "window": 1, "burst": 3}, "burst applies to the gcra"),
        ({"limit": 10, "window": 1, "algorithm": "gcra", "burst": 0}, "burst must be"),
        ({"limit": 10, "window": 1, "fail": "maybe"}, "fail must be"),
        ({"limit": 10, "window": 1, "name": "a{b}"}, "limiter name"),
    ],
)
async def test_bad_settings_are_refused(
    rk: redkit.Redkit, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(redkit.InvalidInput, match=message):
        rk.rate_limiter(**kwargs)


@pytest.mark.parametrize(
    ("key", "cost", "message"),
    [
        ("", 1, "non-empty"),
        ("k", 0, "cost must be >= 1"),
        ("k", 11, "can never fit"),
        ("k", 1.5, "cost must be an int"),
        ("k", "1", "cost must be an int"),
        ("k", True, "cost must be an int"),
    ],
)
async def test_bad_calls_are_refused_before_anything_is_written(
    rk: redkit.Redkit, key: Any, cost: Any, message: str
) -> None:
    limiter = rk.rate_limiter(10, 60)
    with pytest.raises(redkit.InvalidInput, match=message):
        await limiter.hit(key, cost)
    assert (await rk.server_info()).keys_in_namespace == 0


async def test_limits_of_several_limiters_must_have_distinct_names(rk: redkit.Redkit) -> None:
    with pytest.raises(redkit.InvalidInput, match="share a name"):
        rk.rate_limits([rk.rate_limiter(5, 1), rk.rate_limiter(5, 1)])
    with pytest.raises(redkit.InvalidInput, match="at least one"):
        rk.rate_limits([])


def test_decision_raises_rate_limited_with_the_wait() -> None:
    from redkit.ratelimit import Decision

    decision = Decision(False, 10, 0, 5.0, 1.25, policy="p")
    with pytest.raises(redkit.RateLimited) as caught:
        decision.raise_if_limited()
    assert caught.value.retry_after == 1.25


# -- a dead or hung server: the fail policy answers within the timeout ---------------------


# Async only: the sync API bounds a call by the command timeout, not the limiter's timeout.
@async_only
@pytest.mark.parametrize("fail", ["open", "closed"])
async def test_a_hung_server_gets_a_fail_policy_answer_within_the_timeout(
    own_server: ValkeyProcess, fail: FailPolicy
) -> None:
    async with redkit.connect(own_server.url, "rlfail") as rk:
        limiter = rk.rate_limiter(5, 60, fail=fail, timeout=0.25)
        assert (await limiter.hit("x")).allowed
        own_server.pause()
        began = time.perf_counter()
        decision = await limiter.hit("x")
        assert time.perf_counter() - began < 0.25 + 0.5
        assert decision.degraded
        assert decision.allowed is (fail == "open")
        if fail == "closed":
            assert decision.retry_after >= 1


@async_only  # as above: its bounds are the limiter's timeout
async def test_a_dead_server_trips_the_breaker_so_requests_stop_waiting(
    own_server: ValkeyProcess,
) -> None:
    async with redkit.connect(own_server.url, "rlfail") as rk:
        breaker = CircuitBreaker(threshold=2, cooldown=0.5)
        limiter = rk.rate_limiter(5, 60, timeout=0.2, breaker=breaker)
        await limiter.hit("x")
        own_server.pause()
        await limiter.hit("x")
        await limiter.hit("x")
        assert breaker.state == "open"
        began = time.perf_counter()
        decision = await limiter.hit("x")
        # the open circuit answers without the server: well inside the 0.2 s a call would wait
        assert time.perf_counter() - began < 0.15
        assert decision.degraded
        assert decision.allowed
        own_server.resume()
        await asyncio.sleep(0.55)
        recovered = await limiter.hit("x")  # half-open: one trial call, which succeeds
        assert not recovered.degraded
        assert breaker.failures == 0  # closed again


async def test_fail_raise_surfaces_connection_lost(own_server: ValkeyProcess) -> None:
    async with redkit.connect(own_server.url, "rlfail") as rk:
        limiter = rk.rate_limiter(5, 60, fail="raise", timeout=0.2)
        own_server.kill()
        with pytest.raises(redkit.ConnectionLost):
            await limiter.hit("x")


async def test_prometheus_counters_count_decisions(rk: redkit.Redkit) -> None:
    from prometheus_client import REGISTRY

    limiter = rk.rate_limiter(2, 60, name=f"metrics-{rk.namespace}")

    def value(result: str) -> float:
        sample = REGISTRY.get_sample_value(
            "redkit_ratelimit_decisions_total", {"limiter": limiter.name, "result": result}
        )
        return sample or 0.0

    for _ in range(3):
        await limiter.hit("m")
    assert (value("allowed"), value("limited")) == (2.0, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 10, "window": 1e-9}, "window must be from 1 ms"),
        ({"limit": 10, "window": 0.0009}, "window must be from 1 ms"),
        ({"limit": 10, "window": 367 * 86400}, "366 days"),
        ({"limit": 10**13, "window": 60}, "limit must be an int from 1 to 10"),
        ({"limit": 10, "window": 60, "algorithm": "gcra", "burst": 10**13}, "burst must be"),
        ({"limit": 2000, "window": 0.001, "algorithm": "gcra"}, "at least 1 us per unit"),
    ],
)
async def test_windows_limits_and_bursts_have_documented_bounds(
    rk: redkit.Redkit, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(redkit.InvalidInput, match=message):
        rk.rate_limiter(**kwargs)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_the_shortest_window_still_counts(rk: redkit.Redkit, algorithm: str) -> None:
    limiter = rk.rate_limiter(1, 0.001, algorithm)
    decision = await limiter.hit("k")
    assert decision.allowed
    assert decision.remaining <= decision.limit


async def test_keys_are_at_most_512_bytes_and_costs_are_bounded(rk: redkit.Redkit) -> None:
    limiter = rk.rate_limiter(10, 60)
    assert (await limiter.hit("k" * 512)).allowed
    assert (await limiter.hit("é" * 256)).allowed  # 512 bytes in UTF-8
    for key in ("k" * 513, "é" * 257, "x" * 5_000_000):
        with pytest.raises(redkit.InvalidInput, match="at most 512 bytes"):
            await limiter.hit(key)
        with pytest.raises(redkit.InvalidInput, match="at most 512 bytes"):
            await limiter.reset(key)
    with pytest.raises(redkit.InvalidInput, match="valid text"):
        await limiter.hit("\ud800" * 200)
    # One entry per unit: a cost of a few thousand overflowed the script and failed open.
    log = rk.rate_limiter(100_000, 60, "sliding_log", fail="raise", timeout=10)
    for cost in (1001, 5000):
        with pytest.raises(redkit.InvalidInput, match="sliding_log"):
            await log.hit("k", cost)
    assert (await log.hit("k", 1000)).remaining == 99_000
    assert (await rk.server_info()).keys_in_namespace == 3  # the two longest keys and "k"
