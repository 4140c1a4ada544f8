"""The cache: ``get``/``set``/``delete``/``invalidate`` and the ``@cached`` decorator.

**One round trip per hit.** A lookup is one script (``get.lua``) that reads the entry, decides
with the server's clock whether it is fresh, stale or due for an early refresh, and returns the
value with its age. On a hit it writes nothing: a write would make every hit a replicated,
AOF-logged script (measured ~15% slower), so hits, misses, stale serves, recomputes and early
refreshes are counted in memory and added to one small stats hash per cache about once a
second (:meth:`Cache.stats` flushes this process's counts first; ``drain()`` on shutdown).
Callers of one decorated function with the same arguments that arrive while a lookup is in
flight in this process share it.

**Stampede protection, both kinds.**

* *Cold miss, single flight.* The lookup that misses takes a lock (a hash with a token and a
  deadline, ``lock_timeout``) in the same script; the caller computes and ``put.lua`` stores
  the value, releases the lock and pushes one token per registered waiter onto a per-entry
  notify list. Other callers are registered as waiters by their lookup and ``BLPOP`` that list:
  no polling. If the holder dies, its lock expires; a waiter's ``BLPOP`` ends at the lock's
  deadline, its next lookup takes the lock and computes. A waiter woken without a value (the
  holder failed) computes by itself rather than queueing again.
* *Hot key, XFetch* (Vattani et al., VLDB 2015). Each entry stores ``delta``, the measured
  compute time. A hit recomputes early when ``now - delta * beta * ln(rand) >= expiry``; the
  script takes the lock so that one caller refreshes (in the background) while everyone keeps
  getting hits. Optional RFC 5861 windows: ``stale_while_revalidate`` serves the old value
  while one caller refreshes; ``stale_if_error`` keeps it as the fallback when the recompute
  raises.

**Invalidation by tag, without KEYS or SCAN, correct on a Cluster.** The keyspace of a cache is
split into ``shards`` (default 16 on a Cluster, 1 on a single server); each shard is one hash
tag, chosen so the shards spread evenly over the 16384 slots (so over the masters). An entry,
its lock and notify list, and the shard's *tag sets* live in the entry's shard, so every script
touches one slot. A tag set is a sorted set ``entry key -> expiry``: trimmed of expired members
on every write, with a TTL no shorter than its longest-lived member, so it stays bounded.
``invalidate(tag)`` runs one script per shard (concurrently) that deletes the live members of
the tag's set: O(entries of that tag) + O(shards), and it returns the number of entries it
deleted. The trade-off against tag *version counters*: a version check on every read would
need the tag's counter in the entry's slot (impossible on a Cluster without copying it into
every shard, which costs the same fan-out at invalidation and adds reads on every hit) and
leaves dead entries in memory until they expire; tag sets keep hits to a plain ``GET`` in the
script and free memory at once, at the price of a write per tag when a value is stored. Each
shard also remembers when a tag was last invalidated (a trimmed sorted set), so a value whose
computation *started* before an invalidation is never stored after it.

Re-storing a key with other tags leaves it in its old tags' sets until they are trimmed:
invalidating an old tag may then delete the entry too (an extra miss, never a stale hit).

**Failure policy.** ``fail_open=True`` (default): when the server is unreachable the decorator
(and the middleware) compute without the cache. The direct calls (``get``, ``set``, ...)
always raise :class:`~redkit.errors.ConnectionLost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import itertools
import logging
import math
import random
import re
import secrets
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, NamedTuple, ParamSpec, TypeVar

import orjson

from redkit._codegen import IS_ASYNC, async_only
from redkit._trace import traced
from redkit.codec import DEFAULT_MAX_BYTES, dumps, milliseconds, refuse_non_finite, seconds
from redkit.errors import ConnectionLost, InvalidInput, translate_redis_errors
from redkit.keys import CACHE_NAME, Keyspace
from redkit.scripts import ScriptSet

if TYPE_CHECKING:
    from redkit.client import Redkit

__all__ = ["Cache", "CacheStats"]

log = logging.getLogger("redkit.cache")
SCRIPTS = ScriptSet(__package__)

P = ParamSpec("P")
R = TypeVar("R")

# Lookup statuses returned by get.lua.
WAIT: Final = 0
MISS_LOCKED: Final = 1
HIT: Final = 2
HIT_REFRESH: Final = 3
STALE: Final = 4
STALE_REFRESH: Final = 5
MISS: Final = 6

# Payload kinds (the first byte after the header) and compression (the second).
KIND_JSON: Final = ord("J")
KIND_BYTES: Final = ord("B")
KIND_RESPONSE: Final = ord("R")
PLAIN: Final = ord("-")
ZLIB: Final = ord("z")

_MAX_KEY_CHARS = 256
_SCALARS = frozenset({str, int, bool, type(None)})
_SLOTS = 16384
_STAT_FIELDS = ("hits", "misses", "stale", "recomputes", "early")


def _shard_idents(count: int) -> tuple[str, ...]:
    """Hash-tag identifiers for ``count`` shards, one in each ``1/count`` of the slot space.

    Deterministic, so every process finds the same ones; the count is part of the identifier,
    so processes configured with different counts never mix their entries.
    """
    probe = Keyspace("probe")
    idents: list[str] = []
    for i in range(count):
        low, high = i * _SLOTS // count, (i + 1) * _SLOTS // count
        j = 0
        while not low <= probe.group("cache", f"{count}.{i}.{j}").slot < high:
            j += 1
        idents.append(f"{count}.{i}.{j}")
    return tuple(idents)


@dataclass(frozen=True, slots=True)
class _Shard:
    """The keys one shard shares: all in one hash slot."""

    base: str
    """``<ns>:{cache:<shard>}:<name>:``; every key of the shard starts with it."""

    @property
    def invalidations(self) -> str:
        return self.base + "inv"  # bounded: trimmed to the keep time, PX keep time

    def tag(self, tag: str) -> str:
        return self.base + "t:" + tag  # bounded: trimmed zset, PX >= longest member

    @property
    def tag_index(self) -> str:
        # bounded: trimmed zset of at most 10,000 tag names, PX >= longest member (put.lua)
        return self.base + "tags"


class EntryKeys(NamedTuple):
    """The keys of one entry (same slot as its shard)."""

    shard: _Shard
    entry: str
    lock: str
    notify: str


class Lookup(NamedTuple):
    """What ``get.lua`` answered."""

    status: int
    raw: bytes | None
    age: float
    """Seconds since the value was stored."""
    lock_ttl: float
    """Seconds left on the lock, for a waiter."""
    now_us: int
    """Server time of the lookup (microseconds); a computation that follows started then."""


@dataclass(frozen=True, slots=True)
class Policy:
    """How long an entry stays fresh, and its stale windows, in ms."""

    ttl_ms: int
    swr_ms: int
    sie_ms: int
    beta: float


@dataclass(frozen=True)
class CacheStats:
    """Counters of one cache, for every process that uses it.

    Counted per lookup: callers in one process that share an in-flight lookup count once.
    Each process adds its counts to the shared hash about once a second (``stats_interval``),
    so that a hit writes nothing; :meth:`Cache.stats` adds this process's pending counts first.
    """

    hits: int = 0
    misses: int = 0
    stale: int = 0
    """Stale values served (stale-while-revalidate, stale-if-error)."""
    recomputes: int = 0
    """Values computed and stored by the decorator or the middleware."""
    early: int = 0
    """Early refreshes started by XFetch."""

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses + self.stale
        return (self.hits + self.stale) / total if total else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "stale": self.stale,
            "recomputes": self.recomputes,
            "early": self.early,
            "hit_ratio": round(self.hit_ratio, 4),
        }


class _Retry(Exception):
    """The lookup this caller shared was abandoned (its caller was cancelled): look up again."""


# The entry's header, as get.lua reads it: fresh-until, created, compute time (ms).
_HEADER = re.compile(rb"(\d+):(\d+):(\d+):\d+\|")

_COUNTED = {
    HIT: "hits",
    HIT_REFRESH: "hits",
    STALE: "stale",
    STALE_REFRESH: "stale",
    MISS_LOCKED: "misses",
    WAIT: "misses",
    MISS: "misses",
}


def encode(value: Any, *, max_bytes: int, compress_above: int | None) -> bytes:
    """A payload: kind byte, compression byte, data (bytes raw, anything else as JSON)."""
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        if len(data) > max_bytes:
            raise InvalidInput(
                f"cached value is {len(data):,} bytes, over the {max_bytes:,}-byte cap; "
                "raise it with max_bytes=..."
            )
        kind = b"B"
    else:
        data = dumps(value, max_bytes=max_bytes, what="cached value")
        kind = b"J"
    return pack(kind, data, compress_above)


def pack(kind: bytes, data: bytes, compress_above: int | None) -> bytes:
    if compress_above is not None and len(data) > compress_above:
        return kind + b"z" + zlib.compress(data, 1)
    return kind + b"-" + data


def unpack(raw: bytes) -> tuple[int, memoryview | bytes]:
    """(kind, data) of a stored entry (header stripped, decompressed)."""
    start = raw.index(b"|", 0, 80) + 1
    data: memoryview | bytes = memoryview(raw)[start + 2 :]
    if raw[start + 1] == ZLIB:
        data = zlib.decompress(data)
    return raw[start], data


def decode(raw: bytes) -> Any:
    kind, data = unpack(raw)
    if kind == KIND_BYTES:
        return bytes(data)
    if kind == KIND_JSON:
        return orjson.loads(data)
    raise InvalidInput("this entry was stored by the HTTP middleware, not as a value")


def _hashed(text: str) -> str:
    """Long keys and tags are hashed so that key names stay small."""
    if len(text) <= _MAX_KEY_CHARS:
        return text
    return "#" + hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


def _tag_list(tags: Iterable[str] | None) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = [tags]
    out: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            raise InvalidInput(f"a tag must be a non-empty string, got {tag!r}")
        out.append(tag)
    return out


class Cache:
    """A value cache with single flight, XFetch, stale windows and tag invalidation.

    Make one with ``rk.cache(default_ttl=300)``. Options (keyword-only):

    * ``name``: caches with different names have separate entries, tags and stats; 1-64
      characters from ASCII letters, digits and ``_ . -``.
    * ``stale_while_revalidate``, ``stale_if_error``: RFC 5861 windows (seconds, default 0).
    * ``beta``: XFetch eagerness (1.0 as in the paper; 0 turns early refresh off).
    * ``lock_timeout``: how long the single-flight holder may compute before another caller
      takes over (default 10 s); waiters wait at most this long.
    * ``max_bytes``: cap on one stored value (default 1 MiB); ``compress_above``: zlib the
      payload above this many bytes (default off).
    * ``shards``: see the module docs; every process of one deployment must use the same.
    * ``fail_open``: compute without the cache when the server is unreachable (default).
    * ``stats_interval``: how often this process adds its counts to the shared stats.
    """

    def __init__(
        self,
        rk: Redkit,
        *,
        default_ttl: float | timedelta = 300,
        name: str = "default",
        stale_while_revalidate: float | timedelta = 0,
        stale_if_error: float | timedelta = 0,
        beta: float = 1.0,
        lock_timeout: float | timedelta = 10,
        max_bytes: int = DEFAULT_MAX_BYTES,
        compress_above: int | None = None,
        shards: int | None = None,
        fail_open: bool = True,
        stats_interval: float | timedelta = 1.0,
    ) -> None:
        CACHE_NAME.check(name, "cache name")
        shards = shards if shards is not None else (16 if rk.is_cluster else 1)
        if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= 1024:
            raise InvalidInput(f"shards must be an integer from 1 to 1024, got {shards!r}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise InvalidInput(f"max_bytes must be a positive integer, got {max_bytes!r}")
        if compress_above is not None and (
            isinstance(compress_above, bool)
            or not isinstance(compress_above, int)
            or compress_above < 0
        ):
            raise InvalidInput(f"compress_above must be None or bytes >= 0, got {compress_above!r}")
        self.rk = rk
        self.name = name
        self.default_ttl = seconds(default_ttl, "default_ttl")
        self.policy = self._policy(default_ttl, stale_while_revalidate, stale_if_error, beta)
        self.lock_ms = milliseconds(lock_timeout, "lock_timeout")
        self.max_bytes = max_bytes
        self.compress_above = compress_above
        self.fail_open = fail_open
        self._shards = tuple(
            _Shard(rk.keys.group("cache", ident).key(name) + ":") for ident in _shard_idents(shards)
        )
        # Remember invalidations long enough to outlast any computation that holds the lock.
        self._keep_ms = max(600_000, 2 * self.lock_ms)
        # A BLPOP must return before the client's socket timeout gives up on the reply.
        self._wait_chunk = max(0.05, rk.settings.command_timeout * 0.75)
        # Stats: one small hash per cache (bounded: five counters), fed in batches.
        self._stats_key = rk.keys.group("cache", "stats").key(name)
        self._names_key = cache_names_key(rk)
        self._stats_interval = seconds(stats_interval, "stats_interval")
        self._pending: dict[str, int] = {}
        # Lock tokens: a 128-bit secret per cache and a counter (unique, and cheaper per
        # lookup than a fresh token from the OS).
        self._token_prefix = secrets.token_hex(16) + "."
        self._token_counter = itertools.count()
        if IS_ASYNC:
            # Sync: no in-process sharing of lookups and waits (each thread is a caller of
            # its own; the server's lock still lets one of them compute), and the stats are
            # written by the call that finds them due, not by a timer.
            self._flush_handle: asyncio.TimerHandle | None = None
            self._inflight: dict[str, list[asyncio.Future[Any]]] = {}
            self._waits: dict[str, asyncio.Future[bool]] = {}
            self._tasks: set[asyncio.Task[Any]] = set()
        else:
            self._flush_due = time.monotonic() + self._stats_interval
            self._threads: set[threading.Thread] = set()

    def __repr__(self) -> str:
        return (
            f"<Cache {self.name!r} namespace={self.rk.namespace!r} ttl={self.default_ttl:g}s "
            f"shards={len(self._shards)}>"
        )

    @staticmethod
    def _policy(
        ttl: float | timedelta,
        swr: float | timedelta,
        sie: float | timedelta,
        beta: float,
    ) -> Policy:
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 <= beta < 1e6:
            raise InvalidInput(f"beta must be a number >= 0, got {beta!r}")
        return Policy(
            milliseconds(ttl, "ttl"),
            milliseconds(swr, "stale_while_revalidate", allow_zero=True),
            milliseconds(sie, "stale_if_error", allow_zero=True),
            float(beta),
        )

    # -- keys -------------------------------------------------------------------------------

    def keys_for(self, key: str) -> EntryKeys:
        """The keys of ``key``'s entry (its shard is a hash of the key)."""
        if not isinstance(key, str) or not key:
            raise InvalidInput(f"a cache key must be a non-empty string, got {key!r}")
        key = _hashed(key)
        shard = self._shards[zlib.crc32(key.encode()) % len(self._shards)]
        base = shard.base
        return EntryKeys(shard, base + "e:" + key, base + "l:" + key, base + "n:" + key)

    # -- the building blocks (shared with the middleware) --------------------------------------

    @traced("cache.get")
    async def lookup(self, keys: EntryKeys, mode: str, token: str, beta: float) -> Lookup:
        """One round trip: a plain read for a fresh hit, else ``get.lua``."""
        # XFetch's random part is drawn here (randomness, not time: the clock is the server's).
        gap = -beta * math.log(1.0 - random.random()) if beta else 0
        if IS_ASYNC and self.rk.pipeline is not None:
            hit = await self._plain_hit(keys, mode, gap)
            if hit is not None:
                return hit
        status, raw, age, pttl, now = await self.rk.run(
            SCRIPTS["get"],
            [keys.entry, keys.lock, keys.notify],
            [mode, gap, token, self.lock_ms],
        )
        self.count(_COUNTED[status])
        if status == HIT_REFRESH:
            self.count("early")
        return Lookup(status, raw or None, age / 1000, pttl / 1000, now)

    @async_only  # it reads through the automatic pipeline
    async def _plain_hit(self, keys: EntryKeys, mode: str, gap: float) -> Lookup | None:
        """A fresh hit (or a peek's miss) from ``GET`` + ``TIME``, or None: ask the script.

        A hit writes nothing, so it needs no script; this is ``get.lua``'s hit test, made in
        Python on the same server time. Anything else (a miss to lock, a stale value, an
        early refresh that XFetch draws) goes to the script, which decides again atomically.
        """
        assert self.rk.pipeline is not None
        raw, now_us = await self.rk.pipeline.read_at_server_time(("GET", keys.entry))
        now = now_us // 1000
        if raw is None:
            if mode != "peek":
                return None
            self.count(_COUNTED[MISS])
            return Lookup(MISS, None, 0.0, 0.0, now_us)
        header = _HEADER.match(raw)
        if header is None:
            return None  # not an entry this code wrote: let the script answer
        fresh, created, delta = (int(x) for x in header.groups())
        if now < fresh and (mode == "peek" or delta == 0 or now + delta * gap < fresh):
            self.count(_COUNTED[HIT])
            return Lookup(HIT, raw, (now - created) / 1000, 0.0, now_us)
        return None

    @traced("cache.set")
    async def store(
        self,
        keys: EntryKeys,
        payload: bytes,
        policy: Policy,
        *,
        tags: list[str],
        delta: float = 0.0,
        token: str = "",
        started_us: int = 0,
        recompute: bool = False,
    ) -> bool:
        """One round trip: ``put.lua``. False if an invalidation made the value stale."""
        shard = keys.shard
        stored = await self.rk.run(
            SCRIPTS["put"],
            [
                keys.entry,
                keys.lock,
                keys.notify,
                shard.invalidations,
                *((shard.tag_index, *(shard.tag(_hashed(t)) for t in tags)) if tags else ()),
            ],
            [
                payload,
                policy.ttl_ms,
                policy.swr_ms,
                policy.sie_ms,
                max(0, math.ceil(delta * 1000)),
                token,
                started_us,
                self.lock_ms,
                *(_hashed(t) for t in tags),
            ],
        )
        if recompute:
            self.count("recomputes")
        return bool(stored)

    async def release(self, keys: EntryKeys, token: str) -> None:
        """Give the lock up without a value and wake the waiters; never raises."""
        with contextlib.suppress(ConnectionLost):  # the lock expires by itself
            await self.rk.run(SCRIPTS["release"], [keys.lock, keys.notify], [token, self.lock_ms])

    async def wait(self, keys: EntryKeys, lock_ttl: float) -> bool:
        """Block (no polling) until the holder stores or gives up, or its lock expires.

        Returns True if woken by the holder. Waiters of one process share one ``BLPOP``
        (in the sync API, each thread waits with its own).
        """
        timeout = max(0.01, min(lock_ttl + 0.02, self._wait_chunk))
        if not IS_ASYNC:
            with translate_redis_errors("cache wait"):
                return self.rk.redis.blpop([keys.notify], timeout=timeout) is not None
        shared = self._waits.get(keys.notify)
        if shared is not None:
            return await asyncio.shield(shared)
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waits[keys.notify] = fut
        woken = False
        try:
            with translate_redis_errors("cache wait"):
                woken = await self.rk.redis.blpop([keys.notify], timeout=timeout) is not None
        finally:
            del self._waits[keys.notify]
            fut.set_result(woken)
        return woken

    def token(self) -> str:
        """A lock token unique to this lookup."""
        return self._token_prefix + str(next(self._token_counter))

    @async_only
    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run a background refresh, keeping a reference so it is not garbage-collected."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the background refreshes in flight and write the pending stats (for tests
        and clean shutdowns)."""
        if IS_ASYNC:
            while self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        else:
            for thread in list(self._threads):
                thread.join()
        await self.flush_stats()

    # -- stats --------------------------------------------------------------------------------

    def count(self, field: str, n: int = 1) -> None:
        """Add to a counter; written to the server within ``stats_interval``."""
        self._pending[field] = self._pending.get(field, 0) + n
        if IS_ASYNC:
            if self._flush_handle is None:
                self._flush_handle = asyncio.get_running_loop().call_later(
                    self._stats_interval, self._flush_later
                )
        elif time.monotonic() >= self._flush_due:
            self.flush_stats()

    @async_only
    def _flush_later(self) -> None:
        self._flush_handle = None
        self.spawn(self.flush_stats())

    async def flush_stats(self) -> None:
        """Add this process's pending counts to the shared stats hash now (one round trip)."""
        pending, self._pending = self._pending, {}
        if IS_ASYNC:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
        else:
            self._flush_due = time.monotonic() + self._stats_interval
        if not pending:
            return
        try:
            with translate_redis_errors("cache stats"):
                pipe = self.rk.redis.pipeline(transaction=False)
                for field, n in pending.items():
                    pipe.hincrby(self._stats_key, field, n)
                # The registry `redkit cache list` reads (no SCAN), in the same round trip.
                pipe.sadd(self._names_key, self.name)
                await pipe.execute()
        except ConnectionLost:
            log.warning("cache stats not written: the server is unreachable")

    # -- the public operations --------------------------------------------------------------

    async def get(self, key: str, default: Any = None) -> Any:
        """The fresh value stored under ``key``, or ``default``. One round trip."""
        result = await self.lookup(self.keys_for(key), "peek", "", 0.0)
        return decode(result.raw) if result.raw is not None else default

    async def set(
        self,
        key: str,
        value: Any,
        ttl: float | timedelta | None = None,
        tags: Iterable[str] | None = None,
    ) -> None:
        """Store ``value`` (JSON, or bytes as they are) for ``ttl`` seconds under ``tags``."""
        policy = self.policy
        if ttl is not None:
            policy = self._policy(ttl, policy.swr_ms / 1000, policy.sie_ms / 1000, policy.beta)
        payload = encode(value, max_bytes=self.max_bytes, compress_above=self.compress_above)
        await self.store(self.keys_for(key), payload, policy, tags=_tag_list(tags))

    async def get_or_set(
        self,
        key: str,
        compute: Callable[[], Awaitable[Any]],
        ttl: float | timedelta | None = None,
        tags: Iterable[str] | None = None,
    ) -> Any:
        """The fresh value under ``key``, or else ``await compute()``'s result, stored under
        ``key`` for ``ttl`` seconds under ``tags``.

        Stampede-protected like ``@cached``: of the callers that miss at once, in every
        process, one computes and the others wait for its value (no polling); the cache's
        stale windows and early refresh apply. ``compute`` takes no arguments (a lambda or
        ``functools.partial``); in the sync API it is a plain function.
        """
        policy = self.policy
        if ttl is not None:
            policy = self._policy(ttl, policy.swr_ms / 1000, policy.sie_ms / 1000, policy.beta)
        if not callable(compute):
            raise InvalidInput(f"compute must be a callable, got {compute!r}")
        tag_list = _tag_list(tags)
        while True:
            try:
                return await self._shared(key, compute, (), {}, policy, tag_list)
            except _Retry:
                continue

    @traced("cache.delete")
    async def delete(self, key: str) -> bool:
        """Remove ``key``'s entry; True if there was one."""
        keys = self.keys_for(key)
        with translate_redis_errors("cache delete"):
            return bool(await self.rk.redis.delete(keys.entry))

    @traced("cache.invalidate")
    async def invalidate(self, *tags: str) -> int:
        """Delete every entry stored under any of ``tags``; return how many were deleted.

        One script per shard, run concurrently; never KEYS or SCAN. A computation that started
        before this call will not store its (possibly stale) result after it.
        """
        names = [_hashed(t) for t in _tag_list(tags)]
        if not names:
            return 0
        counts = await asyncio.gather(
            *(
                self.rk.run(
                    SCRIPTS["invalidate"],
                    [shard.invalidations, shard.tag_index, *(shard.tag(n) for n in names)],
                    [self._keep_ms, *names],
                )
                for shard in self._shards
            )
        )
        return sum(int(c) for c in counts)

    async def tag_counts(self, limit: int = 50) -> list[tuple[str, int]]:
        """Live entries per tag, most first: at most ``limit`` tags (1 to 1,000), read from
        the tag index each shard keeps (one script per shard, concurrently; never SCAN).

        Bounded: each shard counts its ``max(limit, 200)`` latest-ending tags, so on a cache
        with more tags than that the least recently stored ones may be left out. A count is
        an upper bound: an entry removed otherwise than by its tag's invalidation (``delete``,
        another tag's invalidation) counts until it would have expired. Tags longer than 256
        characters are stored hashed and show as ``#`` and their hash.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidInput(f"limit must be an int from 1 to 1000, got {limit!r}")
        replies = await asyncio.gather(
            *(
                self.rk.run(
                    SCRIPTS["tag_counts"], [shard.tag_index], [shard.tag(""), max(limit, 200)]
                )
                for shard in self._shards
            )
        )
        totals: dict[str, int] = {}
        for reply in replies:
            for i in range(0, len(reply), 2):
                raw = reply[i]
                tag = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
                totals[tag] = totals.get(tag, 0) + int(reply[i + 1])
        ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
        return ranked[:limit]

    async def stats(self) -> CacheStats:
        """Hits, misses, stale serves, recomputes and early refreshes (every process).

        Other processes' counts arrive within their ``stats_interval``.
        """
        await self.flush_stats()
        with translate_redis_errors("cache stats"):
            fields = await self.rk.redis.hgetall(self._stats_key)
        totals = dict.fromkeys(_STAT_FIELDS, 0)
        for field, value in fields.items():
            name = field.decode() if isinstance(field, bytes) else str(field)
            if name in totals:
                totals[name] += int(value)
        return CacheStats(**totals)

    async def reset_stats(self) -> None:
        """Set every counter back to zero."""
        self._pending = {}
        with translate_redis_errors("cache reset stats"):
            await self.rk.redis.delete(self._stats_key)

    # -- the decorator ----------------------------------------------------------------------

    def cached(
        self,
        ttl: float | timedelta | None = None,
        tags: Iterable[str] | Callable[..., Iterable[str]] | None = None,
        key: str | Callable[..., str] | None = None,
        *,
        stale_while_revalidate: float | timedelta | None = None,
        stale_if_error: float | timedelta | None = None,
        beta: float | None = None,
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
        """Cache an async function's results.

        ``key``: a template formatted with the call's arguments (``"user:{user_id}"``), a
        callable taking the same arguments, or None for ``module.name:<JSON of the args>``.
        ``tags``: templates (``["user:{user_id}"]``) or a callable taking the same arguments
        (``lambda user_id: [f"user:{user_id}"]``). Results must be JSON (or bytes).
        """
        base = self.policy
        policy = self._policy(
            ttl if ttl is not None else base.ttl_ms / 1000,
            stale_while_revalidate if stale_while_revalidate is not None else base.swr_ms / 1000,
            stale_if_error if stale_if_error is not None else base.sie_ms / 1000,
            beta if beta is not None else base.beta,
        )

        def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
            # Sync: @cached takes a plain function.
            if IS_ASYNC and not inspect.iscoroutinefunction(fn):
                raise InvalidInput(f"@cached needs an async function; {fn!r} is not")
            make_key = _key_maker(fn, key)
            make_tags = _tags_maker(fn, tags)

            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                entry = make_key(args, kwargs)
                while True:
                    try:
                        result: R = await self._shared(
                            entry, fn, args, kwargs, policy, make_tags(args, kwargs)
                        )
                        return result
                    except _Retry:
                        continue

            return wrapper

        return decorate

    async def _shared(
        self,
        key: str,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        policy: Policy,
        tags: list[str],
    ) -> Any:
        """Callers with the same key in this process share one lookup (and computation)."""
        keys = self.keys_for(key)
        if not IS_ASYNC:
            return self._resolve(keys, fn, args, kwargs, policy, tags)
        followers = self._inflight.get(keys.entry)
        if followers is not None:
            # Each follower has its own future: cancelling one leaves the others waiting.
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            followers.append(fut)
            return await fut
        followers = self._inflight[keys.entry] = []
        try:
            value = await self._resolve(keys, fn, args, kwargs, policy, tags)
        except BaseException as exc:
            del self._inflight[keys.entry]
            # A cancelled leader's followers look up again; an error is shared.
            error = exc if isinstance(exc, Exception) else _Retry()
            for fut in followers:
                if not fut.done():
                    fut.set_exception(error)
            raise
        del self._inflight[keys.entry]
        for fut in followers:
            if not fut.done():
                fut.set_result(value)
        return value

    async def _resolve(
        self,
        keys: EntryKeys,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        policy: Policy,
        tags: list[str],
    ) -> Any:
        token = self.token()
        woken = False
        while True:
            try:
                found = await self.lookup(keys, "fetch", token, policy.beta)
            except ConnectionLost:
                if not self.fail_open:
                    raise
                log.warning("cache unreachable; computing %s without it", keys.entry)
                return await fn(*args, **kwargs)
            status = found.status
            if status in (HIT, STALE):
                assert found.raw is not None
                return decode(found.raw)
            if status in (HIT_REFRESH, STALE_REFRESH):
                assert found.raw is not None
                refresh = (keys, fn, args, kwargs, policy, tags, token, found.now_us)
                if IS_ASYNC:
                    self.spawn(self._refresh(*refresh))
                else:
                    # Sync: the refresh runs in a thread of its own, the caller gets the value.
                    thread = threading.Thread(target=self._refresh, args=refresh, daemon=True)
                    self._threads.add(thread)
                    thread.start()
                return decode(found.raw)
            if status == MISS_LOCKED:
                return await self._compute(
                    keys, fn, args, kwargs, policy, tags, token, found.now_us, found.raw
                )
            if woken:
                # The holder finished without a value for us (it failed, or an invalidation
                # discarded it): compute here instead of queueing behind the next holder.
                return await self._compute(
                    keys, fn, args, kwargs, policy, tags, "", found.now_us, found.raw
                )
            try:
                woken = await self.wait(keys, found.lock_ttl)
            except ConnectionLost:
                if not self.fail_open:
                    raise
                return await fn(*args, **kwargs)

    async def _compute(
        self,
        keys: EntryKeys,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        policy: Policy,
        tags: list[str],
        token: str,
        started_us: int,
        stale: bytes | None,
    ) -> Any:
        began = time.perf_counter()
        try:
            value = await fn(*args, **kwargs)
            delta = time.perf_counter() - began
            payload = encode(value, max_bytes=self.max_bytes, compress_above=self.compress_above)
        except Exception:
            if token:
                await self.release(keys, token)
            if stale is not None and policy.sie_ms > 0:
                log.warning("serving stale %s: the recompute failed", keys.entry, exc_info=True)
                self.count("stale")
                return decode(stale)
            raise
        except BaseException:
            if token:
                await asyncio.shield(self.release(keys, token))
            raise
        try:
            await self.store(
                keys,
                payload,
                policy,
                tags=tags,
                delta=delta,
                token=token,
                started_us=started_us,
                recompute=True,
            )
        except ConnectionLost:
            if not self.fail_open:
                raise
        return value

    async def _refresh(
        self,
        keys: EntryKeys,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        policy: Policy,
        tags: list[str],
        token: str,
        started_us: int,
    ) -> None:
        try:
            await self._compute(keys, fn, args, kwargs, policy, tags, token, started_us, None)
        except Exception:
            log.exception("background refresh of %s failed", keys.entry)
        finally:
            if not IS_ASYNC:
                self._threads.discard(threading.current_thread())


KeyMaker = Callable[[tuple[Any, ...], dict[str, Any]], str]
TagsMaker = Callable[[tuple[Any, ...], dict[str, Any]], list[str]]


def _bind(fn: Callable[..., Any]) -> Callable[[tuple[Any, ...], dict[str, Any]], dict[str, Any]]:
    signature = inspect.signature(fn)

    def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound.arguments

    return bind


def _key_maker(fn: Callable[..., Any], key: str | Callable[..., str] | None) -> KeyMaker:
    if key is None:
        prefix = f"{fn.__module__}.{fn.__qualname__}:"

        def default_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            try:
                text = orjson.dumps(args)
                if kwargs:
                    text += orjson.dumps(kwargs, option=orjson.OPT_SORT_KEYS)
            except TypeError as exc:
                raise InvalidInput(
                    f"@cached {fn.__qualname__}: arguments are not JSON ({exc}); pass key=..."
                ) from None
            if text.count(b"null") and not _SCALARS.issuperset(
                map(type, (*args, *kwargs.values()))
            ):
                # A NaN argument would share the key of None (orjson writes both as null).
                # Plain str/int/None arguments (the usual call) are checked without a walk.
                refuse_non_finite((args, kwargs), f"@cached {fn.__qualname__}'s arguments")
            return prefix + text.decode()

        return default_key
    if isinstance(key, str):
        bind = _bind(fn)
        return lambda args, kwargs: key.format(**bind(args, kwargs))
    if callable(key):
        return lambda args, kwargs: key(*args, **kwargs)
    raise InvalidInput(f"key must be a template string or a callable, got {key!r}")


def _tags_maker(
    fn: Callable[..., Any], tags: Iterable[str] | Callable[..., Iterable[str]] | None
) -> TagsMaker:
    if tags is None:
        return lambda args, kwargs: []
    if callable(tags):
        return lambda args, kwargs: _tag_list(tags(*args, **kwargs))
    templates = _tag_list(tags)
    if not any("{" in t for t in templates):
        return lambda args, kwargs: templates
    bind = _bind(fn)
    return lambda args, kwargs: [t.format(**bind(args, kwargs)) for t in templates]


def cache_names_key(rk: Redkit) -> str:
    """The set of the namespace's cache names that recorded stats (bounded by the number of
    names an application uses, like the set of queue names)."""
    return rk.keys.key("cache", "names")


async def list_caches(rk: Redkit) -> list[str]:
    """Names of the caches in this namespace that have recorded stats (sorted; no SCAN)."""
    with translate_redis_errors("list caches"):
        names = await rk.redis.smembers(cache_names_key(rk))
    return sorted(n.decode() if isinstance(n, bytes) else str(n) for n in names)
