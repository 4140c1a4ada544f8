"""Every error redkit raises is a :class:`RedkitError`.

Each message says what happened and, where there is one, what to do about it. Errors raised by
redis-py are translated at the boundary (see :func:`translate_redis_errors`), so callers never
need to import ``redis.exceptions`` to handle a redkit failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis.exceptions as redis_errors

__all__ = [
    "AmbiguousSessionPrefix",
    "ConfigurationError",
    "ConnectionLost",
    "CrossSlotKeys",
    "EmbeddedServerError",
    "InvalidInput",
    "JobFailed",
    "JobTimeout",
    "LockLost",
    "LockNotAcquired",
    "NotReplicated",
    "RateLimited",
    "RedkitError",
    "ScriptError",
    "ServerError",
    "SessionNotFound",
    "connection_lost",
    "translate_redis_errors",
]


class RedkitError(Exception):
    """Base class of every error redkit raises."""


class ConnectionLost(RedkitError):
    """The server could not be reached, or did not answer within the command timeout.

    redkit reconnects by itself: the next call after the server is back succeeds.
    """


class NotReplicated(ConnectionLost):
    """A write asked for ``durability="replicated"`` ran on the master, but fewer replicas
    than asked confirmed it (``WAIT``) within the time allowed.

    The write is not undone: it may survive or be lost in a failover, as any write whose
    answer was lost. ``confirmed`` replicas had it, ``wanted`` were asked for.
    """

    def __init__(self, message: str, confirmed: int, wanted: int) -> None:
        super().__init__(message)
        self.confirmed = confirmed
        self.wanted = wanted


class InvalidInput(RedkitError, ValueError):
    """An argument was rejected before anything was written."""


class ConfigurationError(InvalidInput):
    """A URL, setting or option cannot be used as given."""


class CrossSlotKeys(InvalidInput):
    """The keys of one atomic operation hash to different Cluster slots.

    Build them from one :class:`redkit.keys.KeyGroup` so they share a hash tag.
    """


class EmbeddedServerError(RedkitError):
    """The embedded Valkey server could not be started, found or stopped."""


class ServerError(RedkitError):
    """The server refused a command: no permission (ACL), a key of another type, out of
    memory, a read-only replica. The message carries the server's own words."""


class ScriptError(ServerError):
    """A Lua script failed inside the server (a bug in redkit, or data it did not write)."""


class LockNotAcquired(RedkitError):
    """A lock or semaphore permit was not acquired within the timeout."""


class LockLost(RedkitError):
    """A lock is no longer held by its holder (it expired or was taken over)."""


class RateLimited(RedkitError):
    """A rate limit rejected the call; ``retry_after`` says when to try again (seconds)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SessionNotFound(RedkitError, KeyError):
    """No live session has this ID (it never existed, expired, or was revoked)."""

    def __str__(self) -> str:  # KeyError quotes its argument; a message reads better plain.
        return str(self.args[0]) if self.args else "session not found"


class AmbiguousSessionPrefix(InvalidInput):
    """An ID prefix names more than one live session of the user; nothing was ended.

    ``matches`` says how many it names: ask for a longer prefix (``list()`` shows 8
    characters).
    """

    def __init__(self, message: str, matches: int) -> None:
        super().__init__(message)
        self.matches = matches


class JobFailed(RedkitError):
    """A job ended in the failed state; ``error`` carries its last error text."""

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error


class JobTimeout(RedkitError, TimeoutError):
    """A job did not finish within the time the caller was willing to wait."""


def connection_lost(what: str, exc: BaseException) -> ConnectionLost:
    """The :class:`ConnectionLost` that stands for redis-py's ``exc`` during ``what``."""
    if isinstance(exc, redis_errors.ClusterDownError):
        return ConnectionLost(f"{what}: the Cluster is down or failing over ({exc}).")
    return ConnectionLost(
        f"{what}: the Redis server did not answer ({exc.__class__.__name__}: {exc}). "
        "redkit reconnects by itself; retry once the server is reachable."
    )


# What a dead, hung or failing-over server looks like from redis-py.
LOST_ERRORS = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterDownError,
    OSError,
)


@contextmanager
def translate_redis_errors(what: str = "command") -> Iterator[None]:
    """Re-raise redis-py's errors as redkit's: connection and timeout errors as
    :class:`ConnectionLost`, a refusal by the server as :class:`ServerError`.

    ``what`` names the operation in the message, so a log line says which call failed.
    """
    try:
        yield
    except LOST_ERRORS as exc:
        raise connection_lost(what, exc) from exc
    except redis_errors.ResponseError as exc:
        raise ServerError(f"{what}: the server refused it: {exc}") from exc
