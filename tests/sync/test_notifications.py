"""The sync notification bus: publish and history (subscribing is the async API's).

Hand-written (listed in tools/async_to_sync.py's HAND_WRITTEN): the async bus tests are
nearly all about subscriptions, which the sync API leaves out; these mirror the rest, and
check that what sync code publishes reaches an async subscriber.
"""

from __future__ import annotations

import asyncio

import pytest

import redkit
import redkit.sync


@pytest.mark.cluster
def test_history_keeps_exactly_the_last_n_events(rk: redkit.sync.Redkit) -> None:
    bus = rk.notifications(history=10)
    ids = [bus.publish("project:created", {"n": i}) for i in range(25)]
    kept = bus.history("project:created")
    assert [e.data["n"] for e in kept] == list(range(15, 25))
    assert [e.id for e in kept] == ids[15:]
    assert [e.data["n"] for e in bus.history("project:created", count=3)] == [22, 23, 24]
    after = bus.history("project:created", count=2, after=ids[18])
    assert [e.data["n"] for e in after] == [19, 20]
    assert bus.history("nothing:here") == []
    assert rk.redis.xlen(rk.keys.group("ch", "project:created").key("log")) == 10


def test_bad_input_is_refused_before_anything_is_published(rk: redkit.sync.Redkit) -> None:
    bus = rk.notifications(max_bytes=1000)
    with pytest.raises(redkit.sync.InvalidInput, match="not JSON-serialisable"):
        bus.publish("ch", {"when": object()})
    with pytest.raises(redkit.sync.InvalidInput, match="non-empty string"):
        bus.publish("", {"a": 1})
    with pytest.raises(redkit.sync.InvalidInput, match="over the 1,000-byte cap"):
        bus.publish("ch", "x" * 2000)
    with pytest.raises(redkit.sync.InvalidInput, match="control characters"):
        bus.publish("a\nb", 1)
    with pytest.raises(redkit.sync.InvalidInput, match="count must be"):
        bus.history("ch", count=0)
    assert bus.history("ch") == []
    assert "subscribers" not in repr(bus)  # no hub in the sync API


@pytest.mark.cluster
def test_an_async_subscriber_receives_what_sync_code_publishes(
    rk: redkit.sync.Redkit, redis_url: str, namespace: str
) -> None:
    async def subscribe_then_read() -> list[object]:
        async with redkit.connect(redis_url, namespace) as ark:
            bus = ark.notifications()
            async with bus.subscribe("deployment:status") as sub:
                # Published from sync code on another thread while this task listens.
                await asyncio.to_thread(
                    rk.notifications().publish, "deployment:status", {"status": "live"}
                )
                event = await sub.get(timeout=5)
                assert event is not None
                return [event.data, event.channel]

    assert asyncio.run(subscribe_then_read()) == [{"status": "live"}, "deployment:status"]
