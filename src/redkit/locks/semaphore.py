"""A distributed semaphore: at most ``limit`` holders at once, each permit a lease.

::

    deploys = rk.semaphore("deploys", limit=3, ttl=60)
    async with deploys as permit:        # one of at most 3 deployments running
        ...

Permits live in one sorted set, scored by the end of their lease; every script prunes ended
leases first, so a holder that died gives its permit back when its lease ends. Waiting and
renewal work as for :class:`~redkit.locks.Lock`.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING

from redkit._trace import traced
from redkit.codec import seconds
from redkit.errors import InvalidInput, LockLost
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

__all__ = ["Permit", "Semaphore"]

SCRIPTS = ScriptSet(__package__)


class Semaphore:
    """At most ``limit`` permits of ``name`` held at once. Make it with ``rk.semaphore(...)``.

    Unlike a :class:`~redkit.locks.Lock`, one ``Semaphore`` object can be shared by many
    tasks: each :meth:`acquire` returns its own :class:`Permit`, and ``async with sem:``
    keeps the permit of each task apart. Every user of one name must pass the same
    ``limit``. ``ttl``, ``timeout``, ``auto_renew``, ``fair`` and ``on_lost`` mean what they
    mean for a lock (``on_lost`` receives the :class:`Permit`).
    """

    def __init__(
        self,
        rk: Redkit,
        name: str,
        *,
        limit: int,
        ttl: float | timedelta = 30,
        timeout: float | timedelta | None = None,
        auto_renew: bool = True,
        fair: bool = False,
        on_lost: LostCallback | None = None,
    ) -> None:
        self.rk = rk
        self.name, self.ttl, self._ttl_ms, self.timeout = lease_options(
            name, "semaphore", ttl, timeout
        )
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInput(f"semaphore limit must be an integer >= 1, got {limit!r}")
        self.limit = limit
        self.auto_renew = bool(auto_renew)
        self.fair = bool(fair)
        self.on_lost = on_lost
        group = rk.keys.group("sem", name)
        self._holders = group.key("holders")
        self._queue = group.key("queue")
        self._deadlines = group.key("deadlines")
        self._wake = group.key("wake")
        self._lease_ms = waiter_lease_ms(rk)
        # Per task (per thread in the sync API): the permits its `async with` blocks hold.
        self._entered: dict[object, list[Permit]] = {}

    def __repr__(self) -> str:
        return f"<Semaphore {self.name!r} limit={self.limit} ttl={self.ttl:g}s>"

    async def holders(self) -> int:
        """How many permits are live now (by the server's clock)."""
        return int(await self.rk.run(SCRIPTS["sem_count"], keys=[self._holders]))

    @traced("semaphore.acquire")
    async def acquire(
        self,
        timeout: float | timedelta | None = DEFAULT,  # noqa: ASYNC109 (public API)
    ) -> Permit:
        """Wait for a permit and take it. Raises :class:`LockNotAcquired` on timeout."""
        wait = self.timeout if timeout is DEFAULT else check_timeout(timeout, "semaphore")
        token = secrets.token_hex(16)

        async def attempt(join: bool) -> tuple[bool, int]:
            ok, value = await self.rk.run(
                SCRIPTS["sem_acquire"],
                keys=[self._holders, self._queue, self._deadlines, self._wake],
                args=[
                    token,
                    self.limit,
                    self._ttl_ms,
                    int(join),
                    int(self.fair),
                    self._lease_ms,
                ],
            )
            return bool(ok), int(value)

        async def undo() -> object:
            return await self.rk.run(
                SCRIPTS["sem_release"],
                keys=[self._holders, self._queue, self._deadlines, self._wake],
                args=[token, self.limit, self._lease_ms],
            )

        async def leave() -> object:
            return await self.rk.run(
                SCRIPTS["queue_leave"],
                keys=[self._queue, self._deadlines, self._wake],
                args=[token, self._lease_ms],
            )

        began = asyncio.get_running_loop().time()
        await acquire_loop(
            self.rk,
            attempt=attempt,
            leave=leave,
            undo=undo,
            wake_key=f"{self._wake}:{token}",
            timeout=wait,
            what=f"a permit of semaphore {self.name!r} (limit {self.limit})",
        )
        return Permit(self, token, began)

    async def __aenter__(self) -> Permit:
        permit = await self.acquire()
        self._entered.setdefault(asyncio.current_task(), []).append(permit)
        return permit

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = asyncio.current_task()
        stack = self._entered[task]
        permit = stack.pop()
        if not stack:
            del self._entered[task]
        await permit.__aexit__(exc_type, exc, tb)


class Permit(Lease):
    """One held permit of a :class:`Semaphore`: release it, extend it, watch for its loss."""

    def __init__(self, semaphore: Semaphore, token: str, began: float) -> None:
        self.semaphore = semaphore
        self._token: str | None = token
        self._lost = LostSignal(semaphore.on_lost)
        self._renewer: Renewer | None = None
        if semaphore.auto_renew:
            self._renewer = Renewer(
                self._renew, semaphore.ttl, self._on_lost, began + semaphore.ttl
            )

    def __repr__(self) -> str:
        state = "lost" if self.lost else ("held" if self._token else "released")
        return f"<Permit of {self.semaphore.name!r} {state}>"

    @traced("semaphore.release", rk="semaphore.rk")
    async def release(self) -> None:
        """Give the permit back. Raises :class:`LockLost` if its lease had already ended."""
        token = self._token
        if token is None:
            raise InvalidInput(f"this permit of {self.semaphore.name!r} was already released")
        await self._stop_renewer()
        sem = self.semaphore
        released = await sem.rk.run(
            SCRIPTS["sem_release"],
            keys=[sem._holders, sem._queue, sem._deadlines, sem._wake],
            args=[token, sem.limit, sem._lease_ms],
        )
        # Forget the token only once the server answered, so a failed release can be retried.
        self._token = None
        if not released:
            self._lost.fire(self, "its lease had ended at release")
            raise LockLost(self._lost_message())

    async def extend(self, ttl: float | timedelta | None = None) -> None:
        """Renew the lease to ``ttl`` from now (default: the semaphore's ``ttl``)."""
        if self._token is None:
            raise InvalidInput(f"this permit of {self.semaphore.name!r} was already released")
        ttl_s = self.semaphore.ttl if ttl is None else seconds(ttl, "semaphore ttl")
        await self._extend_or_raise(ttl_s, "its lease had ended at extend")

    async def _extend(self, ttl_ms: int) -> bool:
        assert self._token is not None
        sem = self.semaphore
        return bool(
            await sem.rk.run(SCRIPTS["sem_extend"], keys=[sem._holders], args=[self._token, ttl_ms])
        )

    async def _renew(self) -> bool:
        return await self._extend(self.semaphore._ttl_ms)

    def _lost_message(self) -> str:
        return (
            f"a permit of semaphore {self.semaphore.name!r} was lost: {self._lost.reason}. "
            f"More than {self.semaphore.limit} holders may have run meanwhile. Use "
            "auto_renew=True or a longer ttl."
        )

    async def __aenter__(self) -> Permit:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._release_on_exit(exc)
