"""A distributed lock on one server (or Cluster): fenced, auto-renewed, woken without polling.

::

    async with rk.lock("db:p1", ttl=30, timeout=10) as lock:
        await create_database(fence=lock.fencing_token)

**Fencing tokens.** Each successful acquire gets a token strictly greater than every earlier
one of that name: one past the last token, or the server's clock in microseconds since 1970
where that is larger (so tokens are large, about 1.8e15, and not consecutive: store them in a
64-bit column; they stay below 2**53, exact in JSON and JavaScript, until the year 2255). A
holder that paused (GC, swap, a slow network) may still believe it holds an expired lock; the
resource it writes to must therefore remember the highest token it has accepted and refuse a
write carrying a lower one. For a database row, write ``... WHERE fence < :token`` and store
the token; for Redis data, compare in a script. The last token is kept without a TTL, so
tokens keep increasing across expiry and (with AOF on, as the embedded server runs) restarts;
the clock keeps them increasing even where the last ones were lost: a restart without
persistence, or a failover to a replica that had not received the last acquisitions (the
promoted replica's clock is past every token the old master gave). That assumes the clocks
of master and replica differ by less than the time a failover takes (seconds: the time to
notice the master is down); NTP keeps them within milliseconds. ``durability="replicated"``
does not depend on clocks.

**Waiting.** A waiter blocks on its own wake list; a release hands the lock straight to the
first live waiter (it becomes the owner, with its own ttl and the next fencing token, inside
the release script), so the waiter holds the lock when its ``BLPOP`` returns: one round trip
from release to the next holder. See :mod:`redkit.locks._common` for what keeps a lock handed
to a waiter that died, timed out or was cancelled from staying stranded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import secrets
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Self

from redkit._trace import traced
from redkit.codec import seconds
from redkit.durability import Durability, replication
from redkit.errors import InvalidInput, LockLost, RedkitError, translate_redis_errors
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
    from redkit.keys import Keyspace

__all__ = ["Lock"]

SCRIPTS = ScriptSet(__package__)


@functools.lru_cache(maxsize=1024)
def _lock_keys(keyspace: Keyspace, name: str) -> tuple[str, str, str, str, str]:
    """owner, fence, queue, deadlines, wake prefix: built once per name (a lock object is
    made per acquire, often in a loop)."""
    group = keyspace.group("lock", name)
    return (
        group.key("owner"),
        group.key("fence"),
        group.key("queue"),
        group.key("deadlines"),
        group.key("wake"),
    )


class Lock(Lease):
    """A lock named ``name`` in ``rk``'s namespace. Make it with ``rk.lock(...)``.

    One ``Lock`` object is one (would-be) holder: give each task its own (they are cheap).
    It can be acquired again after it is released. ``name``: 1-512 characters, none of them
    whitespace or control characters (braces are fine); the same holds for semaphores and
    read-write locks.

    - ``ttl``: the lease. Without renewal the lock frees itself this long after acquire (or
      the last :meth:`extend`), so a crashed holder blocks others for at most ``ttl``.
    - ``timeout``: how long :meth:`acquire` (and ``async with``) waits; ``None`` waits
      forever, ``0`` tries once. Raises :class:`~redkit.errors.LockNotAcquired`.
    - ``auto_renew``: a watchdog task extends the lease every ``ttl / 3`` while held.
    - ``fair``: first come, first served also when the lock comes free without a release
      (its lease ended, an operator forced it, the waiter it was handed to left): a
      newcomer then queues behind the waiters. Without it, such a free lock goes to
      whoever asks first. A release always hands the lock to the longest-waiting live waiter.
    - ``on_lost``: called with the lock when the watchdog finds the lease gone (a function or
      a coroutine function); :attr:`lost_event` is set too, and leaving the ``async with``
      block raises :class:`~redkit.errors.LockLost`.
    - ``durability``: ``"async"`` (the default): after a failover to a replica that had not
      yet received the last acquisition, the lock may be free again while its holder still
      works (a fencing token is never handed out again all the same: the promoted
      replica's clock is past it, if the clocks agree within the failover time).
      ``"replicated"``: :meth:`acquire` returns only once ``replicas`` replicas have the
      acquisition and its fencing token (``WAIT``, within ``durability_timeout``), else it
      lets the lock go and raises :class:`~redkit.errors.NotReplicated`; so a replica
      promoted after it still holds the lock for its holder, and gives no lower token
      whatever the clocks say (see :mod:`redkit.durability`).
    """

    def __init__(
        self,
        rk: Redkit,
        name: str,
        *,
        ttl: float | timedelta = 30,
        timeout: float | timedelta | None = None,
        auto_renew: bool = True,
        fair: bool = False,
        on_lost: LostCallback | None = None,
        durability: Durability = "async",
        replicas: int = 1,
        durability_timeout: float | timedelta | None = None,
    ) -> None:
        self.rk = rk
        self.durability = durability
        self._replication = replication(rk, durability, replicas, durability_timeout)
        self.name, self.ttl, self._ttl_ms, self.timeout = lease_options(name, "lock", ttl, timeout)
        self.auto_renew = bool(auto_renew)
        self.fair = bool(fair)
        # The same keys for every script (one hash slot), in the order the scripts take them.
        self._keys = _lock_keys(rk.keys, name)
        self._owner, self._fence, self._queue, self._deadlines, self._wake = self._keys
        self._lease_ms = waiter_lease_ms(rk)
        self._token: str | None = None
        self._renewer: Renewer | None = None
        self._lost = LostSignal(on_lost)
        self.fencing_token: int | None = None
        """The fencing token of the current (or last) acquisition; ``None`` before the first."""

    def __repr__(self) -> str:
        state = "held" if self._token else "not held"
        if self._token and self.lost:
            state = "lost"
        fence = f" fencing_token={self.fencing_token}" if self.fencing_token else ""
        return f"<Lock {self.name!r} ttl={self.ttl:g}s {state}{fence}>"

    # -- state -------------------------------------------------------------------------------

    async def locked(self) -> bool:
        """True if anyone holds the lock now (one round trip)."""
        with translate_redis_errors(f"lock {self.name!r}"):
            return bool(await self.rk.redis.exists(self._owner))

    async def owned(self) -> bool:
        """True if this object holds the lock now, according to the server."""
        if self._token is None:
            return False
        with translate_redis_errors(f"lock {self.name!r}"):
            current = await self.rk.redis.get(self._owner)
        if current is None:
            return False
        held = current.encode() if isinstance(current, str) else current
        # '<token>@<acquired ms>' (or a bare token): the token is the part before the '@'.
        return hmac.compare_digest(held.partition(b"@")[0], self._token.encode())

    # -- operations --------------------------------------------------------------------------

    @traced("lock.acquire")
    async def acquire(
        self,
        timeout: float | timedelta | None = DEFAULT,  # noqa: ASYNC109 (public API)
    ) -> int:
        """Wait for the lock and take it; return its fencing token.

        ``timeout`` overrides the constructor's (``None``: forever, ``0``: one try).
        """
        if self._token is not None:
            raise InvalidInput(
                f"lock {self.name!r} is already held by this Lock object (locks are not "
                "re-entrant); release it first, or use another rk.lock(...) object"
            )
        wait = self.timeout if timeout is DEFAULT else check_timeout(timeout, "lock")
        # The ttl rides in the token: a releasing holder that hands the lock to this waiter
        # reads it there to set the new lease (see lock_release.lua). The 's' before it says
        # this client reads an owner value stamped with the acquisition time (see _owner.lua).
        token = f"{secrets.token_hex(16)}s.{self._ttl_ms}"
        keys = self._keys
        loop = asyncio.get_running_loop()
        sent = 0.0

        async def attempt(join: bool) -> tuple[bool, int]:
            nonlocal sent
            sent = loop.time()
            ok, value = await self.rk.run(
                SCRIPTS["lock_acquire"],
                keys=keys,
                args=[token, self._ttl_ms, int(join), int(self.fair), self._lease_ms],
            )
            return bool(ok), int(value)

        async def leave() -> object:
            # Leaves the queue and, if the token holds the lock (taken by an interrupted
            # attempt, or handed over meanwhile), passes it on: both undo and leave.
            return await self.rk.run(SCRIPTS["lock_leave"], keys=keys, args=[token, self._lease_ms])

        fence = await acquire_loop(
            self.rk,
            attempt=attempt,
            leave=leave,
            undo=leave,
            wake_key=f"{self._wake}:{token}",
            timeout=wait,
            what=f"lock {self.name!r}",
            grant_ttl=self.ttl,
        )
        self._token = token
        self.fencing_token = fence
        if self._replication is not None:
            await self._replicate(token)
        self._lost.reset()
        if self.auto_renew:
            # The lease started at the earliest when the last attempt was sent: acquired by
            # that attempt, or handed over by a release that came after it.
            self._renewer = Renewer(self._renew, self.ttl, self._on_lost, sent + self.ttl)
        return fence

    @traced("lock.release")
    async def release(self) -> None:
        """Release the lock. Raises :class:`LockLost` if it was no longer ours.

        A lock that expired and was taken by another holder is left alone: the script checks
        the token before it deletes anything.
        """
        token = self._token
        if token is None:
            raise InvalidInput(f"lock {self.name!r} is not held by this Lock object")
        await self._stop_renewer()
        released = await self.rk.run(
            SCRIPTS["lock_release"], keys=self._keys, args=[token, self._lease_ms]
        )
        # Forget the token only once the server answered: after a lost reply the holder can
        # call release() again (the script is token-checked, so a second call is safe).
        self._token = None
        if not released:
            self._lost.fire(self, "it had expired or been taken over at release")
            raise LockLost(self._lost_message())

    @traced("lock.extend")
    async def extend(self, ttl: float | timedelta | None = None) -> None:
        """Reset the lease to ``ttl`` from now (default: the lock's ``ttl``).

        Raises :class:`LockLost` if the lock is no longer ours.
        """
        if self._token is None:
            raise InvalidInput(f"lock {self.name!r} is not held by this Lock object")
        ttl_s = self.ttl if ttl is None else seconds(ttl, "lock ttl")
        await self._extend_or_raise(ttl_s, "it had expired or been taken over at extend")

    # -- internals ---------------------------------------------------------------------------

    async def _replicate(self, token: str) -> None:
        """Wait until the replicas have this acquisition (and every write before it: the
        fence counter's too, whoever incremented it), or give the lock up. The lease is
        renewed on the way: a write of this connection, which ``WAIT`` then waits for."""
        assert self._replication is not None
        try:
            held = await self.rk.run_replicated(
                SCRIPTS["lock_extend"], [self._owner], [token, self._ttl_ms], self._replication
            )
        except RedkitError:
            with contextlib.suppress(RedkitError):  # else its lease ends it
                await self.rk.run(
                    SCRIPTS["lock_release"], keys=self._keys, args=[token, self._lease_ms]
                )
            self._token = None
            raise
        if not held:
            self._token = None
            raise LockLost(f"lock {self.name!r} was lost before its replicas confirmed it")

    async def _extend(self, ttl_ms: int) -> bool:
        assert self._token is not None
        result = await self.rk.run(
            SCRIPTS["lock_extend"], keys=[self._owner], args=[self._token, ttl_ms]
        )
        return bool(result)

    async def _renew(self) -> bool:
        return await self._extend(self._ttl_ms)

    def _lost_message(self) -> str:
        return (
            f"lock {self.name!r} (fencing token {self.fencing_token}) was lost: "
            f"{self._lost.reason}. Another holder may have run meanwhile; work done since then "
            "was not protected. Use auto_renew=True or a longer ttl, and have the resource "
            "check fencing tokens."
        )

    async def __aenter__(self) -> Self:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._release_on_exit(exc)
