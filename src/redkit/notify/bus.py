"""Notifications: publish with history, subscribe with resume. ``rk.notifications(history=100)``.

::

    bus = rk.notifications(history=100)
    event_id = await bus.publish("deployment:status", {"status": "building"})
    await bus.history("deployment:status", count=10)           # -> list[Event], oldest first
    async with bus.subscribe("system:alert", patterns=["deployment:*"]) as sub:
        async for event in sub:                                # Event(id, channel, data, time)
            ...

**Publish** is one script, one round trip: it appends the event to the channel's history
stream (``XADD ... MAXLEN <history>``: exactly ``history`` entries are kept, so ``history()``
and resume promise a precise depth) and publishes it live (``PUBLISH``, or ``SPUBLISH`` on a
Cluster) in the same atomic step, so no subscriber can see an event live that history does
not have, or the reverse. The script reads nothing: two commands, a few microseconds of
server time. On a standalone or Sentinel server, concurrent publishes share round trips
(``rk.run``'s automatic pipelining).
The stream and the pub/sub channel of one topic share a hash tag
(``<ns>:{ch:<channel>}:log`` and ``<ns>:{ch:<channel>}``), hence one Cluster slot.

**Resume.** ``subscribe(..., last_event_id=...)`` first subscribes live (buffering), then
reads what the channel published after ``last_event_id`` from history, delivers it, and then
the buffered live events whose id is above the last one from history: no gap, no duplicate at
the seam. If history no longer holds ``last_event_id`` (``history`` events or more were
published since, or the channel's history expired), a ``gap`` event comes first.
For several channels, ``last_event_id`` is a cursor (see :mod:`redkit.notify.events`);
``subscription.last_event_id`` is always the right value to resume from.

**One Redis subscription per process.** Subscriptions are local: every subscription of a
process shares one pub/sub connection (see :mod:`redkit.notify.hub`), which reconnects by
itself and fills what it missed from history. Each subscription has a bounded queue
(``queue_size``) and a slow-consumer policy: ``"drop_oldest"`` (default: the oldest queued
event is dropped and a ``gap`` event tells the consumer, who can reload or resume from
history) or ``"disconnect"`` (the subscription ends with :class:`SlowConsumer`).

**Limits.** A subscription names at most ``max_channels`` channels and patterns together
(default 100, at most 256), each name at most 256 characters without control characters; a
resume cursor names at most 256 channels (a subscription whose patterns match more keeps the
positions of the 256 it heard from last). Beyond these, :class:`~redkit.errors.InvalidInput`.
An id that history does not hold (trimmed, expired, or from the future) gives a ``gap``
event and then the live events.

**Patterns** (``deployment:*``, Redis glob syntax: ``*``, ``?``, ``[...]``, ``\\``
escapes) use ``PSUBSCRIBE``; a pattern with a ``[`` left open or a trailing lone backslash is
refused. Where redkit matches a pattern itself (which channels of a resume cursor a
subscription covers) it does so in time linear in the lengths, never by backtracking, so a
hostile pattern cannot stall the process. The server matches patterns against every publish:
use a server with the fix for CVE-2022-36021 (Redis >= 6.2.11 / 7.0.9, any Valkey), whose
matcher no longer backtracks exponentially either. A Cluster's sharded
pub/sub has no patterns: there, pattern subscriptions need ``cluster_patterns=True`` on the
publishing buses too, which makes each publish also a classic ``PUBLISH`` (broadcast to every
node: the cost sharding avoids). Without it, a pattern subscription on a Cluster raises
:class:`~redkit.errors.InvalidInput`. Resume and gap filling cover the channels a pattern
subscription has already seen (they are in its cursor); a channel that first appears while a
pattern subscriber is away is delivered from its next event on.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from redkit._codegen import IS_ASYNC, async_only
from redkit._trace import traced
from redkit.codec import dumps, milliseconds
from redkit.errors import InvalidInput, translate_redis_errors
from redkit.notify.events import (
    MAX_CURSOR_CHANNELS,
    Event,
    SlowConsumer,
    check_channel,
    check_event_id,
    check_pattern,
    encode_cursor,
    glob_matches,
    id_key,
    parse_cursor,
)
from redkit.notify.hub import Hub, hub_for
from redkit.scripts import ScriptArg, ScriptSet

if TYPE_CHECKING:
    from redkit.client import Redkit

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_CHANNELS",
    "NotificationBus",
    "SlowConsumerPolicy",
    "Subscription",
]

SCRIPTS = ScriptSet(__package__)
_PUBLISH = SCRIPTS["publish"]

_CHANNEL_CACHE = 1024
"""Channels whose keys a bus remembers (see ``NotificationBus.publish``)."""

DEFAULT_MAX_BYTES = 64 * 1024
"""Default cap on one event's JSON data: notifications are small, and every subscriber's
output buffer in the server holds them."""

DEFAULT_MAX_CHANNELS = 100
"""Default cap on the channels plus patterns of one subscription: each is a subscription in
the server and a history read on resume, and the web layer lets a client name them."""

SlowConsumerPolicy = Literal["drop_oldest", "disconnect"]


class Counts:
    """This process's notification figures since it started, for ``/metrics``: plain
    integers, so counting costs the hot paths an addition (no lock, no label lookup)."""

    __slots__ = ("delivered", "dropped", "published")

    def __init__(self) -> None:
        self.published = 0
        """Events published (accepted by the server)."""
        self.delivered = 0
        """Events handed to a local subscription (one per subscription per event)."""
        self.dropped = 0
        """Events a slow subscription lost (dropped oldest, or cleared on disconnect)."""


COUNTS = Counts()


class NotificationBus:
    """Channels with history and resume. Make it with ``rk.notifications(history=100)``.

    - ``history``: events kept per channel (exactly; at least 1).
    - ``history_ttl``: optionally, a channel's history expires this long after its last
      publish (seconds or timedelta); by default it stays, bounded by ``history``.
    - ``max_bytes``: cap on one event's data as JSON (default 64 KiB).
    - ``queue_size`` / ``slow_consumer``: the default bound and policy of subscriptions.
    - ``max_channels``: most channels plus patterns one subscription may name (default
      100, at most 256); more raise :class:`~redkit.errors.InvalidInput`.
    - ``sharded``: sharded pub/sub (``SPUBLISH``/``SSUBSCRIBE``); default: on a Cluster
      whose servers have it (Valkey, Redis >= 7.0; a Redis 6.2 Cluster uses classic pub/sub).
    - ``cluster_patterns``: on a Cluster, also publish classically so that pattern
      subscriptions work (see the module docstring).

    Bus objects are cheap: every bus of one :class:`~redkit.Redkit` shares the process's
    Redis subscription.
    """

    def __init__(
        self,
        rk: Redkit,
        *,
        history: int = 100,
        history_ttl: float | timedelta | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        queue_size: int = 1000,
        slow_consumer: SlowConsumerPolicy = "drop_oldest",
        sharded: bool | None = None,
        cluster_patterns: bool = False,
        max_channels: int = DEFAULT_MAX_CHANNELS,
    ) -> None:
        if (
            isinstance(max_channels, bool)
            or not isinstance(max_channels, int)
            or not 1 <= max_channels <= MAX_CURSOR_CHANNELS
        ):
            raise InvalidInput(
                f"max_channels must be a whole number from 1 to {MAX_CURSOR_CHANNELS}, "
                f"got {max_channels!r}"
            )
        self.max_channels = max_channels
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise InvalidInput(f"history must be a whole number >= 1, got {history!r}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise InvalidInput(f"max_bytes must be a whole number >= 1, got {max_bytes!r}")
        self.rk = rk
        self.history_size = history
        self.history_ttl_ms = 0 if history_ttl is None else milliseconds(history_ttl, "history_ttl")
        self.max_bytes = max_bytes
        self.queue_size = _check_queue_size(queue_size)
        self.slow_consumer: SlowConsumerPolicy = _check_policy(slow_consumer)
        if sharded is None:
            sharded = rk.is_cluster and rk.has_sharded_pubsub
        self.sharded = bool(sharded)
        self.cluster_patterns = bool(cluster_patterns)
        if IS_ASYNC:
            # Sync: publish and history only. Subscribing needs the hub's reader, a task on
            # the event loop; sync code subscribes through the async API (or the web layer).
            self._hub = hub_for(rk, self.sharded)
        also_classic = self.sharded and self.cluster_patterns
        self._publish_args = (
            self.history_size,
            int(self.sharded),
            int(also_classic),
            self.history_ttl_ms,
        )
        self._channels: dict[str, tuple[list[str], str, str]] = {}

    def __repr__(self) -> str:
        flavour = " sharded" if self.sharded else ""
        subscribers = f" subscribers={self._hub.subscriber_count()}" if IS_ASYNC else ""
        return (
            f"<NotificationBus{flavour} namespace={self.rk.namespace!r} "
            f"history={self.history_size}{subscribers}>"
        )

    # -- publishing --------------------------------------------------------------------------

    @traced("notify.publish")
    async def publish(self, channel: str, data: Any) -> str:
        """Append ``data`` to ``channel``'s history and deliver it live; return its event id.

        One round trip. ``data`` must be JSON-serialisable and at most ``max_bytes`` as JSON,
        else :class:`~redkit.errors.InvalidInput` is raised and nothing is published.
        """
        # The hot path: the channel's keys come from a small cache (a name is checked and
        # its keys built once), the constant arguments are built once per bus.
        known = self._channels.get(channel)
        if known is None:
            known = self._channel_keys(channel)
        payload = dumps(data, max_bytes=self.max_bytes, what=known[1])
        tracing = self.rk.tracing
        # The last two: the channel name, and the traceparent when tracing is on.
        traceparent = "" if tracing is None else tracing.traceparent()
        args: list[ScriptArg] = [payload, *self._publish_args, known[2], traceparent]
        event_id = await self.rk.run(_PUBLISH, known[0], args)
        COUNTS.published += 1
        return event_id.decode() if isinstance(event_id, bytes) else str(event_id)

    def _channel_keys(self, channel: str) -> tuple[list[str], str, str]:
        """The script's keys (the history stream), the name for errors, the pub/sub name
        (same hash tag as the stream: one Cluster slot)."""
        check_channel(channel)
        group = self.rk.keys.group("ch", channel)
        known = ([group.key("log")], f"event data for {channel!r}", group.key())
        if len(self._channels) >= _CHANNEL_CACHE:
            # Bounded: a bus that publishes to ever new channels (one per user, say) keeps
            # at most this many; starting over costs one key build per channel.
            self._channels.clear()
        self._channels[channel] = known
        return known

    # -- reading history ---------------------------------------------------------------------

    async def history(
        self, channel: str, count: int | None = None, after: str | None = None
    ) -> list[Event]:
        """Events of ``channel``, oldest first.

        Without ``after``: the newest ``count`` (default: all kept). With ``after`` (an event
        id): the first ``count`` events published after it.
        """
        check_channel(channel)
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 1
        ):
            raise InvalidInput(f"count must be a whole number >= 1 or None, got {count!r}")
        key = (self._channels.get(channel) or self._channel_keys(channel))[0][0]
        client: Any = self.rk.redis
        if after is not None:
            check_event_id(after, "after")
        with translate_redis_errors(f"history of channel {channel!r}"):
            if after is None:
                raw = await client.xrevrange(key, count=count)
                raw.reverse()
            else:
                raw = await client.xrange(key, min="(" + after, count=count)
        return [Hub.entry(channel, entry_id, fields) for entry_id, fields in raw]

    # -- subscribing -------------------------------------------------------------------------

    @async_only
    def subscribe(
        self,
        *channels: str,
        patterns: Iterable[str] = (),
        last_event_id: str | Mapping[str, str] | None = None,
        queue_size: int | None = None,
        slow_consumer: SlowConsumerPolicy | None = None,
    ) -> Subscription:
        """A subscription to ``channels`` and ``patterns``; use it with ``async with``.

        ``last_event_id``: resume after this event (a plain id for the named channels, a
        cursor from ``Subscription.last_event_id``, or a ``{channel: id}`` mapping).
        """
        return Subscription(
            self,
            channels,
            tuple(patterns) if not isinstance(patterns, str) else (patterns,),
            last_event_id,
            self.queue_size if queue_size is None else _check_queue_size(queue_size),
            self.slow_consumer if slow_consumer is None else _check_policy(slow_consumer),
        )

    @async_only
    async def close(self) -> None:
        """End every subscription of this process's shared hub and close its connections."""
        hub = self._hub
        subs: set[Subscription] = set()
        for group in (*hub.exact.values(), *hub.patterns.values()):
            subs.update(group)
        for sub in subs:
            sub._end()
        hub.forget()
        await hub.close()


def _check_queue_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"queue_size must be a whole number >= 1, got {value!r}")
    return value


def _check_policy(value: object) -> SlowConsumerPolicy:
    if value == "drop_oldest":
        return "drop_oldest"
    if value == "disconnect":
        return "disconnect"
    raise InvalidInput(f"slow_consumer must be 'drop_oldest' or 'disconnect', got {value!r}")


_TIMED_OUT = object()


@async_only
def _expire(waiter: asyncio.Future[object]) -> None:
    if not waiter.done():
        waiter.set_result(_TIMED_OUT)


@async_only
class Subscription:
    """Events of some channels and patterns, in order per channel. From ``bus.subscribe()``.

    ``async with bus.subscribe(...) as sub: async for event in sub: ...``; or
    ``await sub.get(timeout=...)`` (``None`` when nothing came in time or the subscription
    ended). :attr:`last_event_id` is where to resume after a disconnect.
    """

    def __init__(
        self,
        bus: NotificationBus,
        channels: Iterable[str],
        patterns: tuple[str, ...],
        last_event_id: str | Mapping[str, str] | None,
        queue_size: int,
        slow_consumer: SlowConsumerPolicy,
    ) -> None:
        self.bus = bus
        # Counted before anything else is looked at: the names may come from a client.
        channels = list(itertools.islice(channels, bus.max_channels + 1))
        patterns = patterns[: bus.max_channels + 1]
        if len(channels) + len(patterns) > bus.max_channels:
            raise InvalidInput(
                f"a subscription names at most {bus.max_channels} channels and patterns "
                "together (rk.notifications(max_channels=...)); subscribe to a pattern, or "
                "split the names over several subscriptions"
            )
        self.channels = tuple(dict.fromkeys(check_channel(c) for c in channels))
        self.patterns = tuple(dict.fromkeys(check_pattern(p) for p in patterns))
        if not self.channels and not self.patterns:
            raise InvalidInput("subscribe() needs at least one channel or pattern")
        if self.patterns and bus.sharded and not bus.cluster_patterns:
            raise InvalidInput(
                "pattern subscriptions on a Cluster need rk.notifications(cluster_patterns="
                "True) on the subscribing and the publishing side (sharded pub/sub has no "
                "patterns); or subscribe to the channels by name"
            )
        self.queue_size = queue_size
        self.slow_consumer: SlowConsumerPolicy = slow_consumer
        resume = {} if last_event_id is None else parse_cursor(last_event_id, self.channels)
        # Only channels this subscription covers: a cursor must not open other channels'
        # history (the web layer passes client-supplied Last-Event-ID headers here).
        self._resume = {c: i for c, i in resume.items() if self.covers(c)}
        self._cursor: dict[str, str] = dict(self._resume)
        self._seen: dict[str, tuple[int, int]] = {c: id_key(i) for c, i in self._resume.items()}
        self._queue: deque[Event] = deque()
        self._dropped: dict[str, int] = {}
        self._buffer: list[tuple[Event, tuple[int, int]]] | None = None
        self._waiter: asyncio.Future[object] | None = None
        self._failed: SlowConsumer | None = None
        self._active = False
        self._ended = False

    def __repr__(self) -> str:
        names = [*self.channels, *self.patterns]
        state = "active" if self._active else ("ended" if self._ended else "new")
        return f"<Subscription {', '.join(names)} {state} queued={len(self._queue)}>"

    def covers(self, channel: str) -> bool:
        """Whether events of ``channel`` reach this subscription."""
        return channel in self.channels or any(glob_matches(p, channel) for p in self.patterns)

    @property
    def last_event_id(self) -> str | None:
        """Where to resume: the id of the last event taken (one channel), else a cursor."""
        if not self._cursor:
            return None
        if len(self.channels) == 1 and not self.patterns and len(self._cursor) == 1:
            return next(iter(self._cursor.values()))
        return encode_cursor(self._cursor)

    @property
    def closed(self) -> bool:
        return self._ended

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._active or self._ended:
            raise InvalidInput("a Subscription can be entered once; call bus.subscribe() again")
        hub = self.bus._hub
        self._active = True
        self._buffer = []
        try:
            await hub.attach(self)
            # Live events now collect in the buffer; history fills in what came before.
            for channel, after in self._resume.items():
                entries, lost = await hub.read_since(channel, after)
                if lost:
                    self._push(hub.gap(channel, after))
                    if not entries:
                        # Nothing after ``after`` (the history is gone, or the id is from
                        # the future: a made-up or another server's): it is no position, and
                        # kept as one it would hide every live event below it.
                        self._seen.pop(channel, None)
                        self._cursor.pop(channel, None)
                self._replay(entries)
        except BaseException:
            self._buffer = None
            self._active = False
            self._ended = True
            await hub.detach(self)
            raise
        buffered, self._buffer = self._buffer, None
        for event, key in buffered:
            self._offer(event, key)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Leave: the shared Redis subscription ends with the last local subscriber."""
        if not self._active:
            return
        self._end()
        await self.bus._hub.detach(self)

    def _end(self) -> None:
        self._active = False
        self._ended = True
        self._wake()

    def _replay(self, events: list[Event]) -> None:
        for event in events:
            self._accept(event, id_key(event.id))

    # -- receiving (called by the hub, synchronously) ---------------------------------------

    def _offer(self, event: Event, key: tuple[int, int]) -> None:
        """Take ``event`` (``key``: its id as ``id_key()``, computed once for all subscribers)."""
        if self._buffer is not None:
            self._buffer.append((event, key))
            return
        if self._ended or self._failed is not None:
            return
        self._accept(event, key)

    def _accept(self, event: Event, key: tuple[int, int]) -> None:
        if event.type == "event":
            seen = self._seen.get(event.channel)
            if seen is not None and key <= seen:
                return  # already delivered (history and live overlap, or channel + pattern)
            if seen is None and len(self._seen) >= MAX_CURSOR_CHANNELS:
                # Bounded (patterns may match ever new channels): forget the channel seen
                # first; only a duplicate of its very last event could then come through.
                del self._seen[next(iter(self._seen))]
            self._seen[event.channel] = key
        if len(self._queue) >= self.queue_size:
            self._push(event)  # the slow-consumer policy decides
            return
        # _push's usual case inline: this runs for every subscriber of every event.
        COUNTS.delivered += 1
        self._queue.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _push(self, event: Event) -> None:
        if len(self._queue) >= self.queue_size:
            if self.slow_consumer == "disconnect":
                self._failed = SlowConsumer(
                    f"subscription to {', '.join([*self.channels, *self.patterns])} fell "
                    f"{self.queue_size} events behind and was disconnected; resubscribe with "
                    "last_event_id=sub.last_event_id to catch up from history"
                )
                COUNTS.dropped += sum(1 for e in self._queue if e.type == "event")
                self._queue.clear()
                self._wake()
                return
            dropped = self._queue.popleft()
            if dropped.type == "event":
                COUNTS.dropped += 1
                self._dropped[dropped.channel] = self._dropped.get(dropped.channel, 0) + 1
        COUNTS.delivered += 1
        self._queue.append(event)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- consuming ---------------------------------------------------------------------------

    def _take(self) -> Event | None:
        if self._dropped:
            channel, count = next(iter(self._dropped.items()))
            del self._dropped[channel]
            gap = Hub.gap(channel, self._cursor.get(channel, "0-0"), "slow_consumer")
            gap.data["dropped"] = count
            return gap
        if not self._queue:
            return None
        event = self._queue.popleft()
        if event.type == "event":
            cursor = self._cursor
            # Re-inserted, so the dict runs from the longest idle channel to the latest.
            if cursor.pop(event.channel, None) is None and len(cursor) >= MAX_CURSOR_CHANNELS:
                self._forget_one()
            cursor[event.channel] = event.id
        return event

    def _forget_one(self) -> None:
        """Make room in the cursor (bounded: see ``MAX_CURSOR_CHANNELS``): drop the longest
        idle channel a pattern brought; named channels keep their place."""
        for channel in self._cursor:
            if channel not in self.channels:
                del self._cursor[channel]
                return

    async def get(self, timeout: float | None = None) -> Event | None:  # noqa: ASYNC109
        """The next event; ``None`` if none came within ``timeout`` or the subscription ended.

        Raises :class:`SlowConsumer` if the subscription was disconnected for falling behind.
        """
        if not self._active and not self._ended:
            raise InvalidInput("enter the subscription first: async with bus.subscribe(...)")
        while True:
            event = self._take()
            if event is not None:
                return event
            if self._failed is not None:
                raise self._failed
            if self._ended:
                return None
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            self._waiter = waiter
            # A plain timer that wakes the waiter, rather than asyncio.timeout(): this runs
            # once per event for every waiting subscriber (1,000 of them on a fan-out), and a
            # timer is a fraction of a timeout context's cost.
            timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if waiter.result() is _TIMED_OUT:
                return self._take()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        event = await self.get()
        if event is None:
            raise StopAsyncIteration
        return event
