"""Automatic pipelining on a Cluster: one pipeline per node, redirections followed.

The migration and node-loss tests run on a Cluster of their own (they move a slot, or kill a
node), so the suite's shared Cluster stays as every other test expects it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

import redkit
from redkit.errors import ConnectionLost
from redkit.keys import key_slot
from redkit.pipelining import ClusterAutoPipeline
from redkit.scripts import ScriptSet
from servers import Cluster, keys_in_slot, migrate_slot

SCRIPTS = ScriptSet("luapkg")
INCR = SCRIPTS["incr_by"]


def one_key_per_node(rk: redkit.Redkit, name: str) -> list[str]:
    """A key on each primary of the Cluster (found by trying group names, a bounded search)."""
    assert isinstance(rk.redis, RedisCluster)
    found: dict[str, str] = {}
    for i in range(1000):
        key = rk.keys.group("test", f"{name}{i}").key("n")
        node = rk.redis.nodes_manager.get_node_from_slot(key_slot(key))
        found.setdefault(node.name, key)
        if len(found) == len(rk.redis.get_primaries()):
            break
    return list(found.values())


async def calls_everywhere(rk: redkit.Redkit, name: str) -> int:
    assert isinstance(rk.redis, RedisCluster)
    total = 0
    for node in rk.redis.get_primaries():
        info = await rk.redis.info("commandstats", target_nodes=node)
        total += int(info.get(f"cmdstat_{name}", {}).get("calls", 0))
    return total


@pytest.fixture
async def crk(cluster: Cluster, namespace: str) -> AsyncIterator[redkit.Redkit]:
    """A Redkit on the suite's shared Cluster."""
    async with redkit.connect(cluster.url, namespace) as client:
        yield client
        async for key in client.redis.scan_iter(match=client.keys.pattern, count=1000):
            await client.redis.unlink(key)


async def test_concurrent_calls_travel_in_one_pipeline_per_node_and_each_runs_once(
    crk: redkit.Redkit,
) -> None:
    pipeline = crk.pipeline
    assert isinstance(pipeline, ClusterAutoPipeline)
    counters = one_key_per_node(crk, "spread")
    assert len(counters) == 3
    for counter in counters:
        await crk.run(INCR, [counter], [0])  # load the script on each node
    before = await calls_everywhere(crk, "evalsha")
    results = await asyncio.gather(
        *(crk.run(INCR, [counter], [1]) for _ in range(200) for counter in counters)
    )
    for at, _counter in enumerate(counters):
        assert sorted(results[at :: len(counters)]) == list(range(1, 201))
    assert await calls_everywhere(crk, "evalsha") - before == 600  # every call ran once
    assert pipeline.batched_calls >= 400  # most calls shared a node's pipeline
    # Each node has its pipeline, and it kept its connections for the next calls.
    assert len(pipeline._nodes) == 3
    assert all(node._idle for node in pipeline._nodes.values())


async def test_each_node_loads_a_forgotten_script_once_for_its_storm(crk: redkit.Redkit) -> None:
    pipeline = crk.pipeline
    assert isinstance(pipeline, ClusterAutoPipeline)
    counters = one_key_per_node(crk, "storm")
    for counter in counters:
        await crk.run(INCR, [counter], [0])
    assert isinstance(crk.redis, RedisCluster)
    for node in crk.redis.get_primaries():
        async with Redis(host=node.host, port=int(node.port)) as direct:
            await direct.script_flush()
    loads = pipeline.script_loads
    results = await asyncio.gather(
        *(crk.run(INCR, [counter], [1]) for _ in range(100) for counter in counters)
    )
    for at in range(len(counters)):
        assert sorted(results[at :: len(counters)]) == list(range(1, 101))
    assert pipeline.script_loads - loads == 3  # one SCRIPT LOAD per node


async def test_plain_reads_go_to_the_node_of_their_key(crk: redkit.Redkit) -> None:
    assert crk.pipeline is not None
    keys = one_key_per_node(crk, "read")
    for at, key in enumerate(keys):
        await crk.redis.set(key, str(at))
    replies = await asyncio.gather(*(crk.pipeline.read_at_server_time(("GET", k)) for k in keys))
    assert [reply for reply, _now in replies] == [b"0", b"1", b"2"]
    assert all(now > 0 for _reply, now in replies)


# -- a Cluster of its own: slots moved by hand, nodes killed ----------------------------------


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(tmp_path).start()
    yield started
    started.stop()


async def test_a_slot_migrated_under_load_loses_and_repeats_no_rate_limit_hit(
    own_cluster: Cluster,
) -> None:
    async with redkit.connect(own_cluster.url, "mig") as rk:
        pipeline = rk.pipeline
        assert isinstance(pipeline, ClusterAutoPipeline)
        # sliding_log counts every hit exactly: a hit lost or run twice shows in the count.
        limiter = rk.rate_limiter(100_000, 600, algorithm="sliding_log")
        await limiter.hit("client")
        keys = [k async for k in rk.redis.scan_iter(match=rk.keys.pattern, count=1000)]
        assert keys
        slot = key_slot(keys[0])
        assert isinstance(rk.redis, RedisCluster)
        owner = rk.redis.nodes_manager.get_node_from_slot(slot)
        source = next(i for i, n in enumerate(own_cluster.nodes) if n.port == owner.port)
        target = (source + 1) % 3

        migrated = asyncio.Event()
        remaining: list[int] = []

        async def hitter() -> None:
            # Hits before, during and after the move (bounded: at most 400 per task).
            after = 0
            for _ in range(400):
                decision = await limiter.hit("client")
                assert decision.allowed
                assert not decision.degraded  # no fail-open answer: every hit reached a node
                remaining.append(decision.remaining)
                if migrated.is_set():
                    after += 1
                    if after >= 20:
                        return
                await asyncio.sleep(0)

        async def mover() -> int:
            await asyncio.sleep(0.05)  # let the load build up first
            try:
                return await migrate_slot(own_cluster, slot, source, target)
            finally:
                migrated.set()

        moving = asyncio.create_task(mover())
        await asyncio.gather(*(hitter() for _ in range(50)))
        assert await moving >= 1
        hits = len(remaining) + 1
        # Every hit counted once: each saw its own count, and the total is exact.
        assert sorted(remaining) == list(range(100_000 - hits, 100_000 - 1))
        assert (await limiter.peek("client")).remaining == 100_000 - hits
        # The calls met the move (ASK while the keys moved, then MOVED) and followed it,
        # and the key now lives on the target.
        assert pipeline.redirected["ASK"] >= 1
        assert pipeline.redirected["MOVED"] >= 1
        assert await keys_in_slot(own_cluster.nodes[target], slot) >= 1


async def test_a_killed_node_fails_its_calls_with_connection_lost_and_spares_the_others(
    own_cluster: Cluster,
) -> None:
    async with redkit.connect(own_cluster.url, "kill", command_timeout=1) as rk:
        counters = one_key_per_node(rk, "kill")
        for counter in counters:
            await rk.run(INCR, [counter], [1])
        assert isinstance(rk.redis, RedisCluster)
        dead_port = rk.redis.nodes_manager.get_node_from_slot(key_slot(counters[0])).port
        victim = next(n for n in own_cluster.nodes if n.port == dead_port)
        load = [rk.run(INCR, [counter], [1]) for _ in range(30) for counter in counters]
        victim.kill()
        # Bounded, never a hang: the generous guard only catches a hang, it measures nothing.
        async with asyncio.timeout(30):
            outcomes = await asyncio.gather(*load, return_exceptions=True)
            alone = await asyncio.gather(rk.run(INCR, [counters[0]], [1]), return_exceptions=True)
        lost = [o for o in [*outcomes, *alone] if isinstance(o, BaseException)]
        assert all(isinstance(o, ConnectionLost) for o in lost)
        assert isinstance(alone[0], ConnectionLost)
        # Calls for the other nodes went on.
        for counter in counters[1:]:
            assert await rk.run(INCR, [counter], [0]) == 31


async def test_a_hung_node_fails_a_timed_call_with_connection_lost_and_spares_the_others(
    own_cluster: Cluster,
) -> None:
    async with redkit.connect(own_cluster.url, "hung", command_timeout=1) as rk:
        counters = one_key_per_node(rk, "hung")
        for counter in counters:
            await rk.run(INCR, [counter], [1])
        assert isinstance(rk.redis, RedisCluster)
        port = rk.redis.nodes_manager.get_node_from_slot(key_slot(counters[0])).port
        hung = next(n for n in own_cluster.nodes if n.port == port)
        hung.pause()
        try:
            async with asyncio.timeout(30):  # a hang guard only: it measures nothing
                outcomes = await asyncio.gather(
                    *(rk.run(INCR, [counters[0]], [1], time_limit=0.3) for _ in range(20)),
                    return_exceptions=True,
                )
                others = [await rk.run(INCR, [c], [1], time_limit=5) for c in counters[1:]]
        finally:
            hung.resume()
        assert all(isinstance(o, ConnectionLost) for o in outcomes)
        assert others == [2, 2]
