"""Redlock: one lock over N independent masters, held when a majority agrees.

This is the algorithm of the Redis documentation ("Distributed Locks with Redis"):

1. take the key ``SET NX PX ttl`` on every master at once, each call bounded by a small
   ``instance_timeout`` so a dead master costs little;
2. the lock is held if a majority (N // 2 + 1) answered yes and the time left,
   ``validity = ttl - elapsed - (ttl * drift_factor + 2 ms)``, is positive: the drift term
   allows for the masters' clocks running at slightly different rates;
3. otherwise undo the partial acquisition on every master and retry after a random delay
   (random, so that competing clients do not retry in lock-step).

Redlock gives no fencing token (the masters share no counter), so it cannot protect a
resource from a holder that pauses past its validity; see the README's "Which lock when".
Prefer :class:`~redkit.locks.Lock` on one server (or a Cluster) with fencing tokens, unless
the lock must survive the loss of a server without failover.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from redkit.codec import milliseconds, seconds
from redkit.errors import InvalidInput, LockLost, LockNotAcquired, RedkitError
from redkit.keys import Keyspace
from redkit.locks._common import (
    DEFAULT,
    Lease,
    LostCallback,
    LostSignal,
    Renewer,
    check_timeout,
    lease_options,
)
from redkit.scripts import ScriptSet

if TYPE_CHECKING:
    from redkit.client import Redkit

__all__ = ["Redlock"]

SCRIPTS = ScriptSet(__package__)

CLOCK_DRIFT_FACTOR = 0.01
"""The Redis documentation's allowance for clock drift, as a fraction of the ttl."""


class Redlock(Lease):
    """A lock named ``name`` held on a majority of independent ``masters``.

    ``masters`` are URLs (this object connects to them on first use and closes them in
    :meth:`aclose` or at the end of ``async with``) or connected :class:`~redkit.Redkit`
    handles (shared; never closed here). Use an odd number, 3 or 5, of masters that fail
    independently (no replication between them).

    ``validity`` is how long, from the start of the last successful acquire or extend, the
    lock is guaranteed to be held by the majority. ``auto_renew`` (off by default, as in
    the Redis documentation) extends it every ``ttl / 3`` on a majority.
    """

    def __init__(
        self,
        masters: Sequence[str | Redkit],
        name: str,
        *,
        ttl: float | timedelta = 30,
        timeout: float | timedelta | None = None,
        namespace: str = "rk",
        auto_renew: bool = False,
        drift_factor: float = CLOCK_DRIFT_FACTOR,
        retry_delay: float | timedelta = 0.2,
        instance_timeout: float | timedelta | None = None,
        on_lost: LostCallback | None = None,
    ) -> None:
        if isinstance(masters, str) or not masters:
            raise InvalidInput("Redlock needs a list of masters (URLs or Redkit handles), e.g. 3")
        self.name, self.ttl, self._ttl_ms, self.timeout = lease_options(
            name, "redlock", ttl, timeout
        )
        if not 0 <= drift_factor < 0.5:
            raise InvalidInput(f"drift_factor must be in [0, 0.5), got {drift_factor!r}")
        self.drift_factor = drift_factor
        self.retry_delay = seconds(retry_delay, "redlock retry_delay")
        self.instance_timeout = (
            min(self.ttl / 10, 0.25)
            if instance_timeout is None
            else seconds(instance_timeout, "redlock instance_timeout")
        )
        self.auto_renew = bool(auto_renew)
        self._masters: list[str | Redkit] = list(masters)
        self._namespace = Keyspace(namespace).namespace
        self._clients: list[Redkit | None] = [
            m if not isinstance(m, str) else None for m in masters
        ]
        self._owned = [isinstance(m, str) for m in masters]
        self.quorum = len(self._masters) // 2 + 1
        self._token: str | None = None
        self._renewer: Renewer | None = None
        self._lost = LostSignal(on_lost)
        self.validity = 0.0
        """Seconds the lock was guaranteed for, from the start of the last acquire/extend."""
        self.valid_until = 0.0
        """``loop.time()`` until which the lock is guaranteed held."""

    def __repr__(self) -> str:
        state = "held" if self._token else "not held"
        return (
            f"<Redlock {self.name!r} on {len(self._masters)} masters quorum={self.quorum} {state}>"
        )

    # -- the masters ---------------------------------------------------------------------------

    def _key(self, rk: Redkit) -> str:
        return rk.keys.group("redlock", self.name).key("owner")

    async def _client(self, index: int) -> Redkit:
        client = self._clients[index]
        if client is None:
            from redkit.client import connect

            url = self._masters[index]
            assert isinstance(url, str)
            client = await connect(url, self._namespace)
            self._clients[index] = client
        return client

    async def _on_all(self, call: Callable[[Redkit], Awaitable[Any]]) -> int:
        """Run ``call`` on every master at once; count those that answered truthy in time."""

        async def one(index: int) -> bool:
            try:
                async with asyncio.timeout(self.instance_timeout):
                    return bool(await call(await self._client(index)))
            except (RedkitError, TimeoutError):
                return False  # a master down or slow counts as a "no"

        results = await asyncio.gather(*(one(i) for i in range(len(self._masters))))
        return sum(results)

    async def _release_all(self, token: str) -> int:
        async def release(rk: Redkit) -> Any:
            return await rk.run(SCRIPTS["redlock_release"], keys=[self._key(rk)], args=[token])

        return await self._on_all(release)

    def _drift(self) -> float:
        return self.ttl * self.drift_factor + 0.002

    # -- operations ----------------------------------------------------------------------------

    async def acquire(
        self,
        timeout: float | timedelta | None = DEFAULT,  # noqa: ASYNC109 (public API)
    ) -> float:
        """Take the lock on a majority; return its validity in seconds.

        Raises :class:`LockNotAcquired` when ``timeout`` passes (``0``: one attempt).
        """
        if self._token is not None:
            raise InvalidInput(f"redlock {self.name!r} is already held by this object")
        wait = self.timeout if timeout is DEFAULT else check_timeout(timeout, "redlock")
        loop = asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + wait
        while True:
            token = secrets.token_hex(16)
            began = loop.time()

            async def take(rk: Redkit, token: str = token) -> Any:
                return await rk.run(
                    SCRIPTS["redlock_acquire"], keys=[self._key(rk)], args=[token, self._ttl_ms]
                )

            try:
                votes = await self._on_all(take)
            except BaseException:
                # Cancelled (or failed) mid-vote: some masters may hold our token; give it
                # back everywhere so nobody waits for a TTL (token-checked, so harmless).
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._release_all(token))
                raise
            validity = self.ttl - (loop.time() - began) - self._drift()
            if votes >= self.quorum and validity > 0:
                self._token = token
                self.validity = validity
                self.valid_until = began + validity
                self._lost.reset()
                if self.auto_renew:
                    self._renewer = Renewer(self._renew, self.ttl, self._on_lost, self.valid_until)
                return validity
            await self._release_all(token)  # undo a minority (or a too slow majority)
            delay = random.uniform(self.retry_delay / 2, self.retry_delay)
            if deadline is not None and loop.time() + delay > deadline:
                raise LockNotAcquired(
                    f"redlock {self.name!r} was not acquired: {votes} of "
                    f"{len(self._masters)} masters agreed (a majority is {self.quorum}). "
                    "It is held elsewhere, or too many masters are down."
                )
            await asyncio.sleep(delay)

    async def extend(self, ttl: float | timedelta | None = None) -> float:
        """Extend on a majority to ``ttl`` from now; return the new validity.

        Raises :class:`LockLost` if a majority no longer holds our token.
        """
        if self._token is None:
            raise InvalidInput(f"redlock {self.name!r} is not held by this object")
        if not await self._extend(milliseconds(ttl if ttl is not None else self.ttl)):
            self._lost.fire(self, "a majority of masters no longer held it at extend")
            raise LockLost(self._lost_message())
        return self.validity

    async def _extend(self, ttl_ms: int) -> bool:
        token = self._token
        assert token is not None
        loop = asyncio.get_running_loop()
        began = loop.time()

        async def extend(rk: Redkit) -> Any:
            return await rk.run(SCRIPTS["lock_extend"], keys=[self._key(rk)], args=[token, ttl_ms])

        votes = await self._on_all(extend)
        validity = ttl_ms / 1000 - (loop.time() - began) - self._drift()
        if votes >= self.quorum and validity > 0:
            self.validity = validity
            self.valid_until = began + validity
            return True
        return False

    async def _renew(self) -> bool:
        return await self._extend(self._ttl_ms)

    async def release(self) -> None:
        """Release on every master. Raises :class:`LockLost` if no majority held it."""
        token = self._token
        if token is None:
            raise InvalidInput(f"redlock {self.name!r} is not held by this object")
        await self._stop_renewer()
        self._token = None
        votes = await self._release_all(token)
        if votes < self.quorum:
            self._lost.fire(self, f"only {votes} masters still held it at release")
            raise LockLost(self._lost_message())

    def _lost_message(self) -> str:
        return (
            f"redlock {self.name!r} was lost: {self._lost.reason}. Another holder may have "
            "run meanwhile. Use auto_renew=True or a longer ttl."
        )

    async def aclose(self) -> None:
        """Close the connections this object opened (handles passed in are left open)."""
        for index, owned in enumerate(self._owned):
            client = self._clients[index]
            if owned and client is not None:
                self._clients[index] = None
                await client.close()

    async def __aenter__(self) -> Self:
        try:
            await self.acquire()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._release_on_exit(exc)
        finally:
            await self.aclose()
