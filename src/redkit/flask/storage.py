"""A ``limits`` storage on redkit, so Flask-Limiter (and anything else built on ``limits``)
runs on redkit unchanged: ``RATELIMIT_STORAGE_URI = "redkit://localhost:6379/0"``.

The URI is ``redkit`` followed by what a redis-py URL holds: ``redkit://host:port/db``,
``redkits://`` (TLS), ``redkit+cluster://h1:p1,h2:p2``, ``redkit+sentinel://s1:26379/mymaster``,
``redkit+unix:///path/to/socket``. The one option, ``namespace`` (default ``"rk"``), is the key
prefix (Flask-Limiter: ``RATELIMIT_STORAGE_OPTIONS = {"namespace": "myapp"}``).

What it does better than ``limits``' own Redis storage: every operation is one script on the
server's clock (``TIME``), never the client's, so the windows of several app servers agree
whatever their clocks say; each limit's keys share a hash tag (a Cluster serves each in one
slot); ``reset()`` walks the namespace with ``SCAN``, never ``KEYS``. It supports the three
``limits`` strategies: fixed window, moving window and sliding window counter.

Keys of one limit key ``K`` (``K`` itself when at most 256 characters, else its SHA-256):

    <ns>:{limits:K}:c        fixed window counter       TTL: the window
    <ns>:{limits:K}:m        moving window entries      at most `limit` members; TTL: the window
    <ns>:{limits:K}:q        their sequence number      TTL: the window
    <ns>:{limits:K}:w:<n>    sliding window n's count   TTL: two windows

One client per process, made on first use (a forked worker makes its own).
"""

from __future__ import annotations

import hashlib
import os
import threading

from limits.storage import MovingWindowSupport, SlidingWindowCounterSupport, Storage

import redkit.sync
from redkit.errors import ConfigurationError, RedkitError
from redkit.keys import KeyGroup
from redkit.scripts import ScriptSet

__all__ = ["RedkitStorage"]

SCRIPTS = ScriptSet(__package__)

# The redkit scheme -> the redis-py scheme it stands for.
_SCHEMES = {
    "redkit": "redis",
    "redkits": "rediss",
    "redkit+cluster": "redis+cluster",
    "redkits+cluster": "rediss+cluster",
    "redkit+sentinel": "redis+sentinel",
    "redkits+sentinel": "rediss+sentinel",
    "redkit+unix": "unix",
}
_MAX_KEY = 256


class RedkitStorage(Storage, MovingWindowSupport, SlidingWindowCounterSupport):
    """``limits`` storage for the ``redkit://`` schemes (see the module docs)."""

    STORAGE_SCHEME = list(_SCHEMES)  # noqa: RUF012 (limits declares it a plain list)

    def __init__(
        self,
        uri: str,
        wrap_exceptions: bool = False,
        namespace: str = "rk",
        **options: float | str | bool,
    ) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        scheme, sep, rest = uri.partition("://")
        if not sep or scheme.lower() not in _SCHEMES:
            raise ConfigurationError(
                f"a redkit limits storage URI starts with one of {', '.join(_SCHEMES)}://"
            )
        if options:
            raise ConfigurationError(
                f"unknown redkit storage options {sorted(options)}; the one option is namespace"
            )
        self._url = f"{_SCHEMES[scheme.lower()]}://{rest}"
        self._namespace = namespace
        self._lock = threading.Lock()
        self._pid = 0
        self._client: redkit.sync.Redkit | None = None

    def __repr__(self) -> str:
        return f"<RedkitStorage namespace={self._namespace!r}>"

    @property
    def rk(self) -> redkit.sync.Redkit:
        """The client of this process (made on first use; a forked child makes its own)."""
        client, pid = self._client, os.getpid()
        if client is not None and self._pid == pid:
            return client
        with self._lock:
            if self._client is None or self._pid != pid:
                self._client = redkit.sync.connect(self._url, self._namespace)
                self._pid = pid
            return self._client

    def close(self) -> None:
        """Close this process's client (a new one is made if the storage is used again)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None and self._pid == os.getpid():
            client.close()

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return RedkitError

    def _group(self, key: str) -> KeyGroup:
        ident = key if len(key) <= _MAX_KEY else hashlib.sha256(key.encode()).hexdigest()
        return self.rk.keys.group("limits", ident)

    # -- fixed window ----------------------------------------------------------------------

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        counter = self._group(key).key("c")
        return int(self.rk.run(SCRIPTS["limits_incr"], [counter], [_ms(expiry), amount]))

    def get(self, key: str) -> int:
        value = self.rk.redis.get(self._group(key).key("c"))
        return int(value or 0)

    def get_expiry(self, key: str) -> float:
        now, ttl = self.rk.run(SCRIPTS["limits_expiry"], [self._group(key).key("c")])
        return (int(now) + max(0, int(ttl))) / 1000

    def clear(self, key: str) -> None:
        group = self._group(key)
        self.rk.redis.delete(group.key("c"), group.key("m"), group.key("q"))

    # -- moving window ---------------------------------------------------------------------

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        group = self._group(key)
        taken = self.rk.run(
            SCRIPTS["limits_moving_acquire"],
            [group.key("m"), group.key("q")],
            [_ms(expiry), limit, amount],
        )
        return bool(taken)

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        oldest, count = self.rk.run(
            SCRIPTS["limits_moving_window"], [self._group(key).key("m")], [_ms(expiry)]
        )
        return float(oldest) / 1e6, int(count)

    # -- sliding window counter ------------------------------------------------------------

    def acquire_sliding_window_entry(
        self, key: str, limit: int, expiry: int, amount: int = 1
    ) -> bool:
        taken = self.rk.run(
            SCRIPTS["limits_sliding_acquire"],
            [self._group(key).key()],
            [_ms(expiry), limit, amount],
        )
        return bool(taken)

    def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        before, count, left = self.rk.run(
            SCRIPTS["limits_sliding_window"], [self._group(key).key()], [_ms(expiry)]
        )
        # The previous window counts until the current one ends; the current one, a window
        # longer.
        return int(before), int(left) / 1000, int(count), (int(left) + _ms(expiry)) / 1000

    def clear_sliding_window(self, key: str, expiry: int) -> None:
        self.rk.run(SCRIPTS["limits_sliding_clear"], [self._group(key).key()], [_ms(expiry)])

    # -- the whole storage -----------------------------------------------------------------

    def check(self) -> bool:
        try:
            return bool(self.rk.redis.ping())
        except Exception:
            return False

    def reset(self) -> int | None:
        """Delete every key of this storage (in its namespace), walking it with SCAN."""
        redis = self.rk.redis
        pattern = self.rk.keys.namespace + ":{limits:*"
        deleted = 0
        for key in redis.scan_iter(match=pattern, count=1000):
            deleted += int(redis.unlink(key))
        return deleted


def _ms(seconds: float) -> int:
    """A ``limits`` expiry (whole seconds) in ms, never 0."""
    return max(1, round(seconds * 1000))
