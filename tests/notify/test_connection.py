"""One Redis subscription per process, and what happens when its connection drops."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AsyncExitStack

import pytest

import redkit
from notify.helpers import command_stats, eventually, kill_pubsub_connections, pubsub_clients
from redkit.embedded import ValkeyProcess
from redkit.notify import Event, Subscription
from redkit.notify import hub as hub_module
from redkit.notify.hub import Link


async def drain(sub: Subscription, n: int, timeout: float = 10.0) -> list[Event]:
    out: list[Event] = []
    while len(out) < n:
        event = await sub.get(timeout=timeout)
        assert event is not None, f"only {len(out)} of {n} events arrived"
        out.append(event)
    return out


@pytest.mark.cluster
async def test_a_thousand_local_subscribers_share_one_redis_subscription(
    rk: redkit.Redkit,
) -> None:
    bus = rk.notifications()
    async with AsyncExitStack() as stack:
        subs = [await stack.enter_async_context(bus.subscribe("system:alert")) for _ in range(1000)]
        # Other bus objects of the same Redkit share it too.
        subs.append(await stack.enter_async_context(rk.notifications().subscribe("system:alert")))
        clients = await pubsub_clients(rk)
        assert len(clients) == 1, clients
        (node, row) = clients[0]
        assert int(row.get("ssub" if rk.is_cluster else "sub", 0)) == 1
        channel = rk.keys.group("ch", "system:alert").key()
        kwargs = {"target_nodes": node} if node is not None else {}
        command = "PUBSUB SHARDNUMSUB" if rk.is_cluster else "PUBSUB NUMSUB"
        reply = await rk.redis.execute_command(command, channel, **kwargs)
        # redis-py parses NUMSUB into [(channel, n)]; SHARDNUMSUB comes as [channel, n].
        count = reply[0][1] if isinstance(reply[0], tuple | list) else reply[1]
        assert int(count) == 1
        event_id = await bus.publish("system:alert", {"level": "warn"})
        received = await asyncio.gather(*(sub.get(timeout=10) for sub in subs))
        assert all(e is not None and e.id == event_id for e in received)
    # The connection closes with the last subscriber.
    await eventually(lambda: _no_pubsub_clients(rk))


async def _no_pubsub_clients(rk: redkit.Redkit) -> bool:
    return not await pubsub_clients(rk)


@pytest.mark.cluster
async def test_client_kill_mid_stream_loses_and_doubles_nothing(rk: redkit.Redkit) -> None:
    bus = rk.notifications(history=1000)
    total = 300
    before = await command_stats(rk)
    async with bus.subscribe("deployment:status", "system:alert") as sub:
        killed_at: list[int] = []

        async def publisher() -> None:
            for i in range(total):
                await bus.publish("deployment:status" if i % 2 else "system:alert", i)
                if i in (60, 150, 151, 220):
                    # 151: again at once, while the bus may still be reconnecting.
                    killed_at.append(await kill_pubsub_connections(rk))
                await asyncio.sleep(0.001)

        task = asyncio.create_task(publisher())
        events = await drain(sub, total)
        await task
        assert await sub.get(timeout=0.3) is None
    assert killed_at[0], "the kills found the connection"
    assert killed_at[1]
    assert killed_at[3]
    assert [e.data for e in events if e.channel == "system:alert"] == list(range(0, total, 2))
    assert [e.data for e in events if e.channel == "deployment:status"] == list(range(1, total, 2))
    assert not any(e.is_gap for e in events)
    # Each reconnect read what it missed from history (one XRANGE per channel at least).
    after = await command_stats(rk)
    assert after["xrange"] - before["xrange"] >= 2


@pytest.mark.cluster
@pytest.mark.parametrize("history_before", [False, True], ids=["fresh-channel", "old-channel"])
async def test_a_drop_before_the_first_live_event_still_loses_nothing(
    rk: redkit.Redkit, history_before: bool
) -> None:
    bus = rk.notifications()
    channel = "project:created"
    if history_before:
        await bus.publish(channel, "before")  # history, not for this subscriber
    async with bus.subscribe(channel) as sub:
        # The link drops before any event came live: there is no last id to resume from.
        assert await kill_pubsub_connections(rk) == 1
        for i in range(10):  # published while the bus is reconnecting
            await bus.publish(channel, i)
        events = await drain(sub, 10)
        assert await sub.get(timeout=0.3) is None
    assert [e.data for e in events] == list(range(10))
    assert not any(e.is_gap for e in events)


async def test_client_kill_with_pattern_subscription_refills_seen_channels(
    rk: redkit.Redkit,
) -> None:
    bus = rk.notifications()
    async with bus.subscribe(patterns=["deployment:*"]) as sub:
        await bus.publish("deployment:p1", 0)
        await drain(sub, 1)
        assert await kill_pubsub_connections(rk) == 1
        for i in range(1, 20):  # some published while the bus is reconnecting
            await bus.publish("deployment:p1", i)
        events = await drain(sub, 19)
    assert [e.data for e in events] == list(range(1, 20))


async def test_a_server_restart_beyond_history_shows_a_gap_then_delivery_goes_on(
    own_server: ValkeyProcess,
) -> None:
    async with redkit.connect(own_server.url, "restart") as rk:
        bus = rk.notifications(history=5)
        async with bus.subscribe("alerts") as sub:
            await bus.publish("alerts", "before")
            await drain(sub, 1)
            own_server.stop()
            own_server.start()  # no persistence in tests: history is gone with the server
            # The bus reconnects by itself; publishes succeed once the server is back.
            event_id = await _publish_when_back(bus, "after")
            events = await drain(sub, 1)
            if events[0].is_gap:
                events = await drain(sub, 1)
            assert events[0].id == event_id
            assert events[0].data == "after"


async def _publish_when_back(bus: redkit.notify.NotificationBus, data: str) -> str:
    for _ in range(100):
        try:
            return await bus.publish("alerts", data)
        except redkit.ConnectionLost:
            await asyncio.sleep(0.05)
    raise AssertionError("the server did not come back")


async def test_a_link_that_stops_answering_is_replaced_and_misses_nothing(
    own_server: ValkeyProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A silent link is PINGed; a PING without answer ends the connection (no read timeout
    # per message does it: a watchdog does).
    monkeypatch.setattr(hub_module, "PING_EVERY", 0.2)
    async with redkit.connect(own_server.url, "silent", command_timeout=0.5) as rk:
        bus = rk.notifications()
        async with bus.subscribe("alerts") as sub:
            await bus.publish("alerts", 0)
            await drain(sub, 1)
            link = bus._hub.links["main"]
            # The server leaves every client unanswered for a while, as a dead network would.
            await rk.redis.execute_command("CLIENT", "PAUSE", 1500, "ALL")
            await eventually(lambda: _reconnected(link))
            for i in range(1, 6):
                await _publish_when_back(bus, str(i))
            events = await drain(sub, 5)
            await asyncio.sleep(0.3)
            assert await sub.get(timeout=0) is None
    assert [e.data for e in events] == ["1", "2", "3", "4", "5"]
    assert not any(e.is_gap for e in events)


async def _reconnected(link: Link) -> bool:
    return link.reconnects >= 1


async def test_a_link_the_server_refuses_at_once_backs_off_instead_of_spinning(
    rk: redkit.Redkit,
) -> None:
    # An ACL user may connect but not subscribe: every link comes up and is refused at
    # once (NOPERM). It must back off as from an unreachable server, not reconnect in a
    # tight loop (thousands of connections a second against the server).
    user, password = f"nosub{rk.namespace}", "secret-" + rk.namespace
    refused = ["-subscribe", "-psubscribe"] + (["-ssubscribe"] if rk.has_sharded_pubsub else [])
    await rk.redis.execute_command(
        "ACL", "SETUSER", user, "reset", "on", f">{password}", "~*", "&*", "+@all", *refused
    )
    url = rk.url.replace("redis://", f"redis://{user}:{password}@", 1)
    try:
        async with redkit.connect(url, rk.namespace) as limited:
            bus = limited.notifications()
            entering = asyncio.create_task(bus.subscribe("alerts").__aenter__())
            await asyncio.sleep(1.5)
            link = bus._hub.links["main"]
            # Backing off from 50 ms, doubling: about 6 attempts in 1.5 s, never hundreds.
            assert 1 <= link.reconnects <= 12
            entering.cancel()
            with contextlib.suppress(asyncio.CancelledError, redkit.RedkitError):
                await entering
    finally:
        await rk.redis.execute_command("ACL", "DELUSER", user)
