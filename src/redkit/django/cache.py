"""``redkit.django.RedkitCache``: Django's cache API on redkit's cache, sync and async.

Every entry is one of redkit's cache entries (``redkit.cache.core``): its Django key
(``KEY_PREFIX``, version, ``KEY_FUNCTION``) is the entry's key, so it lands in one of the
cache's shards, and each operation is one script or one command on that shard's slot:

* ``get``/``set``/``delete`` are redkit's ``get.lua`` (peek) / ``put.lua`` / ``DEL``;
  ``add`` is the cache's ``add.lua`` (shared with the Flask-Caching backend), ``incr``/``decr``
  and ``touch`` are scripts of their own here (``incr.lua``, ``touch.lua``), atomic with the
  server's clock.
* ``clear()`` deletes this backend's entries only, never ``FLUSHDB`` (which would wipe the
  sessions and queues that share the database): every entry is stored under one internal tag
  per ``KEY_PREFIX``, and ``clear()`` invalidates that tag (one script per shard, no KEYS, no
  SCAN).
* ``set(..., tags=[...])`` / ``invalidate(tag)``: redkit's tag sets, scoped to ``KEY_PREFIX``.
* ``get_or_set`` with a callable is single-flight across processes: of the callers that miss at
  once, one computes and the others wait for its value (``BLPOP``, no polling).
* The ``a*`` methods run on redkit's async client (one per event loop), not in a thread.

Values are JSON by default (``bytes`` are stored as they are); ``OPTIONS={"SERIALIZER":
"pickle"}`` stores anything picklable, and only then does the backend unpickle what it reads.
An entry stores the names of its tags in front of its value, so that ``touch`` extends the tag
sets with the entry and an invalidation still finds it.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, Final

import orjson
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.http import HttpResponse

import redkit
import redkit.sync
from redkit.cache.core import (
    HIT,
    HIT_REFRESH,
    KIND_BYTES,
    KIND_JSON,
    MISS_LOCKED,
    STALE,
    STALE_REFRESH,
    ZLIB,
    EntryKeys,
    Policy,
    _hashed,
    encode,
    pack,
)
from redkit.cache.core import SCRIPTS as CACHE_SCRIPTS
from redkit.client import connect_settings
from redkit.codec import DEFAULT_MAX_BYTES, dumps
from redkit.connection import parse_url
from redkit.errors import ConfigurationError, InvalidInput
from redkit.scripts import ScriptSet

__all__ = ["RedkitCache"]

SCRIPTS = ScriptSet(__package__)

KIND_PICKLE: Final = ord("P")
KIND_HTTP: Final = ord("H")
_YEAR_S: Final = 365 * 24 * 3600
# get_or_set's rounds of "look up, wait for the holder": each wait ends when the holder stores,
# gives up or its lock expires, so a few rounds suffice; past them the caller computes alone.
_MAX_ROUNDS: Final = 32

# django-redis's names for what redkit does anyway, or the equivalent redkit setting.
_SERIALIZERS: Final = {
    "json": False,
    "pickle": True,
    "django_redis.serializers.json.JSONSerializer": False,
    "django_redis.serializers.pickle.PickleSerializer": True,
}
_COMPRESSORS: Final = {
    "django_redis.compressors.identity.IdentityCompressor": None,
    # django-redis's zlib compressor leaves values under 15 bytes as they are.
    "django_redis.compressors.zlib.ZlibCompressor": 15,
}
_CLIENTS: Final = {"django_redis.client.DefaultClient"}
_OPTIONS: Final = frozenset(
    {
        # redkit's own
        "NAMESPACE",
        "NAME",
        "SHARDS",
        "LOCK_TIMEOUT",
        "MAX_BYTES",
        "MAX_TIMEOUT",
        "COMPRESS_ABOVE",
        "AUTO_PIPELINE",
        # django-redis's
        "SERIALIZER",
        "COMPRESSOR",
        "CLIENT_CLASS",
        "SOCKET_CONNECT_TIMEOUT",
        "SOCKET_TIMEOUT",
        "CONNECTION_POOL_KWARGS",
    }
)


def _location(server: Any) -> str | None:
    """One server URL from ``LOCATION`` (a string, or a list of one as django-redis allows)."""
    if isinstance(server, list | tuple):
        if len(server) > 1:
            raise ConfigurationError(
                "RedkitCache takes one server URL in LOCATION (a Cluster is found from any of "
                f"its nodes; read replicas are not used), got {len(server)}"
            )
        server = server[0] if server else ""
    if not isinstance(server, str):
        raise ConfigurationError(f"LOCATION must be a server URL, got {server!r}")
    # Empty: REDIS_URL from the environment, else the embedded server (as redkit.connect()).
    return server or None


class RedkitCache(BaseCache):  # type: ignore[misc]  # Django ships no type hints
    """Django's cache API on redkit (``"BACKEND": "redkit.django.RedkitCache"``).

    ``LOCATION``: a server URL (``redis://``, ``rediss://``, ``unix://``; a Cluster node with
    ``redis+cluster://``), as django-redis takes it. ``TIMEOUT``, ``KEY_PREFIX``, ``VERSION``
    and ``KEY_FUNCTION`` mean what they mean in Django. A ``timeout`` of ``None`` ("forever")
    stores for ``MAX_TIMEOUT`` (default 365 days, the cap on every timeout): no entry lives
    unbounded. ``OPTIONS`` (all optional):

    * ``SERIALIZER``: ``"json"`` (default) or ``"pickle"``; django-redis's JSON and pickle
      serializer paths are accepted too. Unpickling runs code: use pickle only if nothing
      but your application can write to the server.
    * ``COMPRESS_ABOVE``: zlib values above this many bytes; or django-redis's
      ``COMPRESSOR`` (its zlib or identity compressor).
    * ``SOCKET_CONNECT_TIMEOUT``, ``SOCKET_TIMEOUT`` (seconds), ``CONNECTION_POOL_KWARGS``
      (``{"max_connections": n}`` only): as in django-redis; ``CLIENT_CLASS`` only as its
      default client.
    * ``NAMESPACE`` (redkit's key namespace, default ``REDKIT_NAMESPACE`` or ``rk``), ``NAME``
      (the redkit cache's name, default ``"django"``), ``SHARDS``, ``LOCK_TIMEOUT`` (how long
      ``get_or_set``'s computing caller may take before another takes over, default 10 s),
      ``MAX_BYTES`` (cap on one value, default 1 MiB), ``AUTO_PIPELINE``.

    Any other option raises :class:`~redkit.errors.ConfigurationError`, as does a bad URL.
    Beyond Django's API: ``set``/``aset``/``add``/``aadd``/``set_many``/``get_or_set`` take
    ``tags=[...]``, and :meth:`invalidate` / :meth:`ainvalidate` delete every entry of a tag.
    """

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(params)
        options = dict(params.get("OPTIONS") or {})
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigurationError(
                f"RedkitCache does not know the OPTIONS {', '.join(unknown)}; "
                f"it accepts {', '.join(sorted(_OPTIONS))}"
            )
        serializer = options.get("SERIALIZER", "json")
        if serializer not in _SERIALIZERS:
            raise ConfigurationError(
                f"SERIALIZER must be one of {', '.join(_SERIALIZERS)}, got {serializer!r}"
            )
        self._pickle = _SERIALIZERS[serializer]
        compress_above = options.get("COMPRESS_ABOVE")
        if "COMPRESSOR" in options:
            if options["COMPRESSOR"] not in _COMPRESSORS:
                raise ConfigurationError(
                    f"COMPRESSOR must be one of {', '.join(_COMPRESSORS)} (or use "
                    f"COMPRESS_ABOVE), got {options['COMPRESSOR']!r}"
                )
            compress_above = _COMPRESSORS[options["COMPRESSOR"]]
        client = options.get("CLIENT_CLASS")
        if client is not None and client not in _CLIENTS:
            raise ConfigurationError(
                f"CLIENT_CLASS {client!r} is not supported: RedkitCache is its own client "
                "(a Cluster URL selects the Cluster client)"
            )
        pool = dict(options.get("CONNECTION_POOL_KWARGS") or {})
        max_connections = pool.pop("max_connections", None)
        if pool:
            raise ConfigurationError(
                "CONNECTION_POOL_KWARGS may hold max_connections only; put TLS and credentials "
                f"in LOCATION's URL (got {', '.join(sorted(pool))})"
            )
        self._connect: dict[str, Any] = {
            "url": _location(server),
            "namespace": options.get("NAMESPACE"),
            "connect_timeout": options.get("SOCKET_CONNECT_TIMEOUT"),
            "command_timeout": options.get("SOCKET_TIMEOUT"),
            "max_connections": max_connections,
            "auto_pipeline": options.get("AUTO_PIPELINE"),
        }
        # A bad URL, namespace or timeout is reported here, when Django builds the backend,
        # not on the first request.
        connect_settings(**self._connect)
        if self._connect["url"] is not None:
            parse_url(self._connect["url"])
        max_bytes = options.get("MAX_BYTES", DEFAULT_MAX_BYTES)
        self._cache_options: dict[str, Any] = {
            "name": options.get("NAME", "django"),
            "shards": options.get("SHARDS"),
            "lock_timeout": options.get("LOCK_TIMEOUT", 10),
            "max_bytes": max_bytes,
            "compress_above": compress_above,
            # Early refresh and stale windows are the decorator's; Django's API has neither.
            "beta": 0.0,
        }
        self._max_bytes = max_bytes
        self._compress_above = compress_above
        max_timeout = options.get("MAX_TIMEOUT", _YEAR_S)
        if (
            isinstance(max_timeout, bool)
            or not isinstance(max_timeout, int | float)
            or not 1 <= max_timeout <= 100 * _YEAR_S
        ):
            raise ConfigurationError(f"MAX_TIMEOUT must be seconds >= 1, got {max_timeout!r}")
        self._max_ms = round(max_timeout * 1000)
        # Tags are scoped to the key prefix, so that two backends on one server with different
        # KEY_PREFIX clear and invalidate only their own entries.
        self._all_tag = _hashed("all:" + self.key_prefix)
        self._sync_cache: redkit.sync.Cache | None = None
        self._sync_lock = threading.Lock()
        # One async client per event loop (an asyncio connection belongs to the loop that
        # opened it). Bounded: entries of closed loops are dropped when a loop is added.
        self._async_caches: dict[asyncio.AbstractEventLoop, redkit.Cache] = {}

    # -- clients ----------------------------------------------------------------------------

    def _sync(self) -> redkit.sync.Cache:
        cache = self._sync_cache
        if cache is None:
            with self._sync_lock:
                if self._sync_cache is None:
                    rk = redkit.sync.connect(**self._connect)
                    self._sync_cache = rk.cache(**self._cache_options)
                cache = self._sync_cache
        return cache

    async def _async(self) -> redkit.Cache:
        loop = asyncio.get_running_loop()
        cache = self._async_caches.get(loop)
        if cache is not None:
            return cache
        rk = await redkit.connect(**self._connect)
        cache = self._async_caches.get(loop)
        if cache is not None:  # another task of this loop connected first
            await rk.close()
            return cache
        for old in [lp for lp in self._async_caches if lp.is_closed()]:
            del self._async_caches[old]
        cache = self._async_caches[loop] = rk.cache(**self._cache_options)
        return cache

    def disconnect(self) -> None:
        """Close the sync client's connections (at shutdown, or in tests); the next call
        opens new ones."""
        with self._sync_lock:
            cache, self._sync_cache = self._sync_cache, None
        if cache is not None:
            cache.drain()
            cache.rk.close()

    async def adisconnect(self) -> None:
        """Close the running event loop's client (at shutdown, or in tests)."""
        cache = self._async_caches.pop(asyncio.get_running_loop(), None)
        if cache is not None:
            await cache.drain()
            await cache.rk.close()

    def close(self, **kwargs: Any) -> None:
        """Nothing: Django calls this after every request, and the connections are pooled
        for the life of the process (as django-redis does by default)."""

    # -- keys, timeouts, values ---------------------------------------------------------------

    def validate_key(self, key: str) -> None:
        """Accept any key: a Redis key has no memcached limits, and long keys are hashed."""

    def _keys(
        self, cache: redkit.Cache | redkit.sync.Cache, key: str, version: int | None
    ) -> EntryKeys:
        return cache.keys_for(self.make_and_validate_key(key, version))

    def _ttl_ms(self, timeout: Any) -> int | None:
        """The entry's lifetime in ms, or None for "expire now" (a timeout <= 0)."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return self._max_ms
        if isinstance(timeout, timedelta):
            timeout = timeout.total_seconds()
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout != timeout:
            raise InvalidInput(f"timeout must be seconds, None or DEFAULT_TIMEOUT, got {timeout!r}")
        if timeout <= 0:
            return None
        return min(max(1, round(timeout * 1000)), self._max_ms)

    def _tags(self, tags: Iterable[str] | None) -> list[str]:
        """The entry's tag names as stored: the clear() tag, then the given tags, scoped."""
        names = [self._all_tag]
        if tags is None:
            return names
        if isinstance(tags, str):
            tags = [tags]
        for tag in tags:
            if not isinstance(tag, str) or not tag:
                raise InvalidInput(f"a tag must be a non-empty string, got {tag!r}")
            names.append(self._tag_name(tag))
        return names

    def _tag_name(self, tag: str) -> str:
        return _hashed(f"tag:{self.key_prefix}:{tag}")

    def _payload(self, value: Any, tags: list[str]) -> bytes:
        """``<tag names as JSON>\\n<kind><compression><data>`` (see the module docs)."""
        head = orjson.dumps(tags) + b"\n"
        if type(value) is int:
            # Always JSON and never compressed, pickle or not, so incr.lua can read it.
            return head + pack(b"J", dumps(value), None)
        if isinstance(value, HttpResponse):
            data = _response_bytes(value)
            self._check_size(len(data), "as a response")
            return head + pack(b"H", data, self._compress_above)
        if self._pickle:
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            self._check_size(len(data), "pickled")
            return head + pack(b"P", data, self._compress_above)
        return head + encode(value, max_bytes=self._max_bytes, compress_above=self._compress_above)

    def _check_size(self, size: int, how: str) -> None:
        if size > self._max_bytes:
            raise InvalidInput(
                f"cached value is {size:,} bytes {how}, over the {self._max_bytes:,}-byte cap; "
                "raise it with OPTIONS MAX_BYTES"
            )

    def _decode(self, raw: bytes) -> Any:
        start = raw.find(b"\n", raw.find(b"|", 0, 80) + 1) + 1
        if start == 0:
            # Another writer's entry under this cache's name (rk.cache(name="django"), say).
            raise InvalidInput(
                "this entry was not stored by RedkitCache; give it a NAME of its own"
            )
        kind = raw[start]
        data: bytes | memoryview = memoryview(raw)[start + 2 :]
        if raw[start + 1] == ZLIB:
            data = zlib.decompress(data)
        if kind == KIND_JSON:
            return orjson.loads(data)
        if kind == KIND_BYTES:
            return bytes(data)
        if kind == KIND_HTTP:
            return _response(data)
        if kind == KIND_PICKLE and self._pickle:
            return pickle.loads(data)  # noqa: S301  (asked for with SERIALIZER "pickle")
        # Never unpickle unless asked: whoever can write to the server would run code here.
        raise InvalidInput("this entry was stored with SERIALIZER 'pickle', which is not set")

    @staticmethod
    def _policy(ttl_ms: int) -> Policy:
        return Policy(ttl_ms, 0, 0, 0.0)

    @staticmethod
    def _incr_result(reply: list[Any], key: str, delta: int) -> int:
        status = int(reply[0])
        if status == 0:
            raise ValueError(f"Key '{key}' not found")
        if status == -1:
            raise InvalidInput(f"the value of key {key!r} is not an integer")
        if status == -2:
            raise InvalidInput(f"adding {delta} to key {key!r} leaves the range of +-2**53")
        return int(reply[1])

    @staticmethod
    def _delta(delta: Any) -> int:
        if isinstance(delta, bool) or not isinstance(delta, int) or abs(delta) > 2**53:
            raise InvalidInput(f"delta must be an integer, got {delta!r}")
        return delta

    # -- the sync API -------------------------------------------------------------------------

    def get(self, key: str, default: Any = None, version: int | None = None) -> Any:
        """The value under ``key``, or ``default``. One round trip."""
        cache = self._sync()
        found = cache.lookup(self._keys(cache, key, version), "peek", "", 0.0)
        return self._decode(found.raw) if found.raw is not None else default

    def set(
        self,
        key: str,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        tags: Iterable[str] | None = None,
    ) -> None:
        """Store ``value`` for ``timeout`` seconds, under ``tags``; a timeout <= 0 deletes."""
        cache = self._sync()
        keys = self._keys(cache, key, version)
        ttl = self._ttl_ms(timeout)
        if ttl is None:
            cache.delete(self.make_and_validate_key(key, version))
            return
        names = self._tags(tags)
        cache.store(keys, self._payload(value, names), self._policy(ttl), tags=names)

    def add(
        self,
        key: str,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        tags: Iterable[str] | None = None,
    ) -> bool:
        """Store ``value`` only if ``key`` has no value; True if stored. Atomic."""
        cache = self._sync()
        keys = self._keys(cache, key, version)
        ttl = self._ttl_ms(timeout)
        if ttl is None:
            return False
        names = self._tags(tags)
        args = self._add_call(keys, value, names, ttl)
        return bool(cache.rk.run(CACHE_SCRIPTS["add"], *args))

    def _add_call(
        self, keys: EntryKeys, value: Any, names: list[str], ttl: int
    ) -> tuple[list[str], list[bytes | int]]:
        return [keys.entry, *(keys.shard.tag(n) for n in names)], [
            self._payload(value, names),
            ttl,
        ]

    def delete(self, key: str, version: int | None = None) -> bool:
        """Remove ``key``; True if it was there."""
        return self._sync().delete(self.make_and_validate_key(key, version))

    def touch(self, key: str, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Give ``key`` a new expiry; False if it has no value. A timeout <= 0 deletes it."""
        cache = self._sync()
        keys = self._keys(cache, key, version)
        ttl = self._ttl_ms(timeout)
        if ttl is None:
            return self.delete(key, version)
        return bool(cache.rk.run(SCRIPTS["touch"], [keys.entry], [ttl, keys.shard.base]))

    def has_key(self, key: str, version: int | None = None) -> bool:
        """Whether ``key`` has a value."""
        cache = self._sync()
        found = cache.lookup(self._keys(cache, key, version), "peek", "", 0.0)
        return found.raw is not None

    def incr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        """Add ``delta`` to the integer under ``key``, atomically, keeping its expiry.

        ValueError if ``key`` has no value (as Django's backends), InvalidInput (a ValueError
        too) if the value is not an integer.
        """
        delta = self._delta(delta)
        cache = self._sync()
        keys = self._keys(cache, key, version)
        reply = cache.rk.run(SCRIPTS["incr"], [keys.entry], [delta])
        return self._incr_result(reply, key, delta)

    def get_many(self, keys: Iterable[str], version: int | None = None) -> dict[str, Any]:
        """The values of those ``keys`` that have one."""
        missing = object()
        found = {key: self.get(key, missing, version) for key in keys}
        return {key: value for key, value in found.items() if value is not missing}

    def set_many(
        self,
        data: Mapping[str, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        tags: Iterable[str] | None = None,
    ) -> list[str]:
        """Store every item; returns the keys that failed (none: a failure raises)."""
        tag_list = None if tags is None else list(tags)
        for key, value in data.items():
            self.set(key, value, timeout, version, tags=tag_list)
        return []

    def delete_many(self, keys: Iterable[str], version: int | None = None) -> None:
        """Remove every key."""
        for key in keys:
            self.delete(key, version)

    def clear(self) -> None:
        """Delete every entry of this backend's ``KEY_PREFIX``, and nothing else on the server
        (no FLUSHDB): one script per shard."""
        self._sync().invalidate(self._all_tag)

    def invalidate(self, *tags: str) -> int:
        """Delete every entry stored under any of ``tags``; returns how many were deleted."""
        names = self._tags(tags)[1:]
        return self._sync().invalidate(*names) if names else 0

    def get_or_set(
        self,
        key: str,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        tags: Iterable[str] | None = None,
    ) -> Any:
        """The value under ``key``; else ``default`` (called if callable), stored and returned.

        With a callable ``default``, of the callers that miss at once (every process), one
        calls it and the others wait for its value; a value stored under a tag invalidated
        while it was computed is returned but not stored.
        """
        if not callable(default):
            self.add(key, default, timeout, version, tags=tags)
            return self.get(key, default, version)
        cache = self._sync()
        keys = self._keys(cache, key, version)
        ttl = self._ttl_ms(timeout)
        if ttl is None:
            return default()
        names = self._tags(tags)
        for _ in range(_MAX_ROUNDS):
            token = cache.token()
            found = cache.lookup(keys, "fetch", token, 0.0)
            if found.status in (HIT_REFRESH, STALE_REFRESH):
                cache.release(keys, token)
            if found.status in (HIT, HIT_REFRESH, STALE, STALE_REFRESH):
                assert found.raw is not None
                return self._decode(found.raw)
            if found.status == MISS_LOCKED:
                try:
                    value = default()
                    payload = self._payload(value, names)
                except BaseException:
                    cache.release(keys, token)
                    raise
                cache.store(
                    keys,
                    payload,
                    self._policy(ttl),
                    tags=names,
                    token=token,
                    started_us=found.now_us,
                )
                return value
            if not cache.wait(keys, found.lock_ttl):
                continue  # the lock expired: the next lookup takes it
        return default()

    # -- the async API: on redkit's async client, no thread hop ------------------------------

    async def aget(self, key: str, default: Any = None, version: int | None = None) -> Any:
        """See :meth:`get`."""
        cache = await self._async()
        found = await cache.lookup(self._keys(cache, key, version), "peek", "", 0.0)
        return self._decode(found.raw) if found.raw is not None else default

    async def aset(
        self,
        key: str,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        tags: Iterable[str] | None = None,
    ) -> None:
        """See :meth:`set`."""
        cache = await self._async()
        keys = self._keys(cache, key, version)
        ttl = self._ttl_ms(timeout)
        if ttl is None:
            await cache.delete(self.make_and_validate_key(key, version))
            return
        names = self._tags(tags)
        await cache.store(keys, self._payload(value, names), self._policy(ttl), tags=names)

    async def aadd(
        self,
        key: str,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        tags: Iterable[str] | None = None,
    ) -> bool:
        """See :meth:`add`."""
        cache = await self._async()
        keys = self._keys(cache, key, version)
        ttl = self._ttl_ms(timeout)
        if ttl is None:
            return False
        names = self._tags(tags)
        return bool(
            await cache.rk.run(CACHE_SCRIPTS["add"], *self._add_call(keys, value, names, ttl))
        )

    async def adelete(self, key: str, version: int | None = None) -> bool:
        """See :meth:`delete`."""
        cache = await self._async()
        return await cache.delete(self.make_and_validate_key(key, version))

    async def atouch(
        self, key: str, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        """See :meth:`touch`."""
        cache = await self._async()
        keys = self._keys(cache, key, version)
        ttl = self._ttl_ms(timeout)
        if ttl is None:
            return await self.adelete(key, version)
        return bool(await cache.rk.run(SCRIPTS["touch"], [keys.entry], [ttl, keys.shard.base]))

    async def ahas_key(self, key: str, version: int | None = None) -> bool:
        """See :meth:`has_key`."""
        cache = await self._async()
        found = await cache.lookup(self._keys(cache, key, version), "peek", "", 0.0)
        return found.raw is not None

    async def aincr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        """See :meth:`incr`."""
        delta = self._delta(delta)
        cache = await self._async()
        keys = self._keys(cache, key, version)
        reply = await cache.rk.run(SCRIPTS["incr"], [keys.entry], [delta])
        return self._incr_result(reply, key, delta)

    async def aget_many(self, keys: Iterable[str], version: int | None = None) -> dict[str, Any]:
        """See :meth:`get_many`; the lookups run concurrently (one pipelined round trip)."""
        missing = object()
        names = list(keys)
        values = await asyncio.gather(*(self.aget(k, missing, version) for k in names))
        return {k: v for k, v in zip(names, values, strict=True) if v is not missing}

    async def aset_many(
        self,
        data: Mapping[str, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        tags: Iterable[str] | None = None,
    ) -> list[str]:
        """See :meth:`set_many`; the writes run concurrently."""
        tag_list = None if tags is None else list(tags)
        await asyncio.gather(
            *(self.aset(k, v, timeout, version, tags=tag_list) for k, v in data.items())
        )
        return []

    async def adelete_many(self, keys: Iterable[str], version: int | None = None) -> None:
        """See :meth:`delete_many`."""
        await asyncio.gather(*(self.adelete(k, version) for k in keys))

    async def aclear(self) -> None:
        """See :meth:`clear`."""
        cache = await self._async()
        await cache.invalidate(self._all_tag)

    async def ainvalidate(self, *tags: str) -> int:
        """See :meth:`invalidate`."""
        names = self._tags(tags)[1:]
        if not names:
            return 0
        cache = await self._async()
        return await cache.invalidate(*names)

    async def aget_or_set(
        self,
        key: str,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        tags: Iterable[str] | None = None,
    ) -> Any:
        """See :meth:`get_or_set`; ``default`` may be a plain function or return an awaitable."""
        if not callable(default):
            await self.aadd(key, default, timeout, version, tags=tags)
            return await self.aget(key, default, version)
        compute: Callable[[], Any] = default
        cache = await self._async()
        keys = self._keys(cache, key, version)
        ttl = self._ttl_ms(timeout)
        if ttl is None:
            return await _result(compute())
        names = self._tags(tags)
        for _ in range(_MAX_ROUNDS):
            token = cache.token()
            found = await cache.lookup(keys, "fetch", token, 0.0)
            if found.status in (HIT_REFRESH, STALE_REFRESH):
                await cache.release(keys, token)
            if found.status in (HIT, HIT_REFRESH, STALE, STALE_REFRESH):
                assert found.raw is not None
                return self._decode(found.raw)
            if found.status == MISS_LOCKED:
                try:
                    value = await _result(compute())
                    payload = self._payload(value, names)
                except BaseException:
                    await cache.release(keys, token)
                    raise
                await cache.store(
                    keys,
                    payload,
                    self._policy(ttl),
                    tags=names,
                    token=token,
                    started_us=found.now_us,
                )
                return value
            if not await cache.wait(keys, found.lock_ttl):
                continue
        return await _result(compute())


def _response_bytes(response: HttpResponse) -> bytes:
    """A response as ``<JSON of status, reason, charset, headers, cookies>\n<body>``.

    Django's ``cache_page`` and cache middleware store whole responses; this keeps them out of
    pickle, so that the default JSON cache serves them and never unpickles.
    """
    meta = {
        "status": response.status_code,
        "reason": response.reason_phrase,
        "charset": response.charset,
        "headers": list(response.headers.items()),
        "cookies": [morsel.OutputString() for morsel in response.cookies.values()],
    }
    body: bytes = response.content
    return orjson.dumps(meta) + b"\n" + body


def _response(data: bytes | memoryview) -> HttpResponse:
    raw = bytes(data)
    meta_end = raw.index(b"\n")
    meta = orjson.loads(raw[:meta_end])
    response = HttpResponse(
        raw[meta_end + 1 :], status=meta["status"], reason=meta["reason"], charset=meta["charset"]
    )
    for name, value in meta["headers"]:
        response.headers[name] = value
    for cookie in meta["cookies"]:
        response.cookies.load(cookie)
    return response


async def _result(value: Any) -> Any:
    """``value``, awaited if it is an awaitable (an async ``default`` for aget_or_set)."""
    if isinstance(value, Awaitable):
        return await value
    return value
