"""``redkit.flask.RedkitCache``: a Flask-Caching backend on redkit's cache.

::

    from flask_caching import Cache

    app.config["CACHE_TYPE"] = "redkit.flask.RedkitCache"
    app.config["CACHE_REDIS_URL"] = "redis://localhost:6379/0"   # else REDKIT_URL, REDIS_URL
    cache = Cache(app)

    @app.get("/report")
    @cache.cached(timeout=60)
    def report(): ...

    cache.set("user:1:card", card, tags=["user:1"])
    cache.cache.invalidate("user:1")                 # every entry stored under the tag

Every entry is one of redkit's cache entries (:mod:`redkit.cache.core`), keyed
``CACHE_KEY_PREFIX`` + key, and each operation is one script or one command on the entry's
slot, with the server's clock: ``get``/``has`` are ``get.lua`` (peek), ``set`` is ``put.lua``,
``add`` is the cache's ``add.lua``, ``inc``/``dec`` are ``cache_inc.lua`` (atomic; a missing
key starts at the amount, as Flask-Caching defines it). ``clear()`` deletes this backend's
entries only (never ``FLUSHDB``, never KEYS or SCAN): every entry is stored under one internal
tag per ``CACHE_KEY_PREFIX``, and ``clear()`` invalidates that tag, one script per shard.

**Values.** JSON by default, and only what comes back as it went in, so that a memoized
function returns the same types from the cache as when it ran: ``str``, ``int``, ``float``,
``bool``, ``None``, lists and ``str``-keyed dicts of them, and a tuple at the top level (a
view's ``("text", 201)`` or a memoized pair). What ``@cache.cached`` views return is stored
natively, never pickled: a Flask/werkzeug ``Response`` (``jsonify(...)``, ``make_response``;
status, headers and body), a tuple that holds one (``jsonify(...), 201``, made into one
response), and an ``abort(404)``-style standard HTTP error (re-raised on a hit, as
Flask-Caching does). ``bytes`` are stored as they are. Anything else (a ``datetime``, a set,
your own class, a tuple inside a list) raises :class:`~redkit.errors.InvalidInput` and stores
nothing; ``CACHE_OPTIONS = {"serializer": "pickle"}`` stores anything picklable, and only
then does the backend unpickle what it reads (unpickling runs code: use it only if nothing but
your application can write to the server). A response that sets a cookie is refused either
way: a cached copy would hand that cookie to every client (keep such views out of the cache
with ``unless`` or ``response_filter``).

Timeouts as Flask-Caching defines them: seconds or ``timedelta``, ``None`` for the default
(``CACHE_DEFAULT_TIMEOUT``), ``0`` for "never expires", which here is ``max_timeout`` (365
days by default): no entry lives unbounded.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import pickle
import threading
import weakref
import zlib
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any, Final

import orjson
from flask import Flask, current_app, has_app_context
from flask_caching.backends.base import BaseCache
from werkzeug.exceptions import default_exceptions
from werkzeug.wrappers import Response

import redkit.sync
from redkit.cache.core import (
    KIND_BYTES,
    KIND_JSON,
    ZLIB,
    EntryKeys,
    Policy,
    _hashed,
    encode,
    pack,
)
from redkit.cache.core import (
    SCRIPTS as CACHE_SCRIPTS,
)
from redkit.client import connect_settings
from redkit.codec import DEFAULT_MAX_BYTES, dumps
from redkit.connection import parse_url
from redkit.errors import ConfigurationError, InvalidInput
from redkit.scripts import ScriptSet

__all__ = ["RedkitCache"]

log = logging.getLogger("redkit.flask")

SCRIPTS = ScriptSet(__package__)

KIND_PICKLE: Final = ord("P")
KIND_RESPONSE: Final = ord("H")
KIND_TUPLE: Final = ord("T")
KIND_ABORT: Final = ord("E")
_YEAR_S: Final = 365 * 24 * 3600

# The CACHE_OPTIONS this backend takes (Flask-Caching passes them as keyword arguments, beside
# default_timeout and ignore_delete_many_errors).
_OPTIONS: Final = frozenset(
    {
        "serializer",
        "namespace",
        "name",
        "shards",
        "max_bytes",
        "max_timeout",
        "compress_above",
        "connect_timeout",
        "command_timeout",
        "max_connections",
    }
)

# Every live backend, so that one exit hook closes the clients of all of them.
_LIVE: weakref.WeakSet[RedkitCache] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for cache in list(_LIVE):
        try:
            cache.close()
        except Exception:  # at exit: a server already gone must not spoil the others
            log.debug("closing a RedkitCache client at exit failed", exc_info=True)


class RedkitCache(BaseCache):
    """Flask-Caching's backend API on redkit (``CACHE_TYPE = "redkit.flask.RedkitCache"``).

    Built by Flask-Caching from the app's config (:meth:`factory`): ``CACHE_REDIS_URL`` (else
    the app's ``REDKIT_URL``, else ``REDIS_URL`` from the environment, else the embedded
    server), ``CACHE_KEY_PREFIX`` (default ``"flask_cache_"``), ``CACHE_DEFAULT_TIMEOUT``
    (default 300 s) and ``CACHE_OPTIONS``, a dict of the keyword arguments below. Or made by
    hand: ``RedkitCache("redis://...", key_prefix="app:")``.

    * ``serializer``: ``"json"`` (default; see the module docs for what it holds) or
      ``"pickle"``.
    * ``namespace``: redkit's key namespace (default the app's ``REDKIT_NAMESPACE``, else
      ``REDKIT_NAMESPACE`` from the environment, else ``rk``); ``name``: the redkit cache's
      name (default ``"flask"``); ``shards``.
    * ``max_bytes``: the cap on one value (default 1 MiB); ``max_timeout``: what timeout 0
      ("never expires") stores for, and the cap on every timeout (default 365 days);
      ``compress_above``: zlib values above this many bytes.
    * ``connect_timeout``, ``command_timeout`` (seconds), ``max_connections``: the client's.

    An unknown option, a bad URL or a bad value raises
    :class:`~redkit.errors.ConfigurationError` when the app is set up. Beyond Flask-Caching's
    API, ``set``/``add``/``set_many`` take ``tags=[...]``, and :meth:`invalidate` deletes every
    entry of a tag (through Flask-Caching's ``Cache`` object: ``cache.cache.invalidate(tag)``).

    The client is made in the process that first uses it (a server that forks its workers
    after loading the app gives each its own connections) and closed when the process exits.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        key_prefix: str = "flask_cache_",
        default_timeout: float | timedelta = 300,
        ignore_delete_many_errors: bool = False,
        serializer: str = "json",
        namespace: str | None = None,
        name: str = "flask",
        shards: int | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_timeout: float = _YEAR_S,
        compress_above: int | None = None,
        connect_timeout: float | None = None,
        command_timeout: float | None = None,
        max_connections: int | None = None,
    ) -> None:
        if isinstance(default_timeout, timedelta):
            default_timeout = default_timeout.total_seconds()
        if (
            isinstance(max_timeout, bool)
            or not isinstance(max_timeout, int | float)
            or not 1 <= max_timeout <= 100 * _YEAR_S
        ):
            raise ConfigurationError(f"max_timeout must be seconds >= 1, got {max_timeout!r}")
        self._max_ms = round(max_timeout * 1000)
        if (
            isinstance(default_timeout, bool)
            or not isinstance(default_timeout, int | float)
            or not 0 <= default_timeout <= max_timeout
        ):
            raise ConfigurationError(
                "CACHE_DEFAULT_TIMEOUT must be seconds from 0 (never expires) to "
                f"max_timeout, got {default_timeout!r}"
            )
        # cachelib keeps whole seconds; _default_s (to the ms) is what the server is told.
        super().__init__(
            default_timeout=math.ceil(default_timeout),
            ignore_delete_many_errors=ignore_delete_many_errors,
        )
        self._default_s = float(default_timeout)
        if serializer not in ("json", "pickle"):
            raise ConfigurationError(f"serializer must be 'json' or 'pickle', got {serializer!r}")
        self._pickle = serializer == "pickle"
        if not isinstance(key_prefix, str):
            raise ConfigurationError(f"CACHE_KEY_PREFIX must be a string, got {key_prefix!r}")
        self.key_prefix = key_prefix
        if url is not None and not isinstance(url, str):
            raise ConfigurationError(f"the server URL must be a string, got {url!r}")
        self._connect: dict[str, Any] = {
            "url": url or None,
            "namespace": namespace,
            "connect_timeout": connect_timeout,
            "command_timeout": command_timeout,
            "max_connections": max_connections,
        }
        # A bad URL, namespace or timeout is reported when the app is set up, not on the first
        # request.
        connect_settings(**self._connect)
        if self._connect["url"] is not None:
            parse_url(self._connect["url"])
        self._cache_options: dict[str, Any] = {
            "name": name,
            "shards": shards,
            "max_bytes": max_bytes,
            "compress_above": compress_above,
            # Early refresh and stale windows are redkit's decorator's; Flask-Caching has
            # its own decorators, which see a plain get and set.
            "beta": 0.0,
        }
        self._max_bytes = max_bytes
        self._compress_above = compress_above
        # Tags are scoped to the key prefix, so that two apps (or two Cache objects) on one
        # server with different CACHE_KEY_PREFIX clear and invalidate only their own entries.
        self._all_tag = _hashed("all:" + key_prefix)
        self._lock = threading.Lock()
        self._pid = 0
        self._cache: redkit.sync.Cache | None = None
        _LIVE.add(self)

    @classmethod
    def factory(
        cls, app: Flask, config: dict[str, Any], args: list[Any], kwargs: dict[str, Any]
    ) -> RedkitCache:
        """What Flask-Caching calls to build the backend of ``Cache(app)``."""
        if args:
            raise ConfigurationError(
                "RedkitCache takes no CACHE_ARGS: set CACHE_REDIS_URL, and CACHE_OPTIONS for "
                "the rest"
            )
        options = dict(kwargs)
        default_timeout = options.pop("default_timeout", config.get("CACHE_DEFAULT_TIMEOUT"))
        ignore_errors = options.pop("ignore_delete_many_errors", False)
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigurationError(
                f"RedkitCache does not know the CACHE_OPTIONS {', '.join(unknown)}; "
                f"it accepts {', '.join(sorted(_OPTIONS))}"
            )
        options.setdefault("namespace", app.config.get("REDKIT_NAMESPACE"))
        url = config.get("CACHE_REDIS_URL") or app.config.get("REDKIT_URL")
        prefix = config.get("CACHE_KEY_PREFIX")
        try:
            return cls(
                url,
                key_prefix="flask_cache_" if prefix is None else prefix,
                default_timeout=300 if default_timeout is None else default_timeout,
                ignore_delete_many_errors=bool(ignore_errors),
                **options,
            )
        except InvalidInput as exc:
            raise ConfigurationError(str(exc)) from exc

    def __repr__(self) -> str:
        return f"<RedkitCache prefix={self.key_prefix!r}>"

    # -- the client ---------------------------------------------------------------------------

    def _client(self) -> redkit.sync.Cache:
        pid = os.getpid()
        cache = self._cache
        if cache is not None and self._pid == pid:
            return cache
        with self._lock:
            if self._cache is None or self._pid != pid:
                # A client inherited through fork() is dropped, not closed: its sockets are
                # the parent's, which still uses them.
                rk = redkit.sync.connect(**self._connect)
                self._cache = rk.cache(**self._cache_options)
                self._pid = pid
            return self._cache

    def close(self) -> None:
        """Close this process's client (at exit, or in tests); the next call opens a new one."""
        with self._lock:
            cache, self._cache = self._cache, None
            mine = self._pid == os.getpid()
        if cache is not None and mine:
            cache.drain()
            cache.rk.close()

    # -- keys, timeouts, values ---------------------------------------------------------------

    def _keys(self, cache: redkit.sync.Cache, key: str) -> EntryKeys:
        if not isinstance(key, str):
            raise InvalidInput(f"a cache key must be a string, got {key!r}")
        return cache.keys_for(self.key_prefix + key)

    def _ttl_ms(self, timeout: Any) -> int:
        """The entry's lifetime in ms: ``None`` the default, 0 ``max_timeout``."""
        if timeout is None:
            timeout = self._default_s
        if isinstance(timeout, timedelta):
            timeout = timeout.total_seconds()
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or timeout != timeout
            or timeout < 0
        ):
            raise InvalidInput(
                f"timeout must be seconds >= 0 (0: never expires) or None, got {timeout!r}"
            )
        if timeout == 0:
            return self._max_ms
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
            names.append(_hashed(f"tag:{self.key_prefix}:{tag}"))
        return names

    def _payload(self, value: Any) -> bytes:
        """``<kind><compression><data>``, the payload of a redkit cache entry."""
        if type(value) is int:
            # Always plain JSON, pickle or not, so that cache_inc.lua can read it.
            return pack(b"J", dumps(value), None)
        if isinstance(value, tuple) and any(isinstance(item, Response) for item in value):
            if not has_app_context():
                raise InvalidInput("a (response, status) tuple is stored inside an app only")
            value = current_app.make_response(value)
        if isinstance(value, Response):
            return self._sized(b"H", _response_bytes(value), "as a response")
        if type(value) in _STANDARD_ERRORS and value.response is None:
            # Rebuilt from code and text on a hit: an error with headers of its own (a 405's
            # Allow, a 401's WWW-Authenticate, a 429's Retry-After) would lose them.
            if value.get_headers() != type(value)(description=value.description).get_headers():
                raise InvalidInput(
                    f"a {type(value).__name__} with headers of its own is not cached (they "
                    "would be lost on a hit): it is served uncached"
                )
            error = {"code": value.code, "description": value.description}
            return pack(b"E", dumps(error, max_bytes=self._max_bytes), None)
        if self._pickle:
            return self._sized(
                b"P", pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), "pickled"
            )
        if isinstance(value, tuple):
            _check_exact_json(list(value))
            data = dumps(list(value), max_bytes=self._max_bytes, what="cached value")
            return pack(b"T", data, self._compress_above)
        if not isinstance(value, bytes):
            _check_exact_json(value)
        return encode(value, max_bytes=self._max_bytes, compress_above=self._compress_above)

    def _sized(self, kind: bytes, data: bytes, how: str) -> bytes:
        if len(data) > self._max_bytes:
            raise InvalidInput(
                f"cached value is {len(data):,} bytes {how}, over the {self._max_bytes:,}-byte "
                "cap; raise it with CACHE_OPTIONS max_bytes"
            )
        return pack(kind, data, self._compress_above)

    def _decode(self, raw: bytes) -> Any:
        start = raw.index(b"|", 0, 80) + 1
        kind = raw[start]
        data: bytes | memoryview = memoryview(raw)[start + 2 :]
        if raw[start + 1] == ZLIB:
            data = zlib.decompress(data)
        if kind == KIND_JSON:
            return orjson.loads(data)
        if kind == KIND_BYTES:
            return bytes(data)
        if kind == KIND_TUPLE:
            return tuple(orjson.loads(data))
        if kind == KIND_RESPONSE:
            return _response(data)
        if kind == KIND_ABORT:
            error = orjson.loads(data)
            return default_exceptions[error["code"]](description=error["description"])
        if kind == KIND_PICKLE and self._pickle:
            return pickle.loads(data)  # noqa: S301  (asked for with serializer "pickle")
        if kind == KIND_PICKLE:
            # Never unpickle unless asked: whoever can write to the server would run code here.
            raise InvalidInput("this entry was stored with serializer 'pickle', which is not set")
        raise InvalidInput("this entry was not stored by RedkitCache; give it a name of its own")

    # -- Flask-Caching's API ------------------------------------------------------------------

    def get(self, key: str) -> Any:
        """The value under ``key``, or ``None``. One round trip."""
        cache = self._client()
        found = cache.lookup(self._keys(cache, key), "peek", "", 0.0)
        return self._decode(found.raw) if found.raw is not None else None

    def has(self, key: str) -> bool:
        """Whether ``key`` has a value (without decoding it)."""
        cache = self._client()
        return cache.lookup(self._keys(cache, key), "peek", "", 0.0).raw is not None

    def set(
        self,
        key: str,
        value: Any,
        timeout: float | timedelta | None = None,
        tags: Iterable[str] | None = None,
    ) -> bool:
        """Store ``value`` for ``timeout`` seconds (0: never expires) under ``tags``; True.

        :class:`~redkit.errors.InvalidInput` for a value this serializer cannot store exactly,
        a bad timeout or tag; then nothing was written (an old value stays).
        """
        cache = self._client()
        keys = self._keys(cache, key)
        ttl = self._ttl_ms(timeout)
        names = self._tags(tags)
        cache.store(keys, self._payload(value), Policy(ttl, 0, 0, 0.0), tags=names)
        return True

    def add(
        self,
        key: str,
        value: Any,
        timeout: float | timedelta | None = None,
        tags: Iterable[str] | None = None,
    ) -> bool:
        """Store ``value`` only if ``key`` has no value; True if stored. Atomic."""
        cache = self._client()
        keys = self._keys(cache, key)
        ttl = self._ttl_ms(timeout)
        names = self._tags(tags)
        payload = self._payload(value)
        tag_keys = [keys.shard.tag(n) for n in names]
        return bool(cache.rk.run(CACHE_SCRIPTS["add"], [keys.entry, *tag_keys], [payload, ttl]))

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there."""
        cache = self._client()
        self._keys(cache, key)  # the key's checks
        return cache.delete(self.key_prefix + key)

    def get_many(self, *keys: str) -> list[Any]:
        """The values of ``keys``, in order (``None`` for a key without one)."""
        return [self.get(key) for key in keys]

    def set_many(
        self,
        mapping: Mapping[str, Any],
        timeout: float | timedelta | None = None,
        tags: Iterable[str] | None = None,
    ) -> list[Any]:
        """Store every item; returns the keys stored (all of them: a failure raises).

        Every value is encoded before the first is written, so a value that cannot be stored
        raises :class:`~redkit.errors.InvalidInput` with nothing written.
        """
        cache = self._client()
        ttl = self._ttl_ms(timeout)
        names = self._tags(tags)
        planned = [(key, self._keys(cache, key), self._payload(v)) for key, v in mapping.items()]
        policy = Policy(ttl, 0, 0, 0.0)
        for _, keys, payload in planned:
            cache.store(keys, payload, policy, tags=names)
        return [key for key, _, _ in planned]

    def delete_many(self, *keys: str) -> list[Any]:
        """Remove every key; returns them all (a key that was not there is deleted too)."""
        for key in keys:
            self.delete(key)
        return list(keys)

    def clear(self) -> bool:
        """Delete every entry of this backend's ``CACHE_KEY_PREFIX``, and nothing else on the
        server (no FLUSHDB, no KEYS/SCAN): one script per shard. True."""
        self._client().invalidate(self._all_tag)
        return True

    def inc(self, key: str, delta: int = 1) -> int:
        """Add ``delta`` to the integer under ``key``, atomically, keeping its expiry; a key
        without a value starts at ``delta`` (with the default timeout). The new value.

        :class:`~redkit.errors.InvalidInput` if the value is not an integer, or the result
        leaves +-2**53.
        """
        if isinstance(delta, bool) or not isinstance(delta, int) or abs(delta) > 2**53:
            raise InvalidInput(f"delta must be an integer, got {delta!r}")
        cache = self._client()
        keys = self._keys(cache, key)
        ttl = self._ttl_ms(None)
        reply = cache.rk.run(
            SCRIPTS["cache_inc"], [keys.entry, keys.shard.tag(self._all_tag)], [delta, ttl]
        )
        status = int(reply[0])
        if status == -1:
            raise InvalidInput(f"the value of key {key!r} is not an integer")
        if status == -2:
            raise InvalidInput(f"adding {delta} to key {key!r} leaves the range of +-2**53")
        return int(reply[1])

    def dec(self, key: str, delta: int = 1) -> int:
        """Subtract ``delta``: :meth:`inc` with ``-delta``."""
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise InvalidInput(f"delta must be an integer, got {delta!r}")
        return self.inc(key, -delta)

    # -- beyond Flask-Caching -----------------------------------------------------------------

    def invalidate(self, *tags: str) -> int:
        """Delete every entry stored under any of ``tags``; returns how many were deleted.

        One script per shard, never KEYS or SCAN; a tag is this backend's own (another
        ``CACHE_KEY_PREFIX``'s entries under the same tag name stay).
        """
        names = self._tags(tags)[1:]
        return self._client().invalidate(*names) if names else 0


# The standard HTTP errors by class (abort(404) raises NotFound): rebuilt from code and text.
_STANDARD_ERRORS: Final = frozenset(default_exceptions.values())
_EXACT_JSON: Final = (str, int, float, bool, type(None))


def _check_exact_json(value: Any) -> None:
    """Raise InvalidInput unless ``value`` reads back from JSON as the same types.

    orjson would write a datetime, a UUID or a dataclass as text or a dict, and a tuple as a
    list; a memoized function would then return other types from the cache than when it ran.
    Bounded: the walk stops past orjson's own depth limit.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind in _EXACT_JSON:
            continue
        if depth > 254:
            raise InvalidInput("cached value is nested too deeply for JSON")
        if kind is list:
            stack.extend((child, depth + 1) for child in item)
            continue
        if kind is dict:
            for name, child in item.items():
                if type(name) is not str:
                    raise InvalidInput(
                        f"cached value has a {type(name).__name__} dict key ({name!r}), which "
                        "JSON would turn into text; use str keys, or CACHE_OPTIONS "
                        "{'serializer': 'pickle'}"
                    )
                stack.append((child, depth + 1))
            continue
        where = "inside a value " if depth else ""
        raise InvalidInput(
            f"cached value holds a {kind.__module__}.{kind.__qualname__} {where}that JSON "
            "cannot give back as it is; store JSON types (a tuple only at the top level), or "
            "set CACHE_OPTIONS {'serializer': 'pickle'}"
        )


def _response_bytes(response: Response) -> bytes:
    """A response as ``<JSON of status and headers>\\n<body>``; refused if it sets a cookie."""
    if response.direct_passthrough:
        raise InvalidInput(
            "a file response (direct passthrough, as send_file gives) is not cached: its body "
            "is not in memory (keep the view out of the cache with unless=)"
        )
    if "Set-Cookie" in response.headers:
        raise InvalidInput(
            "a response that sets a cookie is not cached: every client would get that cookie "
            "(keep the view out of the cache with unless= or response_filter=)"
        )
    meta = {"status": response.status_code, "headers": list(response.headers.items())}
    return orjson.dumps(meta) + b"\n" + response.get_data()


def _response(data: bytes | memoryview) -> Response:
    raw = bytes(data)
    meta_end = raw.index(b"\n")
    meta = orjson.loads(raw[:meta_end])
    return Response(raw[meta_end + 1 :], status=meta["status"], headers=meta["headers"])
