"""A server that dies or hangs: ConnectionLost within the bound, then recovery by itself."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

import redkit
from redkit.embedded import ValkeyProcess, find_free_port
from redkit.scripts import ScriptSet

SCRIPTS = ScriptSet("luapkg")

# Default bound is 2 s (REDKIT_COMMAND_TIMEOUT / REDKIT_CONNECT_TIMEOUT); allow scheduling noise.
BOUND = 2.0
SLACK = 1.0


async def _expect_lost(call: object) -> float:
    began = time.perf_counter()
    with pytest.raises(redkit.ConnectionLost, match="did not answer"):
        await call  # type: ignore[misc]
    return time.perf_counter() - began


async def test_a_killed_server_fails_fast_and_calls_recover_when_it_is_back(
    own_server: ValkeyProcess,
) -> None:
    async with redkit.connect(own_server.url, "faults") as rk:
        counter = rk.keys.group("test", "n").key("n")
        assert await SCRIPTS["incr_by"](rk.redis, [counter], [1]) == 1
        own_server.kill()
        # Refused connections are reported at once, not after the timeout.
        assert await _expect_lost(rk.ping()) < 0.5
        assert await _expect_lost(SCRIPTS["incr_by"](rk.redis, [counter], [1])) < 0.5
        own_server.start()
        # No reconnect call: the pool replaces its dead connections on the next command, and
        # the script runner reloads the script the fresh server has never seen.
        assert await rk.ping() > 0
        assert await SCRIPTS["incr_by"](rk.redis, [counter], [5]) == 5


async def test_a_hung_server_costs_one_command_timeout_then_recovers(
    own_server: ValkeyProcess,
) -> None:
    async with redkit.connect(own_server.url, "faults") as rk:
        await rk.ping()
        own_server.pause()
        try:
            elapsed = await _expect_lost(rk.ping())
            assert BOUND - 0.1 <= elapsed <= BOUND + SLACK
        finally:
            own_server.resume()
        assert await rk.ping() > 0


async def test_the_bound_is_configurable(own_server: ValkeyProcess) -> None:
    async with redkit.connect(own_server.url, "faults", command_timeout=0.3) as rk:
        await rk.ping()
        own_server.pause()
        try:
            elapsed = await _expect_lost(rk.ping())
            assert 0.2 <= elapsed <= 0.3 + SLACK
        finally:
            own_server.resume()


async def test_a_hung_server_bounds_pipelined_calls_alone_and_batched(
    own_server: ValkeyProcess,
) -> None:
    async with redkit.connect(own_server.url, "faults", command_timeout=0.3) as rk:
        assert rk.pipeline is not None
        key = rk.keys.group("faults", "hung").key("n")
        await rk.run(SCRIPTS["incr_by"], [key], [1])  # a kept connection, and the script loaded
        own_server.pause()
        try:
            elapsed = await _expect_lost(rk.run(SCRIPTS["incr_by"], [key], [1]))
            assert 0.2 <= elapsed <= 0.3 + SLACK
            began = time.perf_counter()
            # One call goes alone, the others wait and travel as a batch: each is bounded.
            outcomes = await asyncio.gather(
                *(rk.pipeline.execute([("PING",)]) for _ in range(6)), return_exceptions=True
            )
            assert time.perf_counter() - began <= 0.6 + SLACK
            assert all(isinstance(o, redkit.ConnectionLost) for o in outcomes), outcomes
            assert all("did not answer" in str(o) for o in outcomes)
        finally:
            own_server.resume()
        assert await rk.pipeline.execute([("PING",)]) == [b"PONG"]
        assert await rk.run(SCRIPTS["incr_by"], [key], [1]) >= 1


async def test_connect_to_a_server_that_is_not_there_raises_connection_lost() -> None:
    began = time.perf_counter()
    with pytest.raises(redkit.ConnectionLost):
        await redkit.connect(f"redis://127.0.0.1:{find_free_port()}")
    assert time.perf_counter() - began < BOUND + SLACK


async def test_connect_to_a_hung_server_is_bounded_too(own_server: ValkeyProcess) -> None:
    own_server.pause()
    try:
        began = time.perf_counter()
        with pytest.raises(redkit.ConnectionLost):
            await redkit.connect(own_server.url, connect_timeout=0.5, command_timeout=0.5)
        assert time.perf_counter() - began < 0.5 + SLACK
    finally:
        own_server.resume()


async def test_a_hung_cluster_node_costs_one_command_timeout_then_recovers(
    tmp_path: Path,
) -> None:
    from servers import Cluster

    cluster = Cluster(tmp_path).start()
    try:
        async with redkit.connect(cluster.url, "faults") as rk:
            counter = rk.keys.group("test", "n").key("n")
            assert await SCRIPTS["incr_by"](rk.redis, [counter], [1]) == 1
            assert isinstance(rk.redis, RedisCluster)
            node = rk.redis.get_node_from_key(counter)
            assert node is not None
            owner = next(n for n in cluster.nodes if n.port == node.port)
            owner.pause()
            try:
                elapsed = await _expect_lost(SCRIPTS["incr_by"](rk.redis, [counter], [1]))
                assert BOUND - 0.1 <= elapsed <= BOUND + SLACK
            finally:
                owner.resume()
            # The timed-out call may still have run once the node woke up: 2 or 3.
            assert await SCRIPTS["incr_by"](rk.redis, [counter], [1]) in (2, 3)
    finally:
        cluster.stop()


async def test_a_refusal_by_the_server_is_a_redkit_error(rk: redkit.Redkit) -> None:
    from redkit.errors import translate_redis_errors

    key = rk.keys.key("a-string")
    await rk.redis.set(key, "x")
    with pytest.raises(redkit.ServerError, match="WRONGTYPE"), translate_redis_errors("lpush"):
        await rk.redis.lpush(key, "y")
    assert issubclass(redkit.ScriptError, redkit.ServerError)
