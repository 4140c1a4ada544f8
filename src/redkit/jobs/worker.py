"""The worker: claims jobs in batches, runs them, acknowledges them in batches.

::

    worker = rk.worker(queues=["email"], functions={"send_email": send_email}, concurrency=20)
    await worker.run()          # until SIGTERM/SIGINT or worker.stop()

How it spends round trips. With ``k`` free slots the worker claims up to ``k`` jobs in one
script call (which also requeues jobs of dead workers and promotes due delayed jobs). Results
are acknowledged by a background flusher: every completion that arrives while the previous
acknowledgement is in flight goes into the next one, so under load one ``complete`` call
carries many jobs. Claims and acknowledgements travel together through the client's automatic
pipelining. So claim+complete costs at most 2 script calls per job, and far fewer under load.

Prefetch. While jobs are short (a recent mean under 50 ms) the worker also holds up to
``concurrency`` claimed jobs in hand, leased like running ones, so that a finished job's slot
starts the next one at once instead of idling for a claim's round trip (with jobs that do one
round trip of their own, that idle time is about as long as the job). Long jobs turn it off
by themselves: a held job would wait a long job's time while idle workers elsewhere could run
it. ``prefetch=N`` fixes the depth (0: never). Held jobs are renewed by the heartbeat, dropped
when cancelled or lost, and handed back unstarted (attempt refunded) on shutdown.

How it idles. When the queues are empty the worker blocks with ``BLPOP`` on the queues' wake
lists, which every enqueue pushes to, so a new job is picked up within a round trip. The
block lasts until the next delayed job is due or the next lease of the queue ends (so that
a dead worker's jobs are requeued on time), at most 3/4 of the command timeout.

Leases. A claimed job is leased for ``lease`` seconds; a heartbeat renews the leases of every
running job each ``lease / 3``. A worker that dies stops renewing: after at most ``lease``
the next claim by any worker returns its jobs to waiting (or to failed when out of attempts).
A heartbeat that finds a lease gone (the job was handed out again) cancels the local run;
its late acknowledgement would be refused anyway.

Shutdown. On SIGTERM/SIGINT (or :meth:`Worker.stop`) the worker stops claiming, lets running
jobs finish for up to ``grace`` seconds, then cancels the rest and hands them back to waiting
with their attempt refunded. A plain ``def`` job runs in a thread pool; Python cannot stop a
thread, so on timeout or shutdown its thread runs on, but its result is no longer recorded.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import inspect
import logging
import os
import random
import secrets
import signal
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import orjson

from redkit.codec import dumps, milliseconds, seconds
from redkit.errors import InvalidInput, RedkitError, translate_redis_errors
from redkit.jobs.metrics import observe
from redkit.jobs.presence import announce
from redkit.jobs.queue import SCRIPTS, Job, Queue, blocking_slots, wait_chunk
from redkit.jobs.states import JobState

if TYPE_CHECKING:
    from redkit.client import Redkit
    from redkit.jobs.schedule import Schedule

__all__ = ["Worker"]

log = logging.getLogger("redkit.jobs")

MAX_ERROR_CHARS = 2000
MAX_TRACEBACK_CHARS = 16_000
ACK_BATCH = 500
PREFETCH_BELOW = 0.05
"""Automatic prefetch holds jobs in hand only while the recent mean job takes less than this
(seconds): a held job then waits about that long for a slot, not a long job's duration while
idle workers elsewhere could have run it."""


@dataclass
class _Function:
    call: Callable[..., Any]
    is_async: bool
    takes_job: bool


@dataclass
class _Running:
    queue: Queue
    job: Job
    task: asyncio.Task[None] | None = None
    """None while the job waits in the prefetch buffer (claimed and leased, not started)."""
    cancel_reason: str | None = None


@dataclass
class _Stats:
    claimed: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0
    claims: int = 0
    acks: int = 0
    by_function: dict[str, int] = field(default_factory=dict)


def _describe(fn: Callable[..., Any]) -> _Function:
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    is_async = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 (an async callable object)
    )
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    return _Function(fn, is_async, len(positional) >= 2 or varargs)


class Worker:
    """Runs the jobs of ``queues`` with ``functions``. Make it with ``rk.worker(...)``.

    - ``queues``: names (or :class:`Queue` objects, to use their retention options), in
      strict priority order: a queue is served only when the ones before it have nothing
      to hand out. Pass ``weights={"a": 3, "b": 1}`` to share slots by weight instead.
    - ``functions``: name -> function. ``async def f(payload)`` or ``async def f(payload,
      job)``; a plain ``def`` runs in a thread pool. The return value (JSON) is the result.
    - ``concurrency``: jobs run at once. ``lease``: seconds a claimed job stays this
      worker's without a heartbeat. ``grace``: seconds running jobs get to finish on stop.
    - ``schedules``: :class:`~redkit.jobs.Schedule` objects this worker also runs (each
      tick is enqueued once however many workers run the same schedule).
    - ``prefetch``: claimed jobs held beyond the running ones; ``None`` (default) holds up
      to ``concurrency`` while jobs are short (mean under 50 ms), ``0`` never.
    """

    def __init__(
        self,
        rk: Redkit,
        *,
        queues: Sequence[str | Queue] | str | Queue,
        functions: Mapping[str, Callable[..., Any]],
        concurrency: int = 10,
        lease: float | timedelta = 30.0,
        grace: float | timedelta = 30.0,
        weights: Mapping[str, float] | None = None,
        schedules: Sequence[Schedule] = (),
        handle_signals: bool = True,
        prefetch: int | None = None,
    ) -> None:
        self.rk = rk
        if isinstance(queues, str | Queue):
            queues = [queues]
        if not queues:
            raise InvalidInput("a worker needs at least one queue")
        self.queues: list[Queue] = [q if isinstance(q, Queue) else rk.queue(q) for q in queues]
        names = [q.name for q in self.queues]
        if len(set(names)) != len(names):
            raise InvalidInput(f"queue listed twice: {names}")
        if not isinstance(functions, Mapping):
            raise InvalidInput("functions must be a mapping of name -> function")
        self.functions: dict[str, _Function] = {}
        for name, fn in functions.items():
            if not isinstance(name, str) or not callable(fn):
                raise InvalidInput(f"functions[{name!r}] must be a callable with a str name")
            self.functions[name] = _describe(fn)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidInput(f"concurrency must be an int >= 1, got {concurrency!r}")
        self.concurrency = concurrency
        if prefetch is not None and (
            isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0
        ):
            raise InvalidInput(f"prefetch must be an int >= 0 or None, got {prefetch!r}")
        self.prefetch = prefetch
        self.lease = seconds(lease, "lease")
        self.lease_ms = milliseconds(lease, "lease")
        self.grace = seconds(grace, "grace", allow_zero=True)
        self.weights: dict[str, float] | None = None
        if weights is not None:
            unknown = set(weights) - set(names)
            if unknown:
                raise InvalidInput(f"weights name queues this worker does not serve: {unknown}")
            if any(not isinstance(w, int | float) or w <= 0 for w in weights.values()):
                raise InvalidInput(f"weights must be positive numbers, got {dict(weights)}")
            self.weights = {n: float(weights.get(n, 1.0)) for n in names}
        self.schedules = list(schedules)
        self.handle_signals = handle_signals
        self.id = secrets.token_hex(16)
        """This worker's lease owner id (a secret-grade random token, fresh per Worker)."""
        self.stats = _Stats()
        self._running: dict[tuple[str, str], _Running] = {}
        """Every job this worker holds a lease on: running, or waiting in ``_buffer``."""
        self._buffer: collections.deque[_Running] = collections.deque()
        """Claimed jobs waiting for a slot (at most the prefetch depth)."""
        self._active = 0
        self._began = 0.0
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._mean_s: float | None = None
        """Running mean of job durations (seconds), for the automatic prefetch."""
        self._acks: dict[str, list[tuple[str, int, bytes]]] = {}
        self._ack_wanted = asyncio.Event()
        self._ack_flush: asyncio.Future[None] | None = None
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._started = False

    def __repr__(self) -> str:
        state = "stopping" if self._stopping.is_set() else ("running" if self._started else "idle")
        queues = ",".join(q.name for q in self.queues)
        return (
            f"<Worker {self.id[:8]} queues={queues} concurrency={self.concurrency} {state} "
            f"running={len(self._running)}>"
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; :meth:`run` returns once running jobs finished (or were handed back)."""
        self._stopping.set()

    async def run(self) -> None:
        """Claim and run jobs until :meth:`stop` (or SIGTERM/SIGINT), then shut down gracefully."""
        if self._started:
            raise InvalidInput("this Worker already ran; make a new one with rk.worker(...)")
        self._started = True
        loop = asyncio.get_running_loop()
        signals: list[signal.Signals] = []
        if self.handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, self.stop)
                    signals.append(sig)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass  # not the main thread, or no signals on this platform
        self._began = time.time()
        helpers = [
            loop.create_task(self._heartbeat(), name="redkit-worker-heartbeat"),
            loop.create_task(self._ack_loop(), name="redkit-worker-acks"),
        ]
        for schedule in self.schedules:
            helpers.append(loop.create_task(schedule.run(self._stopping)))
        try:
            await self._claim_loop()
        finally:
            await self._shutdown()
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError, RedkitError):
                    await task
            if self._ack_flush is not None:
                with contextlib.suppress(RedkitError):
                    await self._ack_flush  # the flush that was under way
            await self._flush_acks()
            await self._presence(leaving=True)
            for sig in signals:
                loop.remove_signal_handler(sig)
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)

    async def _shutdown(self) -> None:
        self._stopping.set()  # also when the claim loop ended by an error: start no held job
        tasks = [r.task for r in self._running.values() if r.task is not None]
        if tasks and self.grace > 0:
            await asyncio.wait(tasks, timeout=self.grace)
        held = list(self._buffer)  # never started: handed back with their attempt refunded
        self._buffer.clear()
        for running in held:
            self._running.pop((running.queue.name, running.job.id), None)
        left = [r for r in self._running.values() if r.task is not None and not r.task.done()]
        for running in left:
            running.cancel_reason = "shutdown"
            assert running.task is not None
            running.task.cancel()
        if left:
            await asyncio.wait([r.task for r in left if r.task is not None])
        by_queue: dict[str, list[_Running]] = {}
        for running in left + held:
            by_queue.setdefault(running.queue.name, []).append(running)
        for items in by_queue.values():
            queue = items[0].queue
            args: list[str | int] = [queue.job_prefix, self.id, queue.events_maxlen, len(items)]
            for running in items:
                args += [running.job.id, running.job.attempts]
            keys = [
                queue.waiting_key,
                queue.active_key,
                queue.seq_key,
                queue.events_key,
                queue.wake_key,
            ]
            try:
                await self.rk.run(SCRIPTS["release"], keys, args)
            except RedkitError as exc:  # their leases will expire and requeue them
                log.warning("could not hand back %d job(s) of %s: %s", len(items), queue, exc)

    # -- claiming --------------------------------------------------------------------------------

    def _order(self) -> list[Queue]:
        if self.weights is None or len(self.queues) == 1:
            return self.queues
        # Weighted: a random order drawn by weight each round (Efraimidis-Spirakis keys).
        weights = self.weights
        return sorted(self.queues, key=lambda q: -(random.random() ** (1.0 / weights[q.name])))

    def _depth(self) -> int:
        """Jobs to hold in hand beyond the running ones. A held job's slot starts it the moment
        another job ends, without waiting for a claim's round trip: with short jobs that round
        trip would otherwise leave the slot idle for about as long as the job itself."""
        if self.prefetch is not None:
            return self.prefetch
        if self._mean_s is None or self._mean_s >= PREFETCH_BELOW:
            return 0
        return self.concurrency

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            depth = self._depth()
            free = self.concurrency + depth - len(self._running)
            # Refill the buffer in batches (half its depth), not one claim per finished job;
            # but never leave a slot idle for it.
            if free <= 0 or (self._buffer and free < max(1, depth // 2)):
                self._slot_freed.clear()
                await self._until(self._slot_freed.wait())
                # Let the other jobs that finish in this loop turn free their slots too:
                # one claim then fills them all.
                await asyncio.sleep(0)
                continue
            next_ms = -1
            claimed = 0
            try:
                for queue in self._order():
                    if claimed >= free:
                        break
                    got, queue_next = await self._claim(queue, free - claimed)
                    claimed += got
                    if queue_next >= 0 and (next_ms < 0 or queue_next < next_ms):
                        next_ms = queue_next
            except RedkitError as exc:
                log.warning("claim failed, retrying in 1 s: %s", exc)
                await self._until(asyncio.sleep(1.0))
                continue
            if claimed >= free:
                continue
            block = wait_chunk(self.rk)
            if next_ms >= 0:
                block = min(block, next_ms / 1000 + 0.002)
            await self._until(self._block(block))

    async def _until(self, waiting: Awaitable[Any]) -> None:
        """Await ``waiting``, or stop early (cancelling it) when the worker is stopped."""
        task = asyncio.ensure_future(waiting)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                # A cancelled BLPOP on a Cluster client may take until its timeout to give
                # up: do not hold the shutdown for it (it ends by itself within the chunk).
                await asyncio.wait([task], timeout=0.1)
        if not task.done():
            task.add_done_callback(_retrieve)
            return
        exc = None if task.cancelled() else task.exception()
        if isinstance(exc, RedkitError):
            log.warning("waiting for jobs failed: %s", exc)
            await asyncio.sleep(0.5)
        elif exc is not None:
            raise exc

    async def _block(self, block: float) -> None:
        """Block until a wake token arrives on one of the queues, or ``block`` seconds pass."""
        timeout = max(0.001, round(block, 3))
        async with blocking_slots(self.rk):
            if not self.rk.is_cluster or len(self.queues) == 1:
                # One BLPOP over every queue's wake list (one server; or one slot).
                keys = [q.wake_key for q in self.queues]
                if self.rk.is_cluster:
                    keys = keys[:1]
                with translate_redis_errors("worker wait (BLPOP)"):
                    await self.rk.redis.blpop(keys, timeout=timeout)
                return
        # Cluster with several queues: one BLPOP per queue's slot, the first one wins.
        waits = [asyncio.ensure_future(self._blpop(q, timeout)) for q in self.queues]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _blpop(self, queue: Queue, timeout: float) -> None:  # noqa: ASYNC109
        async with blocking_slots(self.rk):
            with translate_redis_errors("worker wait (BLPOP)"):
                await self.rk.redis.blpop([queue.wake_key], timeout=timeout)

    async def _claim(self, queue: Queue, n: int) -> tuple[int, int]:
        keys = [
            queue.waiting_key,
            queue.delayed_key,
            queue.active_key,
            queue.failed_key,
            queue.paused_key,
            queue.seq_key,
            queue.events_key,
            queue.wake_key,
            queue.cancelled_key,
        ]
        args: list[str | int | float] = [
            queue.job_prefix,
            queue.done_prefix,
            self.id,
            n,
            self.lease_ms,
            queue.events_maxlen,
            queue.keep_failed,
            queue.failed_ttl_ms,
        ]
        reply = await self.rk.run(SCRIPTS["claim"], keys, args)
        self.stats.claims += 1
        count = (len(reply) - 1) // 7
        loop = asyncio.get_running_loop()
        for i in range(count):
            b = 1 + i * 7
            job_id = reply[b].decode()
            timeout_ms = int(reply[b + 5] or 0)
            job = Job(
                id=job_id,
                queue=queue.name,
                function=reply[b + 1].decode(),
                payload=orjson.loads(reply[b + 2]),
                state=JobState.ACTIVE,
                attempts=int(reply[b + 3]),
                max_attempts=int(reply[b + 4]),
                timeout=timeout_ms / 1000 if timeout_ms else None,
                _queue=queue,
                _owner=self.id,
                _loop=loop,
                _traceparent=reply[b + 6],
            )
            running = _Running(queue, job)
            self._running[(queue.name, job_id)] = running
            self._buffer.append(running)
        self._start_held()
        self.stats.claimed += count
        return count, int(reply[0])

    # -- running ---------------------------------------------------------------------------------

    def _start_held(self) -> None:
        """Start held jobs while slots are free (none once the worker is stopping: they are
        handed back)."""
        buffer = self._buffer
        while buffer and self._active < self.concurrency and not self._stopping.is_set():
            running = buffer.popleft()
            if running.cancel_reason is not None:  # cancelled or lost while held
                self._running.pop((running.queue.name, running.job.id), None)
                if running.cancel_reason == "cancel":
                    task = asyncio.get_running_loop().create_task(
                        self._fail(running, "cancelled", "", retryable=False)
                    )
                    self._side_tasks.add(task)  # a strong reference until it ends
                    task.add_done_callback(self._side_tasks.discard)
                continue
            self._active += 1
            running.task = asyncio.get_running_loop().create_task(self._execute(running))

    async def _call(self, fn: _Function, job: Job) -> Any:
        tracing = self.rk.tracing
        if tracing is not None:
            # A `process <queue>` span around the function, child of the enqueuer's span.
            return await tracing.process_job(job, functools.partial(self._invoke, fn, job, True))
        return await self._invoke(fn, job, False)

    async def _invoke(self, fn: _Function, job: Job, traced: bool) -> Any:
        args = (job.payload, job) if fn.takes_job else (job.payload,)
        if fn.is_async:
            return await fn.call(*args)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="redkit-job")
        loop = asyncio.get_running_loop()
        call = functools.partial(fn.call, *args)
        if traced:
            # run_in_executor does not carry context variables: the job's span would not be
            # the current one in its thread, and the function's own spans would start a trace.
            call = functools.partial(contextvars.copy_context().run, call)
        result = await loop.run_in_executor(self._executor, call)
        if inspect.isawaitable(result):  # a plain def that returned a coroutine
            return await result
        return result

    async def _execute(self, running: _Running) -> None:
        job, queue = running.job, running.queue
        key = (queue.name, job.id)
        began = time.perf_counter()
        outcome = "failed"
        try:
            fn = self.functions.get(job.function)
            if fn is None:
                known = ", ".join(sorted(self.functions)) or "none"
                await self._fail(
                    running,
                    f"unknown function {job.function!r}: this worker knows {known}; register "
                    "it in the worker's functions (or fix the name given to enqueue)",
                    "",
                    retryable=False,
                )
                return
            try:
                if job.timeout:
                    async with asyncio.timeout(job.timeout) as deadline:
                        result = await self._call(fn, job)
                else:
                    deadline = None
                    result = await self._call(fn, job)
            except asyncio.CancelledError:
                reason = running.cancel_reason
                outcome = "cancelled" if reason in (None, "cancel") else reason
                if running.cancel_reason == "cancel":
                    await self._fail(running, "cancelled", "", retryable=False)
                # "lost": another worker has the job now; "shutdown": handed back by run().
                return
            except TimeoutError as exc:
                if deadline is not None and deadline.expired():
                    await self._fail(
                        running,
                        f"timed out after {job.timeout:g} s (attempt {job.attempts} of "
                        f"{job.max_attempts})",
                        "",
                        retryable=True,
                    )
                else:
                    await self._fail(running, _error_text(exc), _traceback_text(exc), True)
                return
            except Exception as exc:
                await self._fail(running, _error_text(exc), _traceback_text(exc), True)
                return
            try:
                data = dumps(result, max_bytes=queue.max_payload_bytes, what="the job's result")
            except InvalidInput as exc:
                await self._fail(running, str(exc), "", retryable=False)
                return
            self._acks.setdefault(queue.name, []).append((job.id, job.attempts, data))
            self._ack_wanted.set()
            outcome = "completed"
        finally:
            took = time.perf_counter() - began
            observe(queue.name, job.function, outcome, took)
            self._running.pop(key, None)
            self._active -= 1
            mean = self._mean_s
            self._mean_s = took if mean is None else mean + (took - mean) / 16
            self._start_held()
            self._slot_freed.set()

    async def _fail(self, running: _Running, error: str, tb: str, retryable: bool) -> None:
        queue, job = running.queue, running.job
        keys = [
            queue.active_key,
            queue.delayed_key,
            queue.failed_key,
            queue.events_key,
            queue.wake_key,
            queue.cancelled_key,
        ]
        args: list[str | int | float] = [
            queue.job_prefix,
            queue.done_prefix,
            self.id,
            job.id,
            job.attempts,
            error[:MAX_ERROR_CHARS],
            tb[-MAX_TRACEBACK_CHARS:],
            int(retryable),
            0.8 + 0.4 * random.random(),
            queue.max_backoff_ms,
            queue.keep_failed,
            queue.failed_ttl_ms,
            queue.events_maxlen,
        ]
        self.stats.failed += 1
        try:
            state = await self.rk.run(SCRIPTS["fail"], keys, args)
        except RedkitError as exc:
            log.warning("could not record the failure of job %s: %s", job.id, exc)
            return
        if state:
            log.info("job %s (%s) attempt %d: %s", job.id, job.function, job.attempts, error)

    # -- acknowledgements and heartbeats ---------------------------------------------------------

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_wanted.wait()
            self._ack_wanted.clear()
            # Shielded: cancelling this loop at shutdown must not cut a flush in half (its
            # acks would be lost to the stats, or never sent and the jobs run again).
            self._ack_flush = asyncio.ensure_future(self._flush_acks())
            await asyncio.shield(self._ack_flush)

    async def _flush_acks(self) -> None:
        acks, self._acks = self._acks, {}
        calls = []
        for name, items in acks.items():
            queue = next(q for q in self.queues if q.name == name)
            for i in range(0, len(items), ACK_BATCH):
                calls.append(self._complete(queue, items[i : i + ACK_BATCH]))
        if calls:
            await asyncio.gather(*calls)

    async def _complete(self, queue: Queue, items: list[tuple[str, int, bytes]]) -> None:
        keys = [queue.active_key, queue.completed_key, queue.events_key]
        args: list[str | int | bytes] = [
            queue.job_prefix,
            queue.done_prefix,
            self.id,
            queue.keep_completed,
            queue.completed_ttl_ms,
            queue.events_maxlen,
            len(items),
        ]
        for job_id, attempt, data in items:
            args += [job_id, attempt, data]
        try:
            reply = await self.rk.run(SCRIPTS["complete"], keys, args)
        except RedkitError as exc:
            # The leases will expire and the jobs run again: at-least-once, never lost.
            log.warning("could not acknowledge %d job(s) of %s: %s", len(items), queue, exc)
            return
        self.stats.acks += 1
        done = sum(1 for r in reply if r)
        self.stats.completed += done
        if done < len(items):
            self.stats.lost += len(items) - done
            log.warning(
                "%d job(s) of %s finished after their lease was lost; another attempt owns them",
                len(items) - done,
                queue,
            )

    async def _presence(self, leaving: bool = False) -> None:
        """Tell the dashboard this worker is alive (and how loaded), or that it leaves."""
        info = None
        if not leaving:
            info = {
                "queues": [q.name for q in self.queues],
                "concurrency": self.concurrency,
                "running": self._active,
                "held": len(self._buffer),
                "completed": self.stats.completed,
                "failed": self.stats.failed,
                "started": round(self._began, 3),
                # Set by `redkit worker --processes N` for each of its children.
                "supervisor": _env_int("REDKIT_SUPERVISOR_PID"),
                "index": _env_int("REDKIT_WORKER_INDEX"),
                "restarts": _env_int("REDKIT_WORKER_RESTARTS"),
            }
        try:
            await announce(self.rk, self.id, info, self.lease_ms + 5000)
        except RedkitError as exc:
            log.debug("worker presence not recorded: %s", exc)

    async def _heartbeat(self) -> None:
        interval = self.lease / 3
        while True:
            await self._presence()
            await asyncio.sleep(interval)
            by_queue: dict[str, list[_Running]] = {}
            for running in list(self._running.values()):
                by_queue.setdefault(running.queue.name, []).append(running)
            for items in by_queue.values():
                try:
                    await self._extend(items)
                except RedkitError as exc:
                    log.warning("heartbeat failed (leases not renewed): %s", exc)

    async def _extend(self, items: list[_Running]) -> None:
        queue = items[0].queue
        args: list[str | int] = [queue.job_prefix, self.id, self.lease_ms, len(items)]
        for running in items:
            args += [running.job.id, running.job.attempts]
        reply = await self.rk.run(SCRIPTS["extend"], [queue.active_key], args)
        for running, status in zip(items, reply, strict=True):
            if status == 1 or (running.task is not None and running.task.done()):
                continue
            running.cancel_reason = "cancel" if status == 2 else "lost"
            if status == 0:
                self.stats.lost += 1
                log.warning("job %s lost its lease; stopping this run", running.job.id)
            if running.task is not None:
                running.task.cancel()
            # A held job (task None) is dropped when its turn comes (_start_held).


def _env_int(name: str) -> int:
    try:
        return int(os.environ.get(name, "0") or 0)
    except ValueError:
        return 0


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # read, so that asyncio does not log it as never retrieved


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_ERROR_CHARS]


def _traceback_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))[-MAX_TRACEBACK_CHARS:]
