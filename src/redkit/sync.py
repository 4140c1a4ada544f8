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

What it has: ``sessions``, ``cache`` (``get_or_set`` and ``@cached`` take plain functions),
``rate_limiter`` / ``rate_limits``, ``lock``, ``semaphore``, ``read_write_lock``, ``queue``
(enqueue, get, ``job.result()``, stats, cancel, retry, ...) and ``notifications`` (publish and
history). What stays async: the worker and schedules (``redkit worker`` runs plain ``def``
job functions in its threads), subscriptions, ``Redlock`` and the web middleware.

Where the two differ (each place is marked ``IS_ASYNC`` in the async source): no automatic
pipeline (a sync call is one plain round trip on a pooled connection; threads beyond
``max_connections`` wait for one), ``rk.run(..., time_limit=)`` is not applied (a call is
bounded by the command timeout, so a rate limiter's fail policy answers within that rather
than its own ``timeout``), a lease's watchdog is a timer on one shared thread and then a
thread of its own while it renews, and the client does not follow an embedded server that
restarted on another port. One :class:`Redkit` may be shared by every thread.
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
from redkit.sessions.store import Session, SessionActivity, SessionInfo

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
    "SessionActivity",
    "SessionInfo",
    "SessionNotFound",
    "SessionStore",
    "connect",
]
