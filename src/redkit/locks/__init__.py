"""Locks: a fenced, auto-renewed lock; a semaphore; Redlock over independent masters.

- :class:`Lock` (``rk.lock(name, ttl=30, timeout=None, auto_renew=True)``): one holder,
  fencing tokens, waiters woken on release (no polling), optional FIFO fairness.
- :class:`Semaphore` (``rk.semaphore(name, limit, ttl)``): at most ``limit`` holders, each
  a lease that ends if its holder dies.
- :class:`ReadWriteLock` (``rk.read_write_lock(name, ttl)``): many readers or one writer,
  writers not starved by readers that keep coming, fencing tokens for writes.
- :class:`Redlock`: a lock held on a majority of independent masters.
- :func:`list_locks`, :func:`force_release`: for operators (``redkit locks list|release``).
"""

from redkit.locks.admin import LockInfo, force_release, list_locks
from redkit.locks.lock import Lock
from redkit.locks.redlock import CLOCK_DRIFT_FACTOR, Redlock
from redkit.locks.rwlock import LeaseContext, ReadWriteLease, ReadWriteLock
from redkit.locks.semaphore import Permit, Semaphore

__all__ = [
    "CLOCK_DRIFT_FACTOR",
    "LeaseContext",
    "Lock",
    "LockInfo",
    "Permit",
    "ReadWriteLease",
    "ReadWriteLock",
    "Redlock",
    "Semaphore",
    "force_release",
    "list_locks",
]
