"""``durability="replicated"``: a write that returned survives the failover of its master.

The scenario that loses writes, made certain instead of left to chance: the replica is cut
off (stopped, and its link killed by the master), so that what the master acknowledges now
reaches no replica; then the master dies and the Sentinels promote the replica.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis

import redkit
from failover.conftest import FIGURES
from redkit.errors import translate_redis_errors
from servers import Cluster, ReplicatedCluster, SentinelGroup

pytestmark = pytest.mark.failover

T = TypeVar("T")


async def _until_ok(call: Callable[[], Awaitable[T]], bound: float = 30.0) -> T:
    """``call()`` again (every 50 ms) while it raises ConnectionLost, for at most ``bound``."""
    deadline = time.monotonic() + bound
    while True:
        try:
            return await call()
        except redkit.ConnectionLost:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def _cut_off_the_replica(group: SentinelGroup) -> None:
    """From now on the master's writes reach no replica (until the master dies)."""
    assert group.replica is not None
    group.replica.pause()
    admin = redis.Redis(host=group.master.host, port=group.master.port, socket_timeout=2)
    try:
        admin.client_kill_filter(_type="replica")
    finally:
        admin.close()


async def _fail_over(group: SentinelGroup) -> None:
    assert group.replica is not None
    old = group.master
    old.kill()
    group.replica.resume()
    deadline = time.monotonic() + 30
    while group.current_master() is old:
        assert time.monotonic() < deadline, "the Sentinels did not promote the replica"
        await asyncio.sleep(0.05)


async def test_a_replicated_enqueue_survives_a_failover_that_loses_a_default_one(
    sentinel_group: SentinelGroup, namespace: str
) -> None:
    async with redkit.connect(sentinel_group.url, namespace) as rk:
        fast = rk.queue("fast")
        safe = rk.queue("safe", durability="replicated", durability_timeout=0.2)
        await safe.enqueue("send", {"n": 1}, job_id="confirmed")

        _cut_off_the_replica(sentinel_group)
        await fast.enqueue("send", {"n": 2}, job_id="acknowledged")  # returns all the same
        with pytest.raises(redkit.NotReplicated) as caught:
            await safe.enqueue("send", {"n": 3}, job_id="unconfirmed")
        assert (caught.value.confirmed, caught.value.wanted) == (0, 1)

        await _fail_over(sentinel_group)
        survivors = await _until_ok(lambda: safe.get("confirmed"))
        assert survivors is not None
        # What the default promises, and no more: the acknowledged enqueue is gone.
        assert await fast.get("acknowledged") is None
        # The caller that got NotReplicated was told it might be: it is.
        assert await safe.get("unconfirmed") is None
        FIGURES["durability (replica cut off, then failover)"] = (
            "default: 1 acknowledged enqueue lost of 1; replicated: 0 lost of 1 returned, "
            "1 NotReplicated (lost, as announced)"
        )


async def test_no_fencing_token_is_handed_out_twice_across_a_failover_at_either_level(
    sentinel_group: SentinelGroup, namespace: str
) -> None:
    async with redkit.connect(sentinel_group.url, namespace) as rk:
        rw = rk.read_write_lock("rw", ttl=5, timeout=10)
        async with rk.lock("fast", ttl=5) as lock:
            kept = lock.fencing_token
        async with rw.write() as lease:
            kept_write = lease.fencing_token
        # Its WAIT also covers the writes before it: the replica has both tokens above too.
        async with rk.lock("safe", ttl=5, durability="replicated") as lock:
            given = [lock.fencing_token]

        _cut_off_the_replica(sentinel_group)
        async with rk.lock("fast", ttl=5) as lock:
            lost = lock.fencing_token  # acknowledged, and never replicated
        async with rw.write() as lease:
            lost_write = lease.fencing_token
        with pytest.raises(redkit.NotReplicated):
            await rk.lock("safe", ttl=5, durability="replicated", durability_timeout=0.2).acquire()

        await _fail_over(sentinel_group)

        async def stored(group: str, name: str) -> int:
            with translate_redis_errors("GET"):
                return int(await rk.redis.get(rk.keys.group(group, name).key("fence")) or 0)

        async def take(name: str, **options: str) -> int | None:
            async with rk.lock(name, ttl=5, timeout=10, **options) as lock:  # type: ignore[arg-type]
                return lock.fencing_token

        async def write() -> int:
            async with rw.write() as lease:
                return lease.fencing_token

        # The promoted replica never saw the last acquisitions: its counters are behind the
        # tokens the old master gave last, so a counter alone would give those again.
        assert await _until_ok(lambda: stored("lock", "fast")) == kept
        assert await stored("rwlock", "rw") == kept_write
        assert kept is not None
        assert lost is not None
        assert lost > kept
        assert lost_write > kept_write
        # The default: tokens come from the promoted replica's clock, which is past them.
        after = await take("fast")
        assert after is not None
        assert after > lost
        after_write = await write()
        assert after_write > lost_write
        # Replicated: every token a holder was given is below the next one (taken with the
        # default level: the promoted replica has no replica of its own to wait for).
        after_safe = await take("safe")
        assert after_safe is not None
        assert all(after_safe > token for token in given if token is not None)
        FIGURES["fencing tokens across a failover (replica cut off)"] = (
            f"default: lock {kept} kept, {lost} lost, next {after} (+{after - lost} us); "
            f"write lease {kept_write} kept, {lost_write} lost, next {after_write}; "
            f"replicated: given {given}, next {after_safe}"
        )


async def test_replicated_writes_wait_on_the_node_of_their_keys_in_a_cluster(
    replicated_cluster: ReplicatedCluster, namespace: str
) -> None:
    async with redkit.connect(replicated_cluster.url, namespace) as rk:
        # Queues on each of the three masters: WAIT follows each enqueue to its node.
        for name in ("a", "b", "c", "d", "e", "f"):
            queue = rk.queue(name, durability="replicated")
            job = await queue.enqueue("send", {"to": name})
            assert await queue.get(job.id) is not None
        async with rk.lock("db", durability="replicated") as lock:
            assert lock.fencing_token is not None


async def test_without_a_replica_a_replicated_write_raises_not_replicated(
    cluster: Cluster, standalone_server: redkit.embedded.ValkeyProcess, namespace: str
) -> None:
    for url, auto_pipeline in (
        (cluster.url, True),
        (standalone_server.url, True),
        (standalone_server.url, False),
    ):
        async with redkit.connect(url, namespace, auto_pipeline=auto_pipeline) as rk:
            queue = rk.queue("q", durability="replicated", durability_timeout=0.05)
            with pytest.raises(redkit.NotReplicated, match="0 of 1 replica"):
                await queue.enqueue("send", {})
            with pytest.raises(redkit.NotReplicated):
                await rk.lock("db", durability="replicated", durability_timeout=0.05).acquire()
            # The lock was let go: a default lock takes it at once.
            async with rk.lock("db", timeout=0):
                pass
            await rk.redis.delete(queue.waiting_key)


async def test_a_durability_level_is_checked(
    standalone_server: redkit.embedded.ValkeyProcess, namespace: str
) -> None:
    async with redkit.connect(standalone_server.url, namespace, command_timeout=1) as rk:
        with pytest.raises(redkit.ConfigurationError, match="durability must be"):
            rk.queue("q", durability="sync")
        with pytest.raises(redkit.ConfigurationError, match="shorter than the command"):
            rk.lock("l", durability="replicated", durability_timeout=1)
        with pytest.raises(redkit.ConfigurationError, match="replicas"):
            rk.queue("q", durability="replicated", replicas=0)


async def test_a_subscriber_gets_a_gap_marker_exactly_for_the_events_a_failover_lost(
    sentinel_group: SentinelGroup, namespace: str
) -> None:
    async with redkit.connect(sentinel_group.url, namespace) as rk:
        bus = rk.notifications()
        barrier = rk.queue("barrier", durability="replicated")  # its WAIT covers all before
        async with bus.subscribe("feed") as sub:

            async def next_event() -> redkit.Event:
                event = await sub.get(timeout=30)
                assert event is not None, "no event within 30 s"
                return event

            kept = await bus.publish("feed", {"n": 1})
            await barrier.enqueue("sync", {})
            assert (await next_event()).id == kept

            _cut_off_the_replica(sentinel_group)
            lost = await bus.publish("feed", {"n": 2})
            assert (await next_event()).id == lost  # delivered live, never replicated

            await _fail_over(sentinel_group)
            after = await _until_ok(lambda: bus.publish("feed", {"n": 3}))
            gap = await next_event()
            assert gap.is_gap
            assert gap.data["after"] == lost
            assert (await next_event()).id == after
            assert [e.id for e in await bus.history("feed")] == [kept, after]
