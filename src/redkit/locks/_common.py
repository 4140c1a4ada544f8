"""What the lock and the semaphore share: arguments, the wait loop, the renewal watchdog.

How a waiter waits, without polling. Every acquire attempt is one script. When it fails, the
script puts the caller in the wait queue (a sorted set by arrival) and answers how long the
current lease has left. The caller then blocks with ``BLPOP`` on its own wake list
(``<group>:wake:<token>``, same hash tag as the lock, so it works on a Cluster). If the holder
dies instead of releasing, the waiter's ``BLPOP`` times out when the lease ends and it tries
again. The wake signal is a list, not a pub/sub message, so a signal that comes between the
failed attempt and the ``BLPOP`` is not lost: the element waits in the list.

Lock hand-over is direct: the holder's release script makes the first live waiter the owner
(with that waiter's own ttl and the next fencing token) and pushes the fencing token onto its
wake list. The waiter's ``BLPOP`` returns holding the lock: a hand-over costs the release and
the pop's reply, with no acquire round trip after the wake, no herd of woken waiters, and no
newcomer slipping in between. What keeps a grant from being stranded:

- a waiter that gives up (timeout, cancellation, a lost reply) runs a leave script that,
  if the lock was handed to it meanwhile, passes it on to the next waiter (or frees it);
- a waiter whose process died stays queued until its deadline (it refreshes it on each
  attempt); a lock handed to it before then ends with its ttl, like a holder that died;
- any attempt finds a hand-over the ``BLPOP`` missed (the owner is its token), and drops a
  stale one from its wake list, so a ``BLPOP`` never returns a grant older than the attempt.

A semaphore's release only wakes waiters (``1`` on their lists); they then try again.

A blocked ``BLPOP`` holds a pooled connection. So that waiters never starve the holders of
connections, at most half of the client's pool blocks at a time (the others queue in the
process for a turn), and one ``BLPOP`` lasts at most 3/4 of the command timeout, so it always
answers before the socket timeout would call the server dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import math
import threading
import weakref
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import redis.exceptions as redis_errors
from redis.asyncio import Redis

from redkit._codegen import IS_ASYNC, async_only
from redkit.codec import milliseconds, seconds
from redkit.errors import (
    LockLost,
    LockNotAcquired,
    RedkitError,
    translate_redis_errors,
)
from redkit.keys import LOCK_NAME

if TYPE_CHECKING:
    from redkit.client import Redkit

_BLOCKING_SLOTS: weakref.WeakKeyDictionary[Redkit, asyncio.Semaphore] = weakref.WeakKeyDictionary()
# Guards a LostSignal's reason and event, and the sync watchdog's one stop (held for a few
# lines, never across I/O or an await).
_GUARD = threading.Lock()


class _Default:
    """Marker for "use the timeout given to the constructor"."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()


def check_name(name: object, what: str) -> str:
    """A lock, semaphore or read-write lock name (see :data:`redkit.keys.LOCK_NAME`)."""
    return LOCK_NAME.check(name, f"{what} name")


def lease_options(
    name: object, what: str, ttl: float | timedelta, timeout: float | timedelta | None
) -> tuple[str, float, int, float | None]:
    """A lock-like object's checked ``name``, ``ttl`` (seconds and ms) and ``timeout``.

    Remembered for the last 1024 distinct argument sets (a lock object is made per acquire,
    usually with the same few names and options, and the checks were a tenth of a sync lock
    pair's client time). ``typed``: ``True`` is not taken for ``1``. Only what passed is
    remembered; an unhashable argument is checked each time (and refused).
    """
    try:
        return _checked_lease_options(name, what, ttl, timeout)
    except TypeError:
        return _check_lease_options(name, what, ttl, timeout)


def _check_lease_options(
    name: object, what: str, ttl: float | timedelta, timeout: float | timedelta | None
) -> tuple[str, float, int, float | None]:
    return (
        check_name(name, what),
        seconds(ttl, f"{what} ttl"),
        milliseconds(ttl, f"{what} ttl"),
        check_timeout(timeout, what),
    )


_checked_lease_options = functools.lru_cache(maxsize=1024, typed=True)(_check_lease_options)


def check_timeout(timeout: float | timedelta | None, what: str) -> float | None:
    """``None`` waits forever, ``0`` tries once, a positive value bounds the wait."""
    if timeout is None:
        return None
    return seconds(timeout, f"{what} timeout", allow_zero=True)


def wait_chunk(rk: Redkit) -> float:
    """Longest single ``BLPOP``: it must answer before the client's socket timeout."""
    return max(0.05, rk.settings.command_timeout * 0.75)


def waiter_lease_ms(rk: Redkit) -> int:
    """How long a queued waiter stays queued without refreshing (it refreshes every chunk)."""
    return math.ceil((wait_chunk(rk) + rk.settings.command_timeout + 1.0) * 1000)


def _slots(rk: Redkit) -> asyncio.Semaphore:
    slots = _BLOCKING_SLOTS.get(rk)
    if slots is None:
        slots = asyncio.Semaphore(max(1, rk.settings.max_connections // 2))
        _BLOCKING_SLOTS[rk] = slots
    return slots


@async_only  # redis-py's sync connection has no asyncio layers to skip
async def _blpop(client: Redis, wake_key: str, block: str) -> Any:
    """``BLPOP`` on a pooled connection, without redis-py's per-command layers.

    The wake-up is the hand-over's critical path: command parsing, the retry wrapper and the
    metrics hooks of ``client.blpop`` cost a tenth of a round trip. Same guarantees: one
    retry on a connection found dead before the command ran, the socket timeout bounds the
    wait for the reply, and a connection left with an unread reply (cancelled, timed out)
    is closed before it returns to the pool.
    """
    pool = client.connection_pool
    for retry in (True, False):
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            try:
                await conn.send_packed_command(conn.pack_command("BLPOP", wake_key, block))
            except redis_errors.ConnectionError:
                await conn.disconnect(nowait=True)
                if retry:
                    continue  # the command was not sent: retrying it is safe
                raise
            try:
                return await conn.read_response()
            except BaseException:
                await conn.disconnect(nowait=True)
                raise
        finally:
            await pool.release(conn)
    raise AssertionError("unreachable")  # pragma: no cover


async def _block(rk: Redkit, wake_key: str, block: float) -> int | None:
    """Wait on ``wake_key``; return the fencing token if the lock was handed over, else None."""
    # Seconds as a decimal: Redis >= 6 and Valkey take sub-second blocking timeouts.
    seconds_text = f"{max(0.001, block):.3f}"
    client = rk.redis
    async with _slots(rk):
        with translate_redis_errors("lock wait (BLPOP)"):
            if IS_ASYNC and isinstance(client, Redis):
                popped = await _blpop(client, wake_key, seconds_text)
            else:  # a Cluster client routes the key to its node itself
                popped = await client.blpop([wake_key], timeout=float(seconds_text))
    if popped is None:
        return None
    value = popped[1]
    # b"1" is a plain wake-up (try again); anything else is the fencing token of a hand-over.
    if value in (b"1", "1"):
        return None
    return int(value)


Attempt = Callable[[bool], Awaitable[tuple[bool, int]]]


async def acquire_loop(
    rk: Redkit,
    *,
    attempt: Attempt,
    leave: Callable[[], Awaitable[object]],
    undo: Callable[[], Awaitable[object]],
    wake_key: str,
    # The bound is spent in server-side BLPOP timeouts, not by cancelling calls midway.
    timeout: float | None,  # noqa: ASYNC109
    what: str,
    grant_ttl: float | None = None,
) -> int:
    """Call ``attempt`` until it succeeds; block on ``wake_key`` between attempts.

    ``attempt(join)`` runs the acquire script (``join``: queue up on failure) and returns
    ``(True, value)`` on success, else ``(False, ms until a lease ends, or -1)``. A wake list
    element other than ``1`` is a hand-over: the releasing holder made us the owner and sent
    the fencing token, which is returned at once. Raises :class:`LockNotAcquired` when
    ``timeout`` passes.

    If an attempt is interrupted (the task is cancelled, or the reply is lost) the script may
    still have taken the lease on the server, with nobody left to release it: ``undo``
    (a token-checked release, a no-op when the token holds nothing) then runs, shielded
    from the cancellation, so the lease does not block everyone until its TTL. ``leave``
    runs whenever a queued waiter gives up; for a lock it also passes on a lock that was
    handed over to the waiter meanwhile.

    ``grant_ttl`` (seconds) is the lease a hand-over grants. A grant is made after the last
    attempt was sent, so it is surely valid until that send time plus ``grant_ttl``; one
    popped later than that (the waiter was slow to block: a busy loop, no free connection)
    may have lapsed and been taken by someone else, so it is given back (``leave``) and the
    waiter tries again rather than trust it.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    chunk = wait_chunk(rk)
    join = timeout != 0
    queued = False
    try:
        while True:
            sent = loop.time()
            try:
                acquired, value = await attempt(join)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.shield(undo())
                raise
            if acquired:
                queued = False  # the script removed us from the queue
                return value
            queued = join
            remaining = math.inf if deadline is None else deadline - loop.time()
            if remaining <= 0:
                waited = "" if timeout == 0 else f" within {timeout:g} s"
                raise LockNotAcquired(
                    f"{what} was not acquired{waited}: it is held by someone else. Wait "
                    "longer (timeout=...), or find the holder with `redkit locks list`."
                )
            block = min(chunk, remaining)
            if value >= 0:
                # No release may come (a dead holder): wake when the lease ends.
                block = min(block, value / 1000 + 0.001)
            handed = await _block(rk, wake_key, block)
            if handed is not None:
                if grant_ttl is not None and loop.time() - sent >= grant_ttl:
                    # Too late to be sure it is still ours: pass it on if it is, and queue
                    # again (the attempt re-joins).
                    with contextlib.suppress(RedkitError):
                        await asyncio.shield(leave())
                    continue
                queued = False  # the releasing holder removed us from the queue
                return handed
    finally:
        if queued:
            # Leave the queue so a fair lock does not wait for us; a wake-up meant for us
            # passes to the next waiter, and a lock handed to us meanwhile (its fencing token
            # lost with a cancelled BLPOP) is passed on too. Shielded: a second cancellation
            # must not strand it. Best effort: the entry and a hand-over expire anyway.
            with contextlib.suppress(RedkitError):
                await asyncio.shield(leave())


class Renewer:
    """The auto-renew watchdog: extends a lease every ``ttl / 3`` until stopped.

    ``extend`` returns True (renewed) or False (the lease is gone). If the server cannot be
    reached, the watchdog retries sooner and declares the lease lost once ``ttl`` has passed
    since the last renewal it could confirm: from then on, nothing guarantees it is held.
    """

    def __init__(
        self,
        extend: Callable[[], Awaitable[bool]],
        ttl: float,
        on_lost: Callable[[str], None],
        valid_until: float,
    ) -> None:
        self._extend = extend
        self._ttl = ttl
        self._on_lost = on_lost
        self.valid_until = valid_until
        self._loop = asyncio.get_running_loop()
        if IS_ASYNC:
            self._task: asyncio.Task[None] | None = None
        else:
            # Sync: the renewals run in a daemon thread of their own, started when the first
            # one is due (until then the watchdog is a timer on the shared timer thread); it
            # sleeps trying to take a lock that is held until stop() lets it go. (A lock,
            # not an Event: an Event is a Condition in Python, ~3 us to make and set, on
            # every acquire; a lock is one C call each way.)
            self._thread: threading.Thread | None = None
            self._stopping = False
            self._running = threading.Lock()
            self._running.acquire()
        # A timer, not a task, until the first renewal is due: most locks are released
        # before ttl / 3, and then the watchdog costs one cancelled timer, not a task. Due
        # when a third of the lease is used up, counted from the lease's conservative end
        # (a hand-over may have started it before acquire() returned).
        first = min(ttl / 3, max(0.0, valid_until - self._loop.time() - 2 * ttl / 3))
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(first, self._start)

    def _start(self) -> None:
        self._timer = None
        if IS_ASYNC:
            self._task = self._loop.create_task(self._run())
        elif not self._stopping:
            self._thread = threading.Thread(
                target=self._run, name="redkit-lease-watchdog", daemon=True
            )
            self._thread.start()

    async def _run(self) -> None:
        loop = self._loop
        interval = self._ttl / 3
        delay = 0.0
        while True:
            if IS_ASYNC:
                if delay:
                    await asyncio.sleep(delay)
            elif self._running.acquire(timeout=delay):
                return  # stop() let the lock go
            sent = loop.time()
            try:
                renewed: bool | None = await self._extend()
            except RedkitError:
                renewed = None
            if renewed:
                self.valid_until = sent + self._ttl
                delay = interval
                continue
            now = loop.time()
            if renewed is False:
                self._on_lost("its lease was gone when the watchdog renewed it")
                return
            if now >= self.valid_until:
                self._on_lost("the server could not be reached to renew it before it expired")
                return
            delay = min(interval, max(0.01, (self.valid_until - now) / 3))

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not IS_ASYNC:
            with _GUARD:  # once: a second release of the lock would raise
                stopping, self._stopping = self._stopping, True
            if not stopping:
                self._running.release()
            thread, self._thread = self._thread, None
            # Not from inside the watchdog (an on_lost callback releasing): it ends by itself.
            if thread is not None and thread is not threading.current_thread():
                thread.join()  # at most one renewal in flight, bounded by the command timeout
            return
        task, self._task = self._task, None
        if task is None or task.done():
            return
        if task is asyncio.current_task():
            return  # the on_lost callback releasing from inside the watchdog
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


LostCallback = Callable[[Any], object]


class LostSignal:
    """Tells a holder that its lease is gone: an event, a flag and an optional callback.

    The event is made when first asked for (:attr:`event`), already set if the loss came
    first: most holders never look at it, and making one per lock object was a tenth of a
    sync lock pair's client time. ``_GUARD`` keeps a loss (fired from the sync watchdog's
    thread) and the event's making from missing each other.
    """

    def __init__(self, callback: LostCallback | None) -> None:
        self.callback = callback
        self._event: asyncio.Event | None = None
        self.reason: str | None = None
        if IS_ASYNC:
            self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def event(self) -> asyncio.Event:
        """Set once the lease is found lost."""
        with _GUARD:
            event = self._event
            if event is None:
                event = self._event = asyncio.Event()
                if self.reason is not None:
                    event.set()
            return event

    @property
    def fired(self) -> bool:
        """True once the lease was found lost (until :meth:`reset`)."""
        return self.reason is not None

    def fire(self, holder: object, reason: str) -> None:
        with _GUARD:
            if self.reason is not None:
                return
            self.reason = reason
            event = self._event
        if event is not None:
            event.set()
        if self.callback is None:
            return
        if not IS_ASYNC:
            # Sync: the callback is a plain function, called on the watchdog's thread.
            self.callback(holder)
            return
        result = self.callback(holder)
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def reset(self) -> None:
        with _GUARD:
            self.reason = None
            if self._event is not None and self._event.is_set():
                self._event = None  # a fresh one when next asked for


class Lease:
    """What a lock, a permit and a Redlock share: a token while held and a loss signal.

    Leaving an ``async with`` block releases; a lease found lost raises :class:`LockLost`
    there, or, when the block already failed, is added as a note to the block's own error.
    """

    _token: str | None
    _lost: LostSignal
    _renewer: Renewer | None

    @property
    def held(self) -> bool:
        """True between a successful acquire and release (as far as this object knows)."""
        return self._token is not None and not self.lost

    @property
    def lost(self) -> bool:
        """True once the watchdog or a call found that the lease is no longer ours."""
        return self._lost.fired

    @property
    def lost_event(self) -> asyncio.Event:
        """Set when the lease is found lost while held; ``await x.lost_event.wait()``."""
        return self._lost.event

    async def release(self) -> None:
        raise NotImplementedError

    async def _extend(self, ttl_ms: int) -> bool:
        """Renew the lease to ``ttl_ms`` from now (one token-checked script): False if gone."""
        raise NotImplementedError

    def _lost_message(self) -> str:
        raise NotImplementedError

    async def _extend_or_raise(self, ttl: float, reason: str) -> None:
        """What every ``extend`` does once its arguments are checked: renew the lease to
        ``ttl`` seconds from now, or, if it is gone, signal the loss (``reason``) and raise
        :class:`LockLost`. A renewal also moves the watchdog's view of the lease's end."""
        began = asyncio.get_running_loop().time()
        if not await self._extend(milliseconds(ttl)):
            self._lost.fire(self, reason)
            raise LockLost(self._lost_message())
        if self._renewer is not None:
            self._renewer.valid_until = max(self._renewer.valid_until, began + ttl)

    def _on_lost(self, reason: str) -> None:
        self._lost.fire(self, reason)

    async def _stop_renewer(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            await renewer.stop()

    async def _release_on_exit(self, exc: BaseException | None) -> None:
        try:
            await self.release()
        except LockLost as lost:
            if exc is None:
                raise
            # Keep the block's own error; say that the lease was lost too.
            exc.add_note(str(lost))
