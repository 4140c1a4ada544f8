"""redkit: sessions, caching, rate limits, notifications, locks and jobs on Redis/Valkey.

Start with :func:`connect`::

    import redkit

    async with redkit.connect() as rk:      # embedded Valkey unless REDIS_URL is set
        ...
"""

from redkit._version import __version__
from redkit.client import Redkit, ServerInfo, connect
from redkit.embedded import EmbeddedValkey
from redkit.errors import (
    ConfigurationError,
    ConnectionLost,
    CrossSlotKeys,
    EmbeddedServerError,
    InvalidInput,
    JobFailed,
    JobTimeout,
    LockLost,
    LockNotAcquired,
    RateLimited,
    RedkitError,
    ScriptError,
    SessionNotFound,
)
from redkit.keys import KeyGroup, Keyspace
from redkit.settings import Settings

__all__ = [
    "ConfigurationError",
    "ConnectionLost",
    "CrossSlotKeys",
    "EmbeddedServerError",
    "EmbeddedValkey",
    "InvalidInput",
    "JobFailed",
    "JobTimeout",
    "KeyGroup",
    "Keyspace",
    "LockLost",
    "LockNotAcquired",
    "RateLimited",
    "Redkit",
    "RedkitError",
    "ScriptError",
    "ServerInfo",
    "SessionNotFound",
    "Settings",
    "__version__",
    "connect",
]
