"""The threading twins of what the async source takes from ``asyncio``.

``tools/async_to_sync.py`` rewrites ``asyncio.X`` in the async source to ``_compat.X`` here;
a name missing from this module (and from the tool's ASYNCIO list) stops the generation,
so a new ``asyncio`` call in the async source is either given a twin here or marked with
``IS_ASYNC`` (see :mod:`redkit._codegen`).

In sync code the arguments of ``asyncio.gather(a(), b())`` are already results (the calls
ran, one after the other, as Python evaluated them), and ``asyncio.to_thread(f, x)`` is a
plain call: the caller's thread is the one that may block.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = [
    "Event",
    "Semaphore",
    "TimerHandle",
    "current_task",
    "gather",
    "gather_threads",
    "get_running_loop",
    "sleep",
    "to_thread",
]

_T = TypeVar("_T")
_A = TypeVar("_A")
_P = ParamSpec("_P")


def gather(*results: _T) -> list[_T]:
    """The results, in order (they were computed as the arguments were evaluated)."""
    return list(results)


def gather_threads(function: Callable[[_A], _T], items: Iterable[_A]) -> list[_T]:
    """``[function(x) for x in items]``, the calls run at once on threads (at most 64);
    the first error is raised once every call has ended. What the generated tests use for
    ``asyncio.gather(*(f(x) for x in xs))``: concurrent callers, as in the async test."""
    work = list(items)
    if not work:
        return []
    with ThreadPoolExecutor(min(64, len(work)), thread_name_prefix="redkit-gather") as pool:
        futures = [pool.submit(function, item) for item in work]
    return [future.result() for future in futures]


def sleep(delay: float) -> None:
    """Block the calling thread for ``delay`` seconds."""
    time.sleep(delay)


def to_thread(function: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Call ``function`` here: a sync caller is already on the thread that may block."""
    return function(*args, **kwargs)


Event = threading.Event
"""``asyncio.Event``'s twin: ``set``, ``is_set``, ``clear`` and a blocking ``wait``."""

Semaphore = threading.Semaphore
"""``asyncio.Semaphore``'s twin (a context manager too)."""


def current_task() -> threading.Thread:
    """The calling thread: what "the current task" is in sync code."""
    return threading.current_thread()


class TimerHandle:
    """A callback due at a time, on the timer thread; :meth:`cancel` stops it if not run."""

    __slots__ = ("_callback", "_loop", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], object], loop: _Loop) -> None:
        self.when = when
        self._callback = callback
        self._loop = loop
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._loop._cancelled += 1  # approximate (no lock): it only triggers a cleanup

    def _run(self) -> None:
        if not self.cancelled:
            self._callback()


class _Loop:
    """What the async source asks of its event loop: the clock, and timers.

    Timers run on one daemon thread per process (started at the first timer, started again
    in a forked child), so a lease's watchdog costs a heap entry, not a thread, until its
    first renewal is due. A callback must be short: it runs on the one timer thread.

    Bounded: a cancelled timer (a lease released before its first renewal: the usual case)
    stays in the heap until it is due or until cancelled ones are half of the heap, when
    they are swept out; so the heap holds at most about twice the live timers.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._cancelled = 0
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self._cond = threading.Condition()
        self._heap = []
        self._thread = None
        self._cancelled = 0

    def time(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        handle = TimerHandle(time.monotonic() + max(0.0, delay), callback, self)
        with self._cond:
            heap = self._heap
            if self._cancelled > 64 and self._cancelled * 2 > len(heap):
                heap[:] = [entry for entry in heap if not entry[2].cancelled]
                heapq.heapify(heap)
                self._cancelled = 0
            heapq.heappush(heap, (handle.when, next(self._seq), handle))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="redkit-timers", daemon=True
                )
                self._thread.start()
            elif heap[0][2] is handle:
                # Wake the timer thread only for a new earliest timer: it sleeps until the
                # earliest one, and most timers come after it (every lease has the same ttl).
                self._cond.notify()
        return handle

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    # Cancelled handles are dropped as they come due, so the heap holds at
                    # most the timers armed within their delays (bounded by the callers).
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                _, _, handle = heapq.heappop(self._heap)
                if handle.cancelled:
                    self._cancelled = max(0, self._cancelled - 1)
                    continue
            try:
                handle._run()
            except Exception:  # a callback's error must not stop every other timer
                logging.getLogger("redkit").exception("a redkit timer callback failed")


_LOOP = _Loop()


def get_running_loop() -> _Loop:
    """The process's clock and timer thread (see :class:`_Loop`)."""
    return _LOOP
