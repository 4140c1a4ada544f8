"""The bus: publish, history, subscribe, patterns, resume, gaps, slow consumers, bad input."""

from __future__ import annotations

import asyncio

import pytest
import redis.exceptions

import redkit
from notify.helpers import command_stats
from redkit.notify import Event, NotificationBus, SlowConsumer, Subscription, parse_cursor
from redkit.notify import hub as hub_module
from redkit.notify.bus import DEFAULT_MAX_CHANNELS
from redkit.notify.events import MAX_CURSOR_CHANNELS


async def take(sub: Subscription, n: int, timeout: float = 5.0) -> list[Event]:
    out: list[Event] = []
    for _ in range(n):
        event = await sub.get(timeout=timeout)
        assert event is not None, f"only {len(out)} of {n} events arrived"
        out.append(event)
    return out


async def nothing_more(sub: Subscription) -> None:
    assert await sub.get(timeout=0.2) is None


@pytest.mark.cluster
async def test_a_subscriber_receives_what_is_published(rk: redkit.Redkit) -> None:
    bus = rk.notifications()
    async with bus.subscribe("deployment:status") as sub:
        event_id = await bus.publish("deployment:status", {"status": "building"})
        [event] = await take(sub, 1)
    assert event == Event(event_id, "deployment:status", {"status": "building"}, event.time)
    assert event.type == "event"
    assert not event.is_gap
    assert event.json == b'{"status":"building"}'
    # The id is the history stream's entry id; its millisecond part is the server's clock.
    assert abs(event.time - int(event_id.split("-")[0]) / 1000) < 1e-9


@pytest.mark.cluster
async def test_events_of_one_channel_arrive_in_order_across_several_channels(
    rk: redkit.Redkit,
) -> None:
    bus = rk.notifications()
    async with bus.subscribe("a", "b", "c") as sub:
        for i in range(30):
            await bus.publish("abc"[i % 3], i)
        events = await take(sub, 30)
        await nothing_more(sub)
    for channel in "abc":
        assert [e.data for e in events if e.channel == channel] == list(
            range("abc".index(channel), 30, 3)
        )


@pytest.mark.cluster
async def test_history_keeps_exactly_the_last_n_events(rk: redkit.Redkit) -> None:
    bus = rk.notifications(history=10)
    ids = [await bus.publish("project:created", {"n": i}) for i in range(25)]
    kept = await bus.history("project:created")
    assert [e.data["n"] for e in kept] == list(range(15, 25))
    assert [e.id for e in kept] == ids[15:]
    assert [e.data["n"] for e in await bus.history("project:created", count=3)] == [22, 23, 24]
    after = await bus.history("project:created", count=2, after=ids[18])
    assert [e.data["n"] for e in after] == [19, 20]
    assert await bus.history("nothing:here") == []
    stream = rk.keys.group("ch", "project:created").key("log")
    assert await rk.redis.xlen(stream) == 10


@pytest.mark.cluster
async def test_publish_writes_history_and_fans_out_in_one_script(rk: redkit.Redkit) -> None:
    bus = rk.notifications()
    await bus.publish("warm", 0)  # the first call may EVAL the script into the cache
    before = await command_stats(rk)
    await bus.publish("x", 1)
    ran = await command_stats(rk)
    ran.subtract(before)
    publish = "spublish" if rk.is_cluster else "publish"
    assert {name: ran[name] for name in ("evalsha", "eval", "xadd", publish)} == {
        "evalsha": 1,
        "eval": 0,
        "xadd": 1,
        publish: 1,
    }


async def test_pattern_subscriptions_receive_matching_channels_only(rk: redkit.Redkit) -> None:
    bus = rk.notifications()
    async with bus.subscribe("system:alert", patterns=["deployment:*"]) as sub:
        await bus.publish("deployment:p1", "a")
        await bus.publish("project:created", "not for us")
        await bus.publish("deployment:p2", "b")
        await bus.publish("system:alert", "c")
        events = await take(sub, 3)
        await nothing_more(sub)
    assert [(e.channel, e.data) for e in events] == [
        ("deployment:p1", "a"),
        ("deployment:p2", "b"),
        ("system:alert", "c"),
    ]


async def test_a_channel_matched_by_name_and_pattern_arrives_once(rk: redkit.Redkit) -> None:
    bus = rk.notifications()
    async with bus.subscribe("deployment:p1", patterns=["deployment:*"]) as sub:
        await bus.publish("deployment:p1", 1)
        await bus.publish("deployment:p1", 2)
        events = await take(sub, 2)
        await nothing_more(sub)
    assert [e.data for e in events] == [1, 2]


@pytest.mark.cluster
async def test_pattern_subscriptions_work_on_a_cluster_with_cluster_patterns(
    rk: redkit.Redkit,
) -> None:
    bus = rk.notifications(cluster_patterns=True)
    if not rk.is_cluster:
        async with bus.subscribe(patterns=["deployment:*"]) as sub:
            await bus.publish("deployment:p1", "x")
            assert [e.data for e in await take(sub, 1)] == ["x"]
        return
    with pytest.raises(redkit.InvalidInput, match="cluster_patterns=True"):
        rk.notifications().subscribe(patterns=["deployment:*"])
    async with bus.subscribe("system:alert", patterns=["deployment:*"]) as sub:
        for i in range(6):
            await bus.publish(f"deployment:p{i}", i)  # channels spread over the nodes
        await bus.publish("system:alert", "alert")
        events = await take(sub, 7)
        await nothing_more(sub)
    assert sorted(str(e.data) for e in events) == ["0", "1", "2", "3", "4", "5", "alert"]


@pytest.mark.cluster
async def test_resume_delivers_exactly_the_missed_events_then_live_ones(
    rk: redkit.Redkit,
) -> None:
    bus = rk.notifications(history=100)
    async with bus.subscribe("deployment:status") as sub:
        await bus.publish("deployment:status", "before")
        [seen] = await take(sub, 1)
        last_id = sub.last_event_id
    assert last_id == seen.id
    missed = [await bus.publish("deployment:status", i) for i in range(50)]
    async with bus.subscribe("deployment:status", last_event_id=last_id) as sub:
        replayed = await take(sub, 50)
        assert [e.id for e in replayed] == missed
        assert [e.data for e in replayed] == list(range(50))
        live = await bus.publish("deployment:status", "live")
        [event] = await take(sub, 1)
        assert event.id == live
        assert event.data == "live"
        await nothing_more(sub)


@pytest.mark.cluster
async def test_resume_while_events_keep_coming_has_no_gap_and_no_duplicate(
    rk: redkit.Redkit,
) -> None:
    bus = rk.notifications(history=1000)
    first = await bus.publish("busy", -1)
    stop = asyncio.Event()
    published: list[int] = []

    async def publisher() -> None:
        i = 0
        while not stop.is_set() or i < 100:
            await bus.publish("busy", i)
            published.append(i)
            i += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(publisher())
    await asyncio.sleep(0.02)
    async with bus.subscribe("busy", last_event_id=first) as sub:
        stop.set()
        await task
        events = await take(sub, len(published))
        await nothing_more(sub)
    assert [e.data for e in events] == published


@pytest.mark.cluster
async def test_resume_beyond_history_starts_with_a_gap_marker(rk: redkit.Redkit) -> None:
    bus = rk.notifications(history=10)
    old = await bus.publish("alerts", "old")
    ids = [await bus.publish("alerts", i) for i in range(30)]
    async with bus.subscribe("alerts", last_event_id=old) as sub:
        gap, *kept = await take(sub, 11)
        await nothing_more(sub)
    assert gap.is_gap
    assert gap.channel == "alerts"
    assert gap.data == {"reason": "history_trimmed", "after": old}
    assert [e.id for e in kept] == ids[-10:]


@pytest.mark.cluster
async def test_resume_at_the_newest_event_has_no_gap(rk: redkit.Redkit) -> None:
    bus = rk.notifications(history=3)
    for i in range(10):
        newest = await bus.publish("alerts", i)
    async with bus.subscribe("alerts", last_event_id=newest) as sub:
        await nothing_more(sub)
    # An id that this channel never had (its history is gone) is a gap.
    async with bus.subscribe("other", last_event_id=newest) as sub:
        [gap] = await take(sub, 1)
        assert gap.is_gap


@pytest.mark.cluster
async def test_a_cursor_resumes_several_channels(rk: redkit.Redkit) -> None:
    bus = rk.notifications()
    async with bus.subscribe("a", "b") as sub:
        await bus.publish("a", "a0")
        await bus.publish("b", "b0")
        await take(sub, 2)
        cursor = sub.last_event_id
    assert cursor is not None
    assert "a=" in cursor
    assert ";" in cursor
    await bus.publish("b", "b1")
    await bus.publish("a", "a1")
    async with bus.subscribe("a", "b", last_event_id=cursor) as sub:
        events = await take(sub, 2)
        await nothing_more(sub)
    assert sorted(e.data for e in events) == ["a1", "b1"]


async def test_a_cursor_cannot_open_channels_the_subscription_does_not_cover(
    rk: redkit.Redkit,
) -> None:
    bus = rk.notifications()
    secret = await bus.publish("secret", "s0")
    await bus.publish("secret", "s1")
    async with bus.subscribe("public", last_event_id={"secret": secret}) as sub:
        await nothing_more(sub)


async def test_a_slow_subscriber_loses_the_oldest_events_and_gets_a_gap(
    rk: redkit.Redkit,
) -> None:
    bus = rk.notifications(queue_size=5)
    async with bus.subscribe("fast") as sub:
        ids = [await bus.publish("fast", i) for i in range(8)]
        await asyncio.sleep(0.2)  # let all 8 arrive while nobody consumes
        gap, *rest = await take(sub, 6)
        await nothing_more(sub)
    assert gap.is_gap
    assert gap.data["reason"] == "slow_consumer"
    assert gap.data["dropped"] == 3
    assert [e.id for e in rest] == ids[3:]


async def test_a_slow_subscriber_can_be_disconnected_instead(rk: redkit.Redkit) -> None:
    bus = rk.notifications()
    async with bus.subscribe("fast", queue_size=3, slow_consumer="disconnect") as sub:
        for i in range(5):
            await bus.publish("fast", i)
        await asyncio.sleep(0.2)
        with pytest.raises(SlowConsumer, match="resubscribe with last_event_id"):
            await sub.get(timeout=1)


@pytest.mark.cluster
async def test_bad_input_is_refused_before_anything_is_published(rk: redkit.Redkit) -> None:
    bus = rk.notifications(max_bytes=1000)
    with pytest.raises(redkit.InvalidInput, match="not JSON-serialisable"):
        await bus.publish("ch", {"when": object()})
    with pytest.raises(redkit.InvalidInput, match="not JSON-serialisable"):
        await bus.publish("ch", b"raw bytes")
    with pytest.raises(redkit.InvalidInput, match="non-empty string"):
        await bus.publish("", {"a": 1})
    with pytest.raises(redkit.InvalidInput, match="over the 1,000-byte cap"):
        await bus.publish("ch", "x" * 2000)
    with pytest.raises(redkit.InvalidInput, match="control characters"):
        await bus.publish("a\nb", 1)
    assert await bus.history("ch") == []
    with pytest.raises(redkit.InvalidInput, match="at least one channel"):
        bus.subscribe()
    with pytest.raises(redkit.InvalidInput, match="not an event id"):
        bus.subscribe("ch", last_event_id="yesterday=noon")
    with pytest.raises(redkit.InvalidInput, match="history must be"):
        rk.notifications(history=0)
    with pytest.raises(redkit.InvalidInput, match="slow_consumer"):
        rk.notifications(slow_consumer="ignore")


async def test_buses_and_subscriptions_read_well(rk: redkit.Redkit) -> None:
    bus = rk.notifications(history=7)
    assert isinstance(bus, NotificationBus)
    assert "history=7" in repr(bus)
    sub = bus.subscribe("a", patterns=["b:*"])
    assert "a, b:*" in repr(sub)
    assert "new" in repr(sub)
    async with sub:
        assert "active" in repr(sub)
    assert "ended" in repr(sub)
    assert await sub.get(timeout=0) is None


async def test_history_ttl_expires_an_idle_channel(rk: redkit.Redkit) -> None:
    bus = rk.notifications(history_ttl=0.2)
    await bus.publish("brief", 1)
    stream = rk.keys.group("ch", "brief").key("log")
    assert 0 < await rk.redis.pttl(stream) <= 200


@pytest.mark.cluster
async def test_resume_is_exact_while_history_still_holds_the_last_id(rk: redkit.Redkit) -> None:
    bus = rk.notifications(history=5)
    last = await bus.publish("edge", "seen")
    ids = [await bus.publish("edge", i) for i in range(4)]
    # 4 missed, history 5: the last id is still kept, so no gap.
    async with bus.subscribe("edge", last_event_id=last) as sub:
        assert [e.id for e in await take(sub, 4)] == ids
        await nothing_more(sub)
    # One more: the last id itself is trimmed now, and with it the proof that nothing
    # between it and the oldest kept event is missing. A gap comes first, then all 5 kept.
    ids.append(await bus.publish("edge", 4))
    async with bus.subscribe("edge", last_event_id=last) as sub:
        gap, *kept = await take(sub, 6)
        await nothing_more(sub)
    assert gap.is_gap
    assert gap.data == {"reason": "history_trimmed", "after": last}
    assert [e.id for e in kept] == ids


async def test_live_messages_in_the_earlier_format_are_still_understood(
    rk: redkit.Redkit,
) -> None:
    # Before, publish sent "<id>\n<previous id>\n<data>"; a subscriber process that is
    # upgraded first still reads what older publishers send.
    bus = rk.notifications()
    async with bus.subscribe("mixed") as sub:
        first = await bus.publish("mixed", {"n": 1})
        second = f"{int(first.split('-')[0]) + 1}-0"
        channel = rk.keys.group("ch", "mixed").key()
        await rk.redis.publish(channel, f'{second}\n{first}\n{{"n":2}}')
        events = await take(sub, 2)
        await nothing_more(sub)
    assert [(e.id, e.data) for e in events] == [(first, {"n": 1}), (second, {"n": 2})]


@pytest.mark.cluster
async def test_sharded_pubsub_is_the_default_only_where_the_server_has_it(
    rk: redkit.Redkit, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ask the server itself, whatever it is (the suite also runs on Redis 6.2 and 7.0):
    # SPUBLISH to a channel nobody listens to answers 0 where it exists, an error where not.
    refusal = ""
    try:
        await rk.redis.spublish(f"{rk.namespace}:probe", "x")
    except redis.exceptions.ResponseError as exc:
        refusal = str(exc).lower()
    assert refusal == "" or refusal.startswith("unknown command"), refusal
    server_has_it = not refusal
    assert rk.has_sharded_pubsub is server_has_it
    assert rk.notifications().sharded is (rk.is_cluster and server_has_it)
    # The rule by version: Valkey always, Redis from 7.0. A Redis 6.2 Cluster has no
    # SPUBLISH, so the bus falls back to classic pub/sub there.
    for kind, version, has_it in [
        ("redis", "6.2.14", False),
        ("redis", "7.0.15", True),
        ("valkey", "7.2.4", True),
        ("valkey", "9.1.2", True),
    ]:
        monkeypatch.setattr(rk, "server_kind", kind)
        monkeypatch.setattr(rk, "server_version", version)
        assert rk.has_sharded_pubsub is has_it
        assert rk.notifications().sharded is (rk.is_cluster and has_it)


# -- hardening -------------------------------------------------------------------------------


async def test_a_subscriber_arriving_while_the_last_one_leaves_gets_a_working_link(
    rk: redkit.Redkit,
) -> None:
    bus = rk.notifications()
    for attempt in range(3):
        leaving = bus.subscribe(f"old:{attempt}")
        await leaving.__aenter__()
        arriving = bus.subscribe(f"new:{attempt}")
        entering = asyncio.create_task(arriving.__aenter__())
        await asyncio.sleep(0)  # it has registered and awaits its first round trip
        await leaving.aclose()  # the last subscriber of the link it is about to use
        async with asyncio.timeout(10):
            await entering
        try:
            event_id = await bus.publish(f"new:{attempt}", attempt)
            [event] = await take(arriving, 1)
            assert event.id == event_id
        finally:
            await arriving.aclose()


@pytest.mark.cluster
async def test_resuming_from_an_id_from_the_future_gets_a_gap_then_live_events(
    rk: redkit.Redkit,
) -> None:
    bus = rk.notifications(cluster_patterns=True)
    await bus.publish("deployment:status", "before")
    future = "99999999999999-0"
    async with bus.subscribe("deployment:status", last_event_id=future) as sub:
        [gap] = await take(sub, 1)
        assert gap.is_gap
        live = await bus.publish("deployment:status", "after")
        [event] = await take(sub, 1)
        assert (event.id, event.data) == (live, "after")
        assert sub.last_event_id == live
    async with bus.subscribe("deployment:status", patterns=["x:*"], last_event_id=future) as sub:
        [gap] = await take(sub, 1)
        live = await bus.publish("deployment:status", "again")
        [event] = await take(sub, 1)
        assert event.id == live


async def test_a_subscription_names_a_bounded_number_of_channels(rk: redkit.Redkit) -> None:
    bus = rk.notifications()
    assert bus.max_channels == DEFAULT_MAX_CHANNELS == 100
    names = [f"c:{i}" for i in range(100)]
    bus.subscribe(*names)  # at the limit: fine
    with pytest.raises(redkit.InvalidInput, match="at most 100 channels and patterns"):
        bus.subscribe(*names, patterns=["p:*"])
    with pytest.raises(redkit.InvalidInput, match="at most 100"):
        bus.subscribe(*(f"c:{i}" for i in range(900)))
    small = rk.notifications(max_channels=2)
    with pytest.raises(redkit.InvalidInput, match="at most 2"):
        small.subscribe("a", "b", patterns=["c*"])
    for bad in (0, 257, True, 1.5):
        with pytest.raises(redkit.InvalidInput, match="max_channels"):
            rk.notifications(max_channels=bad)
    with pytest.raises(redkit.InvalidInput, match="256"):
        bus.subscribe("x" * 257)
    with pytest.raises(redkit.InvalidInput, match="without its"):
        bus.subscribe(patterns=["deploy:[abc"])


async def test_a_pattern_subscription_keeps_a_bounded_cursor_that_resumes(
    rk: redkit.Redkit,
) -> None:
    bus = rk.notifications()
    channels = [f"tenant:{i}" for i in range(MAX_CURSOR_CHANNELS + 20)]
    async with bus.subscribe("tenant:0", patterns=["tenant:*"]) as sub:
        for channel in channels:
            await bus.publish(channel, channel)
        await take(sub, len(channels))
        cursor = sub.last_event_id
    assert cursor is not None
    positions = parse_cursor(cursor, ())
    assert len(positions) == MAX_CURSOR_CHANNELS
    assert "tenant:0" in positions  # a named channel keeps its place
    assert channels[-1] in positions  # the latest ones are kept, the longest idle dropped
    assert channels[1] not in positions
    await bus.publish(channels[-1], "missed")
    async with bus.subscribe("tenant:0", patterns=["tenant:*"], last_event_id=cursor) as sub:
        [event] = await take(sub, 1)
        assert event.data == "missed"


async def test_the_hub_remembers_a_bounded_number_of_pattern_channels(
    rk: redkit.Redkit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "MAX_PATTERN_CHANNELS", 5)
    bus = rk.notifications()
    async with bus.subscribe(patterns=["tenant:*"]) as sub:
        for i in range(12):
            await bus.publish(f"tenant:{i}", i)
        assert [e.data for e in await take(sub, 12)] == list(range(12))
        hub = bus._hub
        remembered = {channel for source, channel in hub.last if source is not None}
        assert remembered == {f"tenant:{i}" for i in range(7, 12)}
    assert not hub.last
