"""A distributed read-write lock: any number of readers at once, or one writer alone.

::

    catalog = rk.read_write_lock("catalog", ttl=30)
    async with catalog.read() as lease:      # beside any number of other readers
        ...
    async with catalog.write() as lease:     # alone: no reader, no other writer
        await publish(fence=lease.fencing_token)

**Fairness.** Waiters queue in arrival order, and a writer is not starved by readers that keep
coming: a reader that arrives while a writer is queued waits behind that writer, even while
other readers hold the lock. A writer enters when nobody holds the lock and it is first in the
queue. When the lock frees, the readers queued before the first queued writer enter together.
Leases are not re-entrant and cannot be upgraded: a task that holds a read lease and asks for
another one (or for the write lease) while a writer is queued waits behind that writer, which
waits for it, until the timeout.

**Fencing tokens.** Each write lease gets a token strictly greater than every earlier one of
that name, made as the lock's are (one past the last, or the server's clock in microseconds
where that is larger; see :mod:`redkit.locks.lock`), so tokens keep increasing across expiry,
restarts and failovers; a resource that remembers the highest token it accepted can refuse a
late write from a writer that paused past its lease. A read lease carries the token of the
latest writer before it (0 if none yet): what it reads was written under that token or an
earlier one (no writer can write while it reads).

**Leases and waiting.** Read leases live in one sorted set scored by their end (ended ones are
pruned on every call), the write lease in one key with a TTL: a holder that dies frees the lock
when its lease ends, and ``auto_renew`` extends a live one every ``ttl / 3``. A waiter blocks
on its own wake list, as for :class:`~redkit.locks.Lock`; a release (or a waiter that leaves)
wakes exactly the waiters that may enter now, and they try again: there is no hand-over.

**Bounds.** Every key of a name but the fencing counter has a TTL: the readers' set the longest
read lease, the writer key its lease, the queues and wake lists the waiter lease (a few
seconds, refreshed by waiting waiters). A call prunes at most 100 waiters presumed gone, and
one release wakes at most 100 readers; each of them that enters wakes the next reader in the
queue, so a longer line of readers streams in without one call waking them all.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from redkit.codec import seconds
from redkit.errors import InvalidInput, LockLost, translate_redis_errors
from redkit.locks._common import (
    DEFAULT,
    Lease,
    LostCallback,
    LostSignal,
    Renewer,
    acquire_loop,
    check_timeout,
    lease_options,
    waiter_lease_ms,
)
from redkit.scripts import ScriptSet

if TYPE_CHECKING:
    from redkit.client import Redkit

__all__ = ["LeaseContext", "ReadWriteLease", "ReadWriteLock"]

SCRIPTS = ScriptSet(__package__)

Mode = Literal["read", "write"]


class ReadWriteLock:
    """Many readers or one writer of ``name``. Make it with ``rk.read_write_lock(...)``.

    Like a :class:`~redkit.locks.Semaphore`, one object can be shared by many tasks: each
    acquire returns its own :class:`ReadWriteLease`. ``ttl``, ``timeout``, ``auto_renew`` and
    ``on_lost`` mean what they mean for a lock (``on_lost`` receives the lease).

    - :meth:`read` / :meth:`write`: ``async with rw.read() as lease:``.
    - :meth:`acquire_read` / :meth:`acquire_write`: the lease, to release yourself.
    """

    def __init__(
        self,
        rk: Redkit,
        name: str,
        *,
        ttl: float | timedelta = 30,
        timeout: float | timedelta | None = None,
        auto_renew: bool = True,
        on_lost: LostCallback | None = None,
    ) -> None:
        self.rk = rk
        self.name, self.ttl, self._ttl_ms, self.timeout = lease_options(
            name, "read-write lock", ttl, timeout
        )
        self.auto_renew = bool(auto_renew)
        self.on_lost = on_lost
        group = rk.keys.group("rwlock", name)
        # The same keys for every script but extend and state (one hash slot), in order.
        self._keys = (
            group.key("readers"),
            group.key("writer"),
            group.key("fence"),
            group.key("queue"),
            group.key("wqueue"),
            group.key("deadlines"),
            group.key("wake"),
        )
        self._readers, self._writer, self._fence, self._queue = self._keys[:4]
        self._wake = self._keys[6]
        self._lease_ms = waiter_lease_ms(rk)

    def __repr__(self) -> str:
        return f"<ReadWriteLock {self.name!r} ttl={self.ttl:g}s>"

    # -- state -------------------------------------------------------------------------------

    async def _state(self) -> list[int]:
        keys = [self._readers, self._writer, self._fence, self._queue]
        return [int(v) for v in await self.rk.run(SCRIPTS["rw_state"], keys=keys)]

    async def readers(self) -> int:
        """How many read leases are live now (by the server's clock)."""
        return (await self._state())[0]

    async def writer_held(self) -> bool:
        """True if a writer holds the lock now."""
        with translate_redis_errors(f"read-write lock {self.name!r}"):
            return bool(await self.rk.redis.exists(self._writer))

    # -- acquiring ---------------------------------------------------------------------------

    async def acquire_read(
        self,
        timeout: float | timedelta | None = DEFAULT,  # noqa: ASYNC109 (public API)
    ) -> ReadWriteLease:
        """Wait for a read lease and take it. Raises :class:`LockNotAcquired` on timeout.

        ``timeout`` overrides the constructor's (``None``: forever, ``0``: one try).
        """
        return await self._acquire("read", timeout)

    async def acquire_write(
        self,
        timeout: float | timedelta | None = DEFAULT,  # noqa: ASYNC109 (public API)
    ) -> ReadWriteLease:
        """Wait for the write lease and take it. Raises :class:`LockNotAcquired` on timeout.

        ``timeout`` overrides the constructor's (``None``: forever, ``0``: one try).
        """
        return await self._acquire("write", timeout)

    def read(self, timeout: float | timedelta | None = DEFAULT) -> LeaseContext:
        """``async with rw.read() as lease:`` holds a read lease for the block."""
        return LeaseContext(lambda: self._acquire("read", timeout))

    def write(self, timeout: float | timedelta | None = DEFAULT) -> LeaseContext:
        """``async with rw.write() as lease:`` holds the write lease for the block."""
        return LeaseContext(lambda: self._acquire("write", timeout))

    async def _acquire(
        self,
        mode: Mode,
        timeout: float | timedelta | None,  # noqa: ASYNC109
    ) -> ReadWriteLease:
        wait = self.timeout if timeout is DEFAULT else check_timeout(timeout, "read-write lock")
        # The first character tells the scripts the mode.
        token = ("r" if mode == "read" else "w") + secrets.token_hex(16)
        keys = self._keys
        loop = asyncio.get_running_loop()
        sent = 0.0

        async def attempt(join: bool) -> tuple[bool, int]:
            nonlocal sent
            sent = loop.time()
            ok, value = await self.rk.run(
                SCRIPTS["rw_acquire"],
                keys=keys,
                args=[token, self._ttl_ms, int(join), self._lease_ms],
            )
            return bool(ok), int(value)

        async def leave() -> object:
            # Leaves the queue and gives back a lease an interrupted attempt may have taken:
            # both leave and undo (token-checked, a no-op for a token that holds nothing).
            return await self.rk.run(SCRIPTS["rw_leave"], keys=keys, args=[token, self._lease_ms])

        fence = await acquire_loop(
            self.rk,
            attempt=attempt,
            leave=leave,
            undo=leave,
            wake_key=f"{self._wake}:{token}",
            timeout=wait,
            what=f"a {mode} lease of read-write lock {self.name!r}",
        )
        # The lease started at the earliest when the last attempt was sent.
        return ReadWriteLease(self, mode, token, fence, sent)


class LeaseContext:
    """What :meth:`ReadWriteLock.read` and :meth:`ReadWriteLock.write` return: acquires on
    entering the ``async with`` block, releases on leaving it. One block at a time: to hold
    several leases, call ``read()`` / ``write()`` once per block."""

    __slots__ = ("_acquire", "_entered", "_lease")

    def __init__(self, acquire: Callable[[], Awaitable[ReadWriteLease]]) -> None:
        self._acquire = acquire
        # Set before the acquire is awaited, so a second task entering the same object while
        # the first waits is refused instead of overwriting (and leaking) the first's lease.
        self._entered = False
        self._lease: ReadWriteLease | None = None

    async def __aenter__(self) -> ReadWriteLease:
        if self._entered:
            raise InvalidInput(
                "this read()/write() block is already entered; call read() or write() again "
                "for each block"
            )
        self._entered = True
        try:
            self._lease = await self._acquire()
        except BaseException:
            self._entered = False
            raise
        return self._lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lease, self._lease = self._lease, None
        self._entered = False
        assert lease is not None
        await lease.__aexit__(exc_type, exc, tb)


class ReadWriteLease(Lease):
    """One held read or write lease of a :class:`ReadWriteLock`.

    Release it, extend it, watch for its loss (:attr:`lost_event`, ``on_lost``).
    """

    def __init__(
        self, lock: ReadWriteLock, mode: Mode, token: str, fencing_token: int, sent: float
    ) -> None:
        self.lock = lock
        self.mode: Mode = mode
        """``"read"`` or ``"write"``."""
        self.fencing_token = fencing_token
        """A write lease's own token; for a read lease, the latest writer's before it (0 if
        none)."""
        self._token: str | None = token
        self._lost = LostSignal(lock.on_lost)
        self._renewer: Renewer | None = None
        if lock.auto_renew:
            self._renewer = Renewer(self._renew, lock.ttl, self._on_lost, sent + lock.ttl)

    def __repr__(self) -> str:
        state = "lost" if self.lost else ("held" if self._token else "released")
        return (
            f"<ReadWriteLease {self.mode} of {self.lock.name!r} {state} "
            f"fencing_token={self.fencing_token}>"
        )

    async def release(self) -> None:
        """Give the lease back. Raises :class:`LockLost` if it had already ended.

        A write lease that ended and was taken by another writer is left alone: the script
        checks the token before it deletes anything.
        """
        token = self._token
        if token is None:
            raise InvalidInput(self._released_message())
        await self._stop_renewer()
        lock = self.lock
        released = await lock.rk.run(
            SCRIPTS["rw_release"], keys=lock._keys, args=[token, lock._lease_ms]
        )
        # Forget the token only once the server answered, so a failed release can be retried.
        self._token = None
        if not released:
            self._lost.fire(self, "its lease had ended at release")
            raise LockLost(self._lost_message())

    async def extend(self, ttl: float | timedelta | None = None) -> None:
        """Renew the lease to ``ttl`` from now (default: the lock's ``ttl``).

        Raises :class:`LockLost` if the lease is no longer ours.
        """
        if self._token is None:
            raise InvalidInput(self._released_message())
        ttl_s = self.lock.ttl if ttl is None else seconds(ttl, "read-write lock ttl")
        await self._extend_or_raise(ttl_s, "its lease had ended at extend")

    async def _extend(self, ttl_ms: int) -> bool:
        assert self._token is not None
        lock = self.lock
        result = await lock.rk.run(
            SCRIPTS["rw_extend"], keys=[lock._readers, lock._writer], args=[self._token, ttl_ms]
        )
        return bool(result)

    async def _renew(self) -> bool:
        return await self._extend(self.lock._ttl_ms)

    def _released_message(self) -> str:
        return f"this {self.mode} lease of {self.lock.name!r} was already released"

    def _lost_message(self) -> str:
        if self.mode == "write":
            return (
                f"the write lease of read-write lock {self.lock.name!r} (fencing token "
                f"{self.fencing_token}) was lost: {self._lost.reason}. Readers or another "
                "writer may have run meanwhile; work done since then was not protected. Use "
                "auto_renew=True or a longer ttl, and have the resource check fencing tokens."
            )
        return (
            f"a read lease of read-write lock {self.lock.name!r} was lost: {self._lost.reason}. "
            "A writer may have run meanwhile, so what was read may have changed. Use "
            "auto_renew=True or a longer ttl."
        )

    async def __aenter__(self) -> ReadWriteLease:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._release_on_exit(exc)
