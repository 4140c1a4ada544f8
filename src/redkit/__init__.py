"""redkit: sessions, caching, rate limits, notifications, locks and jobs on Redis/Valkey.

Start with :func:`connect`::

    import redkit

    async with redkit.connect() as rk:      # embedded Valkey unless REDIS_URL is set
        ...
"""

from redkit._version import __version__
from redkit.cache import Cache, CacheStats
from redkit.client import Redkit, ServerInfo, connect
from redkit.embedded import EmbeddedValkey
from redkit.errors import (
    AmbiguousSessionPrefix,
    ConfigurationError,
    ConnectionLost,
    CrossSlotKeys,
    EmbeddedServerError,
    InvalidInput,
    JobFailed,
    JobTimeout,
    LockLost,
    LockNotAcquired,
    NotReplicated,
    RateLimited,
    RedkitError,
    ScriptError,
    ServerError,
    SessionNotFound,
)
from redkit.jobs import Job, JobSpec, JobState, Queue, Schedule, Worker
from redkit.keys import KeyGroup, Keyspace
from redkit.locks import Lock, Permit, ReadWriteLease, ReadWriteLock, Redlock, Semaphore
from redkit.notify import Event, NotificationBus, SlowConsumer, Subscription
from redkit.ratelimit import Algorithm, CircuitBreaker, Decision, RateLimiter, RateLimits
from redkit.sessions import Permissions, Session, SessionInfo, SessionStore
from redkit.settings import Settings

__all__ = [
    "Algorithm",
    "AmbiguousSessionPrefix",
    "Cache",
    "CacheStats",
    "CircuitBreaker",
    "ConfigurationError",
    "ConnectionLost",
    "CrossSlotKeys",
    "Decision",
    "EmbeddedServerError",
    "EmbeddedValkey",
    "Event",
    "InvalidInput",
    "Job",
    "JobFailed",
    "JobSpec",
    "JobState",
    "JobTimeout",
    "KeyGroup",
    "Keyspace",
    "Lock",
    "LockLost",
    "LockNotAcquired",
    "NotReplicated",
    "NotificationBus",
    "Permissions",
    "Permit",
    "Queue",
    "RateLimited",
    "RateLimiter",
    "RateLimits",
    "ReadWriteLease",
    "ReadWriteLock",
    "Redkit",
    "RedkitError",
    "Redlock",
    "Schedule",
    "ScriptError",
    "Semaphore",
    "ServerError",
    "ServerInfo",
    "Session",
    "SessionInfo",
    "SessionNotFound",
    "SessionStore",
    "Settings",
    "SlowConsumer",
    "Subscription",
    "Worker",
    "__version__",
    "connect",
]
