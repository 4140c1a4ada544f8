"""Sharded pub/sub follows a slot migration: the subscription moves to the slot's new master
and fills from history what it missed there, with no gap and no duplicate.

The server ends a sharded subscription when the channel's slot leaves its node (Valkey 9.1
sends ``sunsubscribe <channel> 0`` on the still open connection, as soon as the node learns
that another master owns the slot). These tests move slots, so they run on a Cluster of
their own (one for the module), and the suite's shared Cluster stays as other tests expect.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
from redis.asyncio.cluster import RedisCluster

import redkit
from notify.helpers import pubsub_clients
from redkit.keys import key_slot
from redkit.notify import Event, Subscription
from redkit.notify.hub import hub_for
from servers import Cluster, migrate_slot

# A guard against a hang, not a measure: a subscriber that stopped hearing its channel waits
# this long for each missing event, then the test fails.
WAIT = 10.0


@pytest.fixture(scope="module")
def moving_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.environ.get("REDIS_URL"):
        pytest.skip("REDIS_URL is set: the migration tests need a Cluster of their own")
    started = Cluster(tmp_path_factory.mktemp("moving")).start()
    yield started
    started.stop()


def owner_index(cluster: Cluster, rk: redkit.Redkit, slot: int) -> int:
    assert isinstance(rk.redis, RedisCluster)
    owner = rk.redis.nodes_manager.get_node_from_slot(slot)
    return next(i for i, n in enumerate(cluster.nodes) if n.port == owner.port)


async def receive(sub: Subscription, last: int) -> list[Event]:
    """The events up to the one numbered ``last`` (gap markers included), or fewer if the
    subscription went silent for ``WAIT`` seconds. Bounded: at most 10,000 events."""
    got: list[Event] = []
    for _ in range(10_000):
        event = await sub.get(timeout=WAIT)
        if event is None:
            break
        got.append(event)
        if not event.is_gap and event.data["n"] >= last:
            break
    return got


async def test_a_sharded_subscriber_follows_its_slot_to_the_new_master_and_misses_nothing(
    moving_cluster: Cluster,
) -> None:
    async with (
        redkit.connect(moving_cluster.url, "follow") as listener,
        redkit.connect(moving_cluster.url, "follow") as publisher,
    ):
        bus = listener.notifications(history=100)
        out = publisher.notifications(history=100)
        assert bus.sharded
        slot = key_slot(hub_for(listener, True).redis_name("deploys"))
        source = owner_index(moving_cluster, listener, slot)
        target = (source + 1) % 3
        published = 0

        async def publish(count: int) -> None:
            nonlocal published
            for _ in range(count):
                await out.publish("deploys", {"n": published})
                published += 1

        async def during(step: str) -> None:
            # "migrating": history is still on the source, whose subscribers hear it live.
            # "keys moved": publishes go to the target (ASK), where this subscriber is not
            # yet: it must fill these from history once it follows the slot.
            await publish(5)

        async with bus.subscribe("deploys") as sub:
            await publish(5)
            assert await migrate_slot(moving_cluster, slot, source, target, between=during) >= 1
            await publish(5)
            got = await receive(sub, 19)

        assert [e.data["n"] for e in got] == list(range(20))  # once each, in order, no gap
        assert not any(e.is_gap for e in got)
        assert published == 20
        assert len({e.id for e in got}) == 20


async def test_the_subscription_moves_to_the_link_of_the_new_owner(
    moving_cluster: Cluster,
) -> None:
    async with redkit.connect(moving_cluster.url, "relink") as rk:
        bus = rk.notifications(history=100)
        slot = key_slot(hub_for(rk, True).redis_name("builds"))
        source = owner_index(moving_cluster, rk, slot)
        target = (source + 2) % 3
        async with bus.subscribe("builds") as sub:
            await migrate_slot(moving_cluster, slot, source, target)
            await bus.publish("builds", {"n": 0})
            got = await receive(sub, 0)
            # The one subscribed connection left is on the slot's new master.
            ports = [row_node.port for row_node, _ in await pubsub_clients(rk)]
        assert [e.data for e in got] == [{"n": 0}]
        assert ports == [moving_cluster.nodes[target].port]


async def test_a_publisher_racing_the_migration_loses_and_repeats_nothing(
    moving_cluster: Cluster,
) -> None:
    async with (
        redkit.connect(moving_cluster.url, "race") as listener,
        redkit.connect(moving_cluster.url, "race") as publisher,
    ):
        bus = listener.notifications(history=1000)
        out = publisher.notifications(history=1000)
        slot = key_slot(hub_for(listener, True).redis_name("orders"))
        source = owner_index(moving_cluster, listener, slot)
        target = (source + 1) % 3
        moved = asyncio.Event()
        published: list[int] = []

        async def publish() -> None:
            # Before, during and after the move; bounded: at most 600 events.
            after = 0
            for n in range(600):
                await out.publish("orders", {"n": n})
                published.append(n)
                if moved.is_set():
                    after += 1
                    if after >= 20:
                        return

        async def move() -> None:
            await asyncio.sleep(0.05)  # let the stream build up first
            try:
                await migrate_slot(moving_cluster, slot, source, target)
            finally:
                moved.set()

        async with bus.subscribe("orders") as sub:
            await asyncio.gather(publish(), move())
            got = await receive(sub, published[-1])

        assert [e.data["n"] for e in got] == published
        assert not any(e.is_gap for e in got)


async def test_history_trimmed_past_the_cursor_during_the_move_gives_a_gap_marker(
    moving_cluster: Cluster,
) -> None:
    async with (
        redkit.connect(moving_cluster.url, "trim") as listener,
        redkit.connect(moving_cluster.url, "trim") as publisher,
    ):
        bus = listener.notifications(history=5)
        out = publisher.notifications(history=5)
        slot = key_slot(hub_for(listener, True).redis_name("alerts"))
        source = owner_index(moving_cluster, listener, slot)
        target = (source + 2) % 3
        published = 0

        async def publish(count: int) -> None:
            nonlocal published
            for _ in range(count):
                await out.publish("alerts", {"n": published})
                published += 1

        async def during(step: str) -> None:
            if step == "keys moved":
                # The subscriber cannot hear these (they go to the target): 8 events with
                # a history of 5 push its last event out of history.
                await publish(8)

        async with bus.subscribe("alerts") as sub:
            await publish(3)
            last_heard = [e.id for e in await receive(sub, 2)][-1]
            await migrate_slot(moving_cluster, slot, source, target, between=during)
            await publish(2)
            got = await receive(sub, 12)

        gaps = [e for e in got if e.is_gap]
        assert len(gaps) == 1
        assert gaps[0].data == {"reason": "history_trimmed", "after": last_heard}
        assert got[0].is_gap  # the marker comes first, then what history still held
        kept = [e.data["n"] for e in got[1:]]
        # History held the 5 newest when the subscriber read it: 6-10, or up to 8-12 if the
        # two publishes after the move came first. From there on nothing is missing.
        assert kept == list(range(kept[0], 13))
        assert 6 <= kept[0] <= 8


async def test_publishing_goes_on_while_the_channels_slot_migrates(
    moving_cluster: Cluster,
) -> None:
    async with redkit.connect(moving_cluster.url, "pubmove") as rk:
        bus = rk.notifications(history=100)
        slot = key_slot(hub_for(rk, True).redis_name("jobs"))
        source = owner_index(moving_cluster, rk, slot)
        ids: list[str] = [await bus.publish("jobs", {"n": 0})]

        async def during(step: str) -> None:
            # Both half-moved states: the stream on the source (MIGRATING), then on the
            # target (ASK). A publish is one script on the stream's node either way.
            for _ in range(3):
                ids.append(await bus.publish("jobs", {"step": step}))

        await migrate_slot(moving_cluster, slot, source, (source + 1) % 3, between=during)
        ids.append(await bus.publish("jobs", {"n": 7}))
        assert [e.id for e in await bus.history("jobs")] == ids


async def test_a_subscribe_by_a_stale_slot_map_follows_the_moved_reply_without_reconnecting(
    moving_cluster: Cluster,
) -> None:
    async with (
        redkit.connect(moving_cluster.url, "stale") as listener,
        redkit.connect(moving_cluster.url, "stale") as publisher,
    ):
        hub = hub_for(listener, True)
        bus = listener.notifications(history=100)
        slot = key_slot(hub.redis_name("audits"))
        source = owner_index(moving_cluster, listener, slot)
        target = (source + 1) % 3
        # Another channel keeps the source's link open: it must not be disturbed.
        other = next(f"keep{i}" for i in range(1000) if owner_matches(listener, f"keep{i}", slot))
        async with bus.subscribe(other):
            await migrate_slot(moving_cluster, slot, source, target)
            # The listener's slot map still names the source: its SSUBSCRIBE is refused there
            # (MOVED) and goes on to the target.
            assert owner_index(moving_cluster, listener, slot) == source
            async with bus.subscribe("audits") as sub:
                await publisher.notifications(history=100).publish("audits", {"n": 0})
                got = await receive(sub, 0)
                ports = sorted(node.port for node, _ in await pubsub_clients(listener))
        assert [e.data for e in got] == [{"n": 0}]
        assert ports == sorted(
            [moving_cluster.nodes[source].port, moving_cluster.nodes[target].port]
        )
        assert all(link.reconnects == 0 for link in hub.links.values())


def owner_matches(rk: redkit.Redkit, channel: str, slot: int) -> bool:
    """Whether ``channel``'s slot is another one served by the node that serves ``slot``."""
    assert isinstance(rk.redis, RedisCluster)
    manager = rk.redis.nodes_manager
    own = key_slot(hub_for(rk, True).redis_name(channel))
    return own != slot and manager.get_node_from_slot(own) is manager.get_node_from_slot(slot)
