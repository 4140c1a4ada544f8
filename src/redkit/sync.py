"""The sync API: the same primitives on redis-py's sync client, for code without an event loop.

::

    import redkit.sync

    with redkit.sync.connect() as rk:         # embedded Valkey unless REDIS_URL is set
        store = rk.sessions(idle_ttl=3600)
        session = store.create("alice", {"theme": "dark"})

Every call is one plain round trip on the calling thread: no event loop, no thread hop, and
redis-py's pid check makes a forked process open its own connections. The modules behind
it (``redkit._sync``) are generated from the async source by ``tools/async_to_sync.py``, so
the two APIs share their scripts, keys, checks and reply parsing; the values they return
(``Session``, ``Decision``, ...) are the same classes as the async API's.
"""

from redkit._sync.cache.core import Cache
from redkit._sync.client import Redkit, ServerInfo, connect
from redkit._sync.jobs.queue import Job, Queue
from redkit._sync.locks.lock import Lock
from redkit._sync.locks.rwlock import LeaseContext, ReadWriteLease, ReadWriteLock
from redkit._sync.locks.semaphore import Permit, Semaphore
from redkit._sync.notify.bus import NotificationBus
from redkit._sync.ratelimit.limiter import RateLimiter, RateLimits
from redkit._sync.sessions.store import Permissions, SessionStore
from redkit.cache.core import CacheStats
from redkit.errors import (
    ConfigurationError,
    ConnectionLost,
    CrossSlotKeys,
    InvalidInput,
    JobFailed,
    JobTimeout,
    LockLost,
    LockNotAcquired,
    RateLimited,
    RedkitError,
    ScriptError,
    ServerError,
    SessionNotFound,
)
from redkit.jobs.queue import JobSpec, QueueStats
from redkit.jobs.states import PRIORITY_MAX, PRIORITY_MIN, JobState
from redkit.notify.events import Event
from redkit.ratelimit.limiter import Algorithm, CircuitBreaker, Decision, FailPolicy
from redkit.sessions.store import Session, SessionInfo

__all__ = [
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "Algorithm",
    "Cache",
    "CacheStats",
    "CircuitBreaker",
    "ConfigurationError",
    "ConnectionLost",
    "CrossSlotKeys",
    "Decision",
    "Event",
    "FailPolicy",
    "InvalidInput",
    "Job",
    "JobFailed",
    "JobSpec",
    "JobState",
    "JobTimeout",
    "LeaseContext",
    "Lock",
    "LockLost",
    "LockNotAcquired",
    "NotificationBus",
    "Permissions",
    "Permit",
    "Queue",
    "QueueStats",
    "RateLimited",
    "RateLimiter",
    "RateLimits",
    "ReadWriteLease",
    "ReadWriteLock",
    "Redkit",
    "RedkitError",
    "ScriptError",
    "Semaphore",
    "ServerError",
    "ServerInfo",
    "Session",
    "SessionInfo",
    "SessionNotFound",
    "SessionStore",
    "connect",
]
