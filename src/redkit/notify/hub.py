"""The process side of the bus: one Redis subscription shared by every local subscriber.

A :class:`Hub` exists once per :class:`~redkit.Redkit` (and pub/sub flavour): however many
``rk.notifications()`` objects and subscriptions a process makes, they share it. It holds
one dedicated pub/sub connection per :class:`Link` (one on a standalone server; on a Cluster
one per node that owns a subscribed channel, since sharded pub/sub delivers a channel's
messages only on the node of its slot), subscribes each channel or pattern once, and hands
every message to the local subscribers of that channel or pattern.

**No loss, no doubles.** The hub remembers, per channel (and pattern), the id of the last
event it handed out. Every live message carries its id (``<id>\n<data>``), so:

- an id at or below the last one is a duplicate (the same event from a history fill, or a
  channel matched by a subscription and a pattern): dropped;
- while a link's connection is up, the server delivers every message on it, in publish
  order: nothing can go missing in between;
- when a link's connection drops (a server restart, ``CLIENT KILL``, a network cut; a
  watchdog PINGs a silent link and ends one that does not answer), the link reconnects by
  itself with back-off and subscribes again (on a Cluster, to the node the re-read slot map
  names: after a failover, the promoted replica); when the server confirms a channel that had
  been confirmed before, the hub reads what was published after the last id from history
  (``XRANGE``) and hands it out first, in order. Events that arrive live afterwards and
  were already read are dropped by id. A channel that had no live event yet fills from where
  its history stood when it was subscribed (read just before subscribing). A pattern's
  channels are known only by their events: a pattern refills the channels it has seen;
- when a sharded channel's slot leaves its node (a slot migration, or a failover that
  demotes the node), the server ends the subscription (an ``sunsubscribe`` the hub did not
  ask for; the connection stays up) or refuses it (``MOVED``): the hub re-reads the slot
  map, subscribes the channel on the link of the slot's owner now (opening it if need be)
  and, once that node confirms, fills from history as after a reconnect. While the slot's
  keys move, publishes land on the new owner, which this process does not listen to yet;
  the fill hands them out, in order, once.

If history no longer holds the last id (``history`` events or more went by), subscribers
get a ``gap`` event first. The links are connections of their own, outside the client's
pool (a subscribed connection cannot run commands); they exist while the hub has
subscribers and close with the last one.

**Per event**, the work is done once for all local subscribers: the message is parsed and
its JSON decoded into one :class:`~redkit.notify.Event` that every subscriber shares, with
no task, lock or timer per event (a subscriber's queue is a deque and a future to wake it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import weakref
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

import redis.exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from redkit.codec import loads
from redkit.errors import ConnectionLost, RedkitError, translate_redis_errors
from redkit.keys import key_slot
from redkit.notify.events import Event, id_key, id_time

if TYPE_CHECKING:
    from redkit.client import Redkit
    from redkit.notify.bus import Subscription

__all__ = ["Hub", "Link", "hub_for"]

log = logging.getLogger("redkit.notify")

_HUBS: weakref.WeakKeyDictionary[Redkit, dict[bool, Hub]] = weakref.WeakKeyDictionary()

# Silence on a link for this long -> PING; no answer within the command timeout -> reconnect.
PING_EVERY = 5.0
MAX_BACKOFF = 2.0
# A link that stayed up this long (seconds) was healthy: its drop is retried at once.
STABLE_AFTER = 1.0

MAX_PATTERN_CHANNELS = 10_000
"""Channels seen through patterns whose last id a hub keeps (for dedupe and refill). A
pattern can match ever new channels (one per deployment, say): beyond this, the channel
first heard longest ago is forgotten (a reconnect then does not refill it from history, and
its next event starts it afresh)."""

_MESSAGE = {b"message", b"smessage"}
_CONFIRM = {b"subscribe": "c", b"ssubscribe": "s", b"psubscribe": "p"}
_SUBSCRIBE = {"c": "SUBSCRIBE", "s": "SSUBSCRIBE", "p": "PSUBSCRIBE"}
_UNSUBSCRIBE = {"c": "UNSUBSCRIBE", "s": "SUNSUBSCRIBE", "p": "PUNSUBSCRIBE"}

_LINK_KWARGS = {"protocol": 2}
"""Links speak RESP2: a message is then a plain array. Under RESP3 it is a push, and
redis-py hands every push to a handler that formats the whole message for a debug log
line, whether or not debug logging is on: a cost per event that grows with its size."""

Source = str | None
"""Where an event came from: ``None`` for an exact channel, else the pattern that matched."""


def subscriptions_of(rk: Redkit) -> int:
    """Open subscriptions of this process on ``rk`` (every hub; none is made to answer)."""
    return sum(hub.subscriber_count() for hub in _HUBS.get(rk, {}).values())


def hub_for(rk: Redkit, sharded: bool) -> Hub:
    hubs = _HUBS.setdefault(rk, {})
    hub = hubs.get(sharded)
    if hub is None:
        hub = hubs[sharded] = Hub(rk, sharded)
    return hub


_FROM_START = "-"
"""The start of a channel whose history was empty when it was subscribed."""


class Hub:
    """Local subscribers by channel and pattern, the links, and the last id per channel."""

    def __init__(self, rk: Redkit, sharded: bool) -> None:
        self.rk = rk
        self.sharded = sharded
        self.exact: dict[str, set[Subscription]] = {}
        self.patterns: dict[str, set[Subscription]] = {}
        self.last: dict[tuple[Source, str], tuple[tuple[int, int], str]] = {}
        """Per (source, channel): the last event handed out, as (``id_key(id)``, id).
        Bounded: exact channels by the subscribed ones, pattern sources by
        ``MAX_PATTERN_CHANNELS`` (see ``_pattern_keys``)."""
        self._pattern_keys: dict[tuple[Source, str], None] = {}
        """The pattern-sourced keys of ``last``, oldest first (for the bound)."""
        self.start: dict[str, str] = {}
        """Per subscribed channel: the newest history id when it was first subscribed here
        (``-`` if history was empty). A link that drops before the channel's first live event
        has no last id; it fills from here instead. Bounded by the subscribed channels."""
        self.links: dict[str, Link] = {}
        self._channel_link: dict[str, Link] = {}
        self._pattern_link: Link | None = None
        self._moves: set[asyncio.Task[None]] = set()
        """Sharded channels on their way to the node that owns their slot now (see
        ``moved``). Bounded by the subscribed channels: one task each at most at a time."""
        self._prefix = rk.keys.group("ch", "").prefix[:-1]  # "<ns>:{ch:"
        self._prefix_bytes = self._prefix.encode()

    def __repr__(self) -> str:
        return (
            f"<notify Hub {self.rk.namespace!r} channels={len(self.exact)} "
            f"patterns={len(self.patterns)} links={len(self.links)}>"
        )

    # -- names -------------------------------------------------------------------------------

    def redis_name(self, channel_or_pattern: str) -> str:
        """The pub/sub name of a channel (or pattern): ``<ns>:{ch:<channel>}``."""
        return f"{self._prefix}{channel_or_pattern}}}"

    def stream_key(self, channel: str) -> str:
        return self.rk.keys.group("ch", channel).key("log")

    def _local_name(self, name: bytes) -> str | None:
        if not name.startswith(self._prefix_bytes) or not name.endswith(b"}"):
            return None
        return name[len(self._prefix_bytes) : -1].decode("utf-8", "replace")

    # -- subscribers -------------------------------------------------------------------------

    def subscriber_count(self) -> int:
        subs: set[Subscription] = set()
        for group in (*self.exact.values(), *self.patterns.values()):
            subs.update(group)
        return len(subs)

    async def attach(self, sub: Subscription) -> None:
        """Register ``sub`` and return once Redis has confirmed all its subscriptions."""
        # Registration is synchronous (before any await), so a concurrent detach never sees
        # a channel as unused while this subscriber is on its way in.
        wanted: dict[Link, dict[bytes, str]] = {}
        for channel in sub.channels:
            self.exact.setdefault(channel, set()).add(sub)
            link = self._link_for_channel(channel)
            wanted.setdefault(link, {})[self.redis_name(channel).encode()] = (
                "s" if self.sharded else "c"
            )
        for pattern in sub.patterns:
            self.patterns.setdefault(pattern, set()).add(sub)
            link = self._link_for_patterns()
            wanted.setdefault(link, {})[self.redis_name(pattern).encode()] = "p"
        # The links are spoken for until their names are added: a subscriber leaving
        # meanwhile must not close a link this one is about to use (it would wait for a
        # confirmation that a closed link never gives).
        for link in wanted:
            link.pending += 1
        try:
            fresh = [c for c in sub.channels if (None, c) not in self.last and c not in self.start]
            if fresh:
                await self._mark_start(fresh)
            timeout = self.rk.settings.connect_timeout + self.rk.settings.command_timeout
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*(link.add(names) for link, names in wanted.items()))
            except TimeoutError:
                raise ConnectionLost(
                    f"subscribe: the server did not confirm the subscription within "
                    f"{timeout:g} s. redkit keeps trying in the background; retry once the "
                    "server is reachable."
                ) from None
        finally:
            for link in wanted:
                link.pending -= 1

    async def _mark_start(self, channels: list[str]) -> None:
        """Note where each channel's history stood before subscribing (see ``start``).

        Read before the subscription exists, so nothing published after it is left out; an
        event published in between may come once more on a refill (by id, only once each).
        """
        client: Any = self.rk.redis
        with translate_redis_errors("subscribe (read where history stands)"):
            replies = await asyncio.gather(
                *(client.xrevrange(self.stream_key(c), count=1) for c in channels)
            )
        for channel, raw in zip(channels, replies, strict=True):
            if (None, channel) in self.last or channel in self.start:
                continue
            newest = raw[0][0] if raw else _FROM_START
            self.start[channel] = newest.decode() if isinstance(newest, bytes) else newest

    async def detach(self, sub: Subscription) -> None:
        unused: dict[Link, list[bytes]] = {}
        for channel in sub.channels:
            subs = self.exact.get(channel)
            if subs is None:
                continue
            subs.discard(sub)
            if not subs:
                del self.exact[channel]
                self.last.pop((None, channel), None)
                self.start.pop(channel, None)
                link = self._channel_link.pop(channel, None)
                if link is not None:
                    unused.setdefault(link, []).append(self.redis_name(channel).encode())
        for pattern in sub.patterns:
            subs = self.patterns.get(pattern)
            if subs is None:
                continue
            subs.discard(sub)
            if not subs:
                del self.patterns[pattern]
                for key in [k for k in self._pattern_keys if k[0] == pattern]:
                    self.last.pop(key, None)
                    del self._pattern_keys[key]
                if self._pattern_link is not None:
                    unused.setdefault(self._pattern_link, []).append(
                        self.redis_name(pattern).encode()
                    )
        # Decide everything before the first await, so that a subscriber arriving meanwhile
        # sees a consistent state (and re-subscribes what this one gave up, if it needs it).
        closing: list[Link] = []
        leaving: list[tuple[Link, list[tuple[bytes, str]]]] = []
        for link, names in unused.items():
            removed = link.remove(names)
            if self._forget_if_empty(link):
                closing.append(link)
            elif removed:
                leaving.append((link, removed))
        for link in closing:
            await link.close()
        for link, removed in leaving:
            await link.unsubscribe(removed)

    def _forget_if_empty(self, link: Link) -> bool:
        """Forget ``link`` if nothing is left on it; the caller then closes it (a later
        subscriber opens a new one)."""
        if not link.empty:
            return False
        if self.links.get(link.name) is link:
            del self.links[link.name]
        if link is self._pattern_link:
            self._pattern_link = None
        for channel in [c for c, lk in self._channel_link.items() if lk is link]:
            del self._channel_link[channel]
        return True

    async def close(self) -> None:
        moves = list(self._moves)
        for move in moves:
            move.cancel()
        for move in moves:
            with contextlib.suppress(asyncio.CancelledError):
                await move
        links = list(self.links.values())
        self.links.clear()
        self._channel_link.clear()
        self._pattern_link = None
        for link in links:
            await link.close()

    def _link_for_channel(self, channel: str) -> Link:
        link = self._channel_link.get(channel)
        if link is not None:
            return link
        if isinstance(self.rk.redis, RedisCluster) and self.sharded:
            node = self.rk.redis.get_node_from_key(self.redis_name(channel))
            link = self._node_link(node)
        else:
            link = self._main_link()
        self._channel_link[channel] = link
        return link

    def _link_for_patterns(self) -> Link:
        if self._pattern_link is None:
            if isinstance(self.rk.redis, RedisCluster):
                # Classic pub/sub is broadcast to every node of a Cluster: any node will do.
                self._pattern_link = self._node_link(self.rk.redis.get_primaries()[0])
            else:
                self._pattern_link = self._main_link()
        return self._pattern_link

    def _node_now(self, link: Link, node: Any) -> Any:
        """The node ``link`` should connect to now, from the Cluster's slot map as it stands.

        A link was opened to the node that served its channels' slots; after a failover a
        replica serves them (the slots of one node move together), and a pattern link may
        use any primary. ``node`` (the link's first node) while the map still names it."""
        cluster: Any = self.rk.redis
        manager = cluster.nodes_manager
        sharded = [name for name, kind in link.wanted.items() if kind == "s"]
        try:
            if sharded:
                return manager.get_node_from_slot(key_slot(sharded[0]))
            primaries = cluster.get_primaries()
        except redis_errors.RedisError:
            return node
        if not primaries or any(p.name == node.name for p in primaries):
            return node
        return primaries[0]

    async def relocate(self) -> None:
        """Re-read the Cluster's slot map (bounded), after a link lost its node: a failover
        may have given its slots to a replica, which the next connection must go to. A
        no-op on a standalone or Sentinel server (Sentinel clients find the master
        themselves on each connect)."""
        if not isinstance(self.rk.redis, RedisCluster):
            return
        bound = self.rk.settings.connect_timeout + self.rk.settings.command_timeout
        try:
            async with asyncio.timeout(bound):
                await self.rk.redis.nodes_manager.initialize()
        except (TimeoutError, redis_errors.RedisError, OSError) as exc:
            log.debug("notify: the Cluster's slot map could not be re-read: %s", exc)

    def moved(self, link: Link, names: Iterable[bytes], to: tuple[str, int] | None = None) -> None:
        """The server ended (``sunsubscribe``) or refused (``MOVED``, then ``to`` names the
        node it sent us to) the sharded subscriptions ``names`` on ``link``: their slot is
        served by another node now, after a slot migration or a failover. Each moves to the
        link of the node that owns its slot, where its confirmation fills what was missed
        meanwhile from history, exactly as after a reconnect.

        The move runs in a task of its own: it re-reads the slot map and waits for the new
        node's confirmation, which may have to come through ``link``'s own reader.
        """
        if not isinstance(self.rk.redis, RedisCluster):
            return  # only a Cluster moves slots (and only a Cluster hub subscribes shards)
        loop = asyncio.get_running_loop()
        for name in names:
            channel = self._local_name(name)
            if channel is None or self._channel_link.get(channel) is not link:
                continue
            released = link.release(name)
            if released is None:
                continue
            ever, waiters = released
            move = loop.create_task(
                self._move(link, channel, name, ever, waiters, to),
                name=f"redkit-notify-move-{channel}",
            )
            self._moves.add(move)
            move.add_done_callback(self._moves.discard)

    async def _move(
        self,
        old: Link,
        channel: str,
        name: bytes,
        ever: bool,
        waiters: list[asyncio.Future[None]],
        to: tuple[str, int] | None,
    ) -> None:
        new: Link | None = None
        try:
            await self.relocate()
            if (
                channel not in self.exact
                or self._channel_link.get(channel) is not old
                or name in old.wanted
            ):
                # Given up, or subscribed again meanwhile (on ``old``, whose answer decides
                # anew): that path owns the channel now.
                old.adopt(name, waiters)
                return
            new = self._node_link(self._owner(name, to, old))
            self._channel_link[channel] = new
            if ever:
                new.resumes(name)
            new.pending += 1
            if new is not old and self._forget_if_empty(old):
                await old.close()
            log.info("notify: channel %r follows its slot to node %s", channel, new.name)
            await new.add({name: "s"})
        except asyncio.CancelledError:
            for fut in waiters:
                fut.cancel()
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            return  # the new link closed before confirming: the channel was given up
        finally:
            if new is not None:
                new.pending -= 1
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _owner(self, name: bytes, to: tuple[str, int] | None, old: Link) -> Any:
        """The node to subscribe ``name`` on: the one a ``MOVED`` named, else the slot map's
        owner of its slot. Where neither is known, the node ``old`` is on: it answers again
        (with a ``MOVED`` to follow, if it no longer serves the slot)."""
        cluster: Any = self.rk.redis
        manager = cluster.nodes_manager
        if to is not None:
            node = manager.get_node(host=to[0], port=to[1])
            if node is not None:
                return node
        try:
            return manager.get_node_from_slot(key_slot(name))
        except (redis_errors.RedisError, IndexError):
            return old.node

    def _main_link(self) -> Link:
        link = self.links.get("main")
        if link is None:
            client: Any = self.rk.redis
            pool: Any = client.connection_pool

            def make() -> Any:
                # The link reconnects (and refills from history) by itself; a silent
                # reconnect-and-retry inside redis-py would hide the gap.
                kwargs = {**pool.connection_kwargs, **_LINK_KWARGS, "retry": Retry(NoBackoff(), 0)}
                return pool.connection_class(**kwargs)

            link = self.links["main"] = Link(self, "main", make)
        return link

    def _node_link(self, node: Any) -> Link:
        link = self.links.get(node.name)
        if link is None:
            made: list[Link] = []

            def make() -> Any:
                target = self._node_now(made[0], node)
                kwargs = {
                    **target.connection_kwargs,
                    **_LINK_KWARGS,
                    "retry": Retry(NoBackoff(), 0),
                }
                return target.connection_class(**kwargs)

            link = self.links[node.name] = Link(self, node.name, make, node)
            made.append(link)
        return link

    # -- history -----------------------------------------------------------------------------

    async def read_since(
        self, channel: str, after: str, upto: str = "+"
    ) -> tuple[list[Event], bool]:
        """Events of ``channel`` after ``after`` (up to ``upto``), and whether some are lost.

        One ``XRANGE`` from ``after`` itself: history keeps the newest entries, so while
        ``after`` is still there, everything after it is too. Lost means ``after`` is gone:
        history was trimmed past it (the subscriber is ``history`` events or more behind),
        the stream expired or was deleted, or ``after`` is not an id of this channel.
        """
        key = self.stream_key(channel)
        client: Any = self.rk.redis
        with translate_redis_errors(f"history of channel {channel!r}"):
            raw = await client.xrange(key, min=after, max=upto)
        events = [self.entry(channel, entry_id, fields) for entry_id, fields in raw]
        if events and events[0].id == after:
            return events[1:], False
        return events, True

    @staticmethod
    def entry(channel: str, entry_id: bytes | str, fields: dict[bytes, bytes]) -> Event:
        event_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        data = fields.get(b"d", b"null")
        return Event(
            event_id,
            channel,
            loads(data),
            id_time(event_id),
            json=data,
            traceparent=fields.get(b"t"),
        )

    @staticmethod
    def gap(channel: str, after: str, reason: str = "history_trimmed") -> Event:
        data = {"reason": reason, "after": after}
        return Event(after, channel, data, id_time(after), type="gap", json=b"")

    # -- messages from the links -------------------------------------------------------------

    def _subscribers(self, source: Source, channel: str) -> set[Subscription] | None:
        return self.exact.get(channel) if source is None else self.patterns.get(source)

    def on_message(
        self, pattern: bytes | None, name: bytes, payload: bytes
    ) -> Coroutine[Any, Any, None] | None:
        """Hand a live message to the local subscribers, synchronously.

        Returns a coroutine for the caller to await when the message showed that something
        was missed (a history read fills it in), else ``None``: the common case costs no
        coroutine at all.
        """
        channel = self._local_name(name)
        if channel is None:
            return None
        source: Source = None
        if pattern is not None:
            source = self._local_name(pattern)
            if source is None:
                return None
        subs = self._subscribers(source, channel)
        if not subs:
            return None  # an unsubscribe on its way; nobody here wants it
        head, _, json = payload.partition(b"\n")
        prev: str | None = None
        traceparent: bytes | None = None
        if b"\n" in json:
            # "<id>\nt:<traceparent>\n<data>": a publisher's trace context (redkit.otel),
            # or "<id>\n<previous id>\n<data>": the format of earlier redkit publishers,
            # still read during a rolling upgrade (compact JSON data never holds a raw
            # newline; an id starts with a digit).
            middle, _, json = json.partition(b"\n")
            if middle.startswith(b"t:"):
                traceparent = middle[2:]
            else:
                prev = middle.decode()
        event_id = head.decode()
        ms, _, seq = event_id.partition("-")
        order = (int(ms), int(seq))
        key = (source, channel)
        last = self.last.get(key)
        if last is not None:
            if order <= last[0]:
                return None
            if prev is not None and prev != last[1]:
                # Something between our last event and this one never arrived live.
                return self.fill(source, channel, last[1], upto=event_id)
        elif source is not None:
            self._new_pattern_channel(key)
        self.last[key] = (order, event_id)
        # One Event for every local subscriber: decoded once, shared (it is immutable).
        event = Event(
            event_id, channel, loads(json), order[0] / 1000, json=json, traceparent=traceparent
        )
        for sub in tuple(subs):
            sub._offer(event, order)
        if self.rk.tracing is not None:
            self.rk.tracing.delivered(event, len(subs))
        return None

    async def fill(self, source: Source, channel: str, after: str, upto: str = "+") -> None:
        """Hand out what ``channel`` published after ``after`` (from history), in order."""
        entries, lost = await self.read_since(channel, after, upto)
        if after == _FROM_START:
            # History was empty when the channel was subscribed: all it holds came later.
            # (Had more than ``history`` events come meanwhile, the oldest went unnoticed.)
            lost = False
        subs = self._subscribers(source, channel)
        if not subs:
            return
        key = (source, channel)
        if lost:
            log.warning("notify: events of %r after %s are no longer in history", channel, after)
            gap = self.gap(channel, after)
            for sub in tuple(subs):
                sub._offer(gap, id_key(after))
            if not entries:
                # Nothing to start from (the history is gone): the next live event starts
                # the channel afresh, rather than looking like another gap after ``after``.
                self.last.pop(key, None)
        for event in entries:
            last = self.last.get(key)
            order = id_key(event.id)
            if last is not None and order <= last[0]:
                continue
            if last is None and source is not None:
                self._new_pattern_channel(key)
            self.last[key] = (order, event.id)
            for sub in tuple(subs):
                sub._offer(event, order)
            if self.rk.tracing is not None:
                self.rk.tracing.delivered(event, len(subs))

    def _new_pattern_channel(self, key: tuple[Source, str]) -> None:
        keys = self._pattern_keys
        keys.pop(key, None)
        if len(keys) >= MAX_PATTERN_CHANNELS:
            oldest = next(iter(keys))
            del keys[oldest]
            self.last.pop(oldest, None)
        keys[key] = None

    def forget(self) -> None:
        """Drop every subscriber and position (the bus is closing)."""
        self.exact.clear()
        self.patterns.clear()
        self.last.clear()
        self._pattern_keys.clear()

    async def on_resubscribed(self, kind: str, name: bytes) -> None:
        """A link reconnected and the server confirmed ``name`` again: fill what was missed."""
        local = self._local_name(name)
        if local is None:
            return
        if kind == "p":
            channels = [c for (source, c) in self.last if source == local]
            for channel in channels:
                last = self.last.get((local, channel))
                if last is not None:
                    await self.fill(local, channel, last[1])
            return
        last = self.last.get((None, local))
        if last is not None:
            await self.fill(None, local, last[1])
        elif local in self.start:
            await self.fill(None, local, self.start[local])


class Link:
    """One dedicated pub/sub connection and the reader task that owns it."""

    def __init__(
        self, hub: Hub, name: str, make_connection: Callable[[], Any], node: Any = None
    ) -> None:
        self.hub = hub
        self.name = name
        self.node = node
        """The Cluster node this link was opened for (``None`` on a standalone server)."""
        self._make = make_connection
        self.wanted: dict[bytes, str] = {}
        """Redis names to be subscribed on this link, with their kind (c, s or p)."""
        self._confirmed: set[bytes] = set()
        self._ever: set[bytes] = set()
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._leaving: dict[bytes, int] = {}
        """Sharded names we asked the server to unsubscribe, with the answers still due: a
        ``sunsubscribe`` for any other name is the server's own (a slot moved). Bounded by
        the names unsubscribed on the current connection (cleared on each reconnect)."""
        self.pending = 0
        """Subscribers on their way in (between registering and adding their names)."""
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self._closed = False
        self.reconnects = 0
        self._task: asyncio.Task[None] | None = None
        self._heard = 0
        """Replies read on the current connection (the watchdog compares it over time)."""
        self._watch: asyncio.TimerHandle | None = None
        self._pings: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        state = "connected" if self._conn is not None else "connecting"
        return f"<notify Link {self.name} {state} subscriptions={len(self.wanted)}>"

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def add(self, names: dict[bytes, str]) -> None:
        """Subscribe ``names`` (if not yet) and wait until the server confirms them."""
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[None]] = []
        async with self._lock:
            fresh: list[tuple[bytes, str]] = []
            for name, kind in names.items():
                if name in self._confirmed:
                    continue
                fut: asyncio.Future[None] = loop.create_future()
                self._waiters.setdefault(name, []).append(fut)
                waits.append(fut)
                if name not in self.wanted:
                    self.wanted[name] = kind
                    fresh.append((name, kind))
            if self._task is None:
                self._task = asyncio.create_task(self._run(), name=f"redkit-notify-{self.name}")
            elif fresh and self._conn is not None:
                await self._send(self._conn, fresh, _SUBSCRIBE)
        if waits:
            await asyncio.gather(*waits)

    def remove(self, names: Iterable[bytes]) -> list[tuple[bytes, str]]:
        """Forget ``names``; return those that were subscribed, with their kind."""
        removed: list[tuple[bytes, str]] = []
        for name in names:
            kind = self.wanted.pop(name, None)
            if kind is not None:
                removed.append((name, kind))
            self._confirmed.discard(name)
            self._ever.discard(name)
            for fut in self._waiters.pop(name, ()):
                fut.cancel()
        return removed

    def release(self, name: bytes) -> tuple[bool, list[asyncio.Future[None]]] | None:
        """Forget ``name``, which moves to another link: whether it had been confirmed here
        (so the new link fills from history what was missed), and the subscribers waiting
        for its confirmation. ``None`` if ``name`` is not subscribed here."""
        if self.wanted.pop(name, None) is None:
            return None
        self._confirmed.discard(name)
        ever = name in self._ever
        self._ever.discard(name)
        return ever, self._waiters.pop(name, [])

    def adopt(self, name: bytes, waiters: list[asyncio.Future[None]]) -> None:
        """Take back the waiters of a move that did not happen: ``name`` was subscribed here
        again meanwhile (they wait for its confirmation), or given up (they are cancelled,
        as :meth:`remove` does)."""
        if name not in self.wanted or self._closed:
            for fut in waiters:
                fut.cancel()
        elif name in self._confirmed:
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        elif waiters:
            self._waiters.setdefault(name, []).extend(waiters)

    def resumes(self, name: bytes) -> None:
        """``name`` was confirmed on another link before: when this one confirms it, the hub
        fills from history what was published in between."""
        self._ever.add(name)

    def closing(self) -> bool:
        """Closed by the hub, or the Redkit it belongs to was closed (a method: it changes
        while the reader awaits)."""
        return self._closed or self.hub.rk.closed

    @property
    def empty(self) -> bool:
        """Nothing subscribed and nobody about to subscribe: the link may close."""
        return not self.wanted and not self.pending

    async def unsubscribe(self, names: list[tuple[bytes, str]]) -> None:
        async with self._lock:
            # A subscriber may have asked for a name again while we waited for the lock.
            names = [(name, kind) for name, kind in names if name not in self.wanted]
            if self._conn is not None and names:
                # Counted before sending: the answer may be read before the send returns.
                for name, kind in names:
                    if kind == "s":
                        self._leaving[name] = self._leaving.get(name, 0) + 1
                await self._send(self._conn, names, _UNSUBSCRIBE)

    async def close(self) -> None:
        self._closed = True
        for futs in self._waiters.values():
            for fut in futs:
                fut.cancel()
        self._waiters.clear()
        for ping in self._pings:
            ping.cancel()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _send(
        self, conn: Any, names: list[tuple[bytes, str]], commands: dict[str, str]
    ) -> None:
        try:
            for kind in ("c", "p"):
                batch = [name for name, k in names if k == kind]
                if batch:
                    await conn.send_command(commands[kind], *batch, check_health=False)
            # Sharded channels of one command must share a slot: one command each.
            for name, kind in names:
                if kind == "s":
                    await conn.send_command(commands["s"], name, check_health=False)
        except (redis_errors.RedisError, OSError) as exc:
            # The reader notices the dead connection too, reconnects and resubscribes all.
            log.debug("notify link %s: send failed: %s", self.name, exc)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not self.closing():
            conn: Any = None
            began: float | None = None
            try:
                async with self._lock:
                    conn = self._make()
                    await conn.connect()
                    self._confirmed.clear()
                    self._leaving.clear()
                    await self._send(conn, list(self.wanted.items()), _SUBSCRIBE)
                    self._conn = conn
                began = loop.time()
                await self._read(conn)
            except asyncio.CancelledError:
                raise
            except (redis_errors.RedisError, OSError, RedkitError) as exc:
                log.warning("notify link %s lost its connection (%s); reconnecting", self.name, exc)
            except Exception:  # a bug must not end delivery for the whole process
                log.exception("notify link %s failed; reconnecting", self.name)
            finally:
                self._conn = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.disconnect(nowait=True)
            if self.closing():
                return
            self.reconnects += 1
            # Only a link that lived a while counts as healthy: one the server connects and
            # then refuses at once (a NOPERM subscription, an ACL user without the right)
            # backs off like an unreachable server instead of reconnecting in a tight loop.
            if began is not None and loop.time() - began >= STABLE_AFTER:
                failures = 0
            # At once after a drop (a killed connection, a restart), then back off while the
            # server stays unreachable.
            if failures:
                await asyncio.sleep(min(MAX_BACKOFF, 0.05 * 2 ** (failures - 1)))
            failures += 1
            # On a Cluster the node may be gone for good (a failover promoted its replica):
            # the next connection goes where the slot map says the channels are now.
            await self.hub.relocate()

    async def _read(self, conn: Any) -> None:
        # No timeout per read (a timer set and cancelled for every message): a watchdog
        # looks at the link every PING_EVERY seconds instead, PINGs it when it was silent,
        # and ends the read (TimeoutError) when the PING got no answer either.
        hub = self.hub
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(None) as guard:
                self._heard = 0
                self._watch = loop.call_later(PING_EVERY, self._tick, conn, guard, 0, False)
                while True:
                    try:
                        message = await conn.read_response(timeout=math.inf, push_request=True)
                    except redis_errors.MovedError as exc:
                        # A subscription this node refused: its slot is served elsewhere
                        # (the slot map we subscribed by was stale). The connection is fine.
                        self._heard += 1
                        self._refused(exc)
                        continue
                    self._heard += 1
                    if not isinstance(message, list) or not message:
                        continue
                    kind = message[0]
                    if kind in _MESSAGE:
                        pending = hub.on_message(None, message[1], message[2])
                    elif kind == b"pmessage":
                        pending = hub.on_message(message[1], message[2], message[3])
                    else:
                        await self._control(kind, message)
                        continue
                    if pending is not None:
                        await pending
                        self._heard += 1  # a long history read is not silence
        except TimeoutError:
            raise redis_errors.TimeoutError("the server did not answer PING") from None
        finally:
            if self._watch is not None:
                self._watch.cancel()
                self._watch = None

    def _tick(self, conn: Any, guard: asyncio.Timeout, seen: int, pinged: bool) -> None:
        """The watchdog of :meth:`_read` (a timer callback): PING a silent link, end a dead one."""
        loop = asyncio.get_running_loop()
        if self._heard != seen:
            self._watch = loop.call_later(PING_EVERY, self._tick, conn, guard, self._heard, False)
        elif not pinged:
            ping = loop.create_task(self._ping(conn))
            self._pings.add(ping)
            ping.add_done_callback(self._pings.discard)
            timeout = self.hub.rk.settings.command_timeout
            self._watch = loop.call_later(timeout, self._tick, conn, guard, seen, True)
        else:
            self._watch = None
            guard.reschedule(loop.time())  # no answer to the PING: the link is dead

    async def _ping(self, conn: Any) -> None:
        async with self._lock:
            with contextlib.suppress(redis_errors.RedisError, OSError):
                await conn.send_command("PING", check_health=False)

    async def _control(self, kind: bytes, message: list[Any]) -> None:
        """A message other than an event: a subscription confirmed or ended by the server."""
        if kind in _CONFIRM:
            await self._confirm(_CONFIRM[kind], message[1])
        elif kind == b"sunsubscribe":
            name = message[1]
            due = self._leaving.get(name)
            if due:
                # The answer to our own SUNSUBSCRIBE.
                if due == 1:
                    del self._leaving[name]
                else:
                    self._leaving[name] = due - 1
            elif name in self.wanted:
                # Not asked for: the server dropped the subscription because the channel's
                # slot is no longer served here (migrated to another master, or this node
                # was demoted in a failover). The hub moves it to the slot's owner.
                log.info("notify link %s: the server ended the subscription of %r", self.name, name)
                self.hub.moved(self, [name])

    def _refused(self, exc: redis_errors.MovedError) -> None:
        """The node answered an ``SSUBSCRIBE`` with ``MOVED``: move the sharded names of
        that slot which it has not confirmed to the node it named."""
        slot = int(exc.slot_id)
        names = [
            name
            for name, kind in self.wanted.items()
            if kind == "s" and name not in self._confirmed and key_slot(name) == slot
        ]
        log.info("notify link %s: slot %d is served by %s:%s", self.name, slot, exc.host, exc.port)
        self.hub.moved(self, names, (exc.host, int(exc.port)))

    async def _confirm(self, kind: str, name: bytes) -> None:
        if name not in self.wanted:
            return
        self._confirmed.add(name)
        if name in self._ever:
            await self.hub.on_resubscribed(kind, name)
        else:
            self._ever.add(name)
        for fut in self._waiters.pop(name, ()):
            if not fut.done():
                fut.set_result(None)
