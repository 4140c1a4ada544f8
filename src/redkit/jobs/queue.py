"""The queue: enqueue (one or many, one round trip), inspect, cancel, retry, pause, drain.

Keys of the queue ``name`` (all under the hash tag ``{q:<name>}``, so every script runs on
one Cluster slot; the scripts build the per-job key names from the prefix they are given)::

    <ns>:{q:<name>}:waiting      zset  id -> priority/sequence score   durable queue state
    <ns>:{q:<name>}:delayed      zset  id -> due time (ms)             durable queue state
    <ns>:{q:<name>}:active       zset  id -> lease deadline (ms)       durable queue state
    <ns>:{q:<name>}:job:<id>     hash  the job (stored once)           durable while pending
                                       or active; TTL once completed, failed or cancelled
    <ns>:{q:<name>}:seq          counter for FIFO order                durable (one integer)
    <ns>:{q:<name>}:paused       flag                                  durable queue state
    <ns>:{q:<name>}:completed    zset  id -> finish time               bounded: count and age
    <ns>:{q:<name>}:failed       zset  id -> finish time               bounded: count and age
                                       (a failed job's hash also holds its search text)
    <ns>:{q:<name>}:cancelled    zset  id -> finish time               bounded: count and age
    <ns>:{q:<name>}:events       stream of lifecycle events            bounded: MAXLEN ~
    <ns>:{q:<name>}:wake         list  wake-up tokens for idle workers bounded: 64 entries
    <ns>:{q:<name>}:done:<id>    list  wakes result() waiters          TTL 60 s
    <ns>:{q:<name>}:once:<tick>  string  a cron tick's marker          TTL (one day)
    <ns>:jobs:queues             set of queue names (for the CLI)      bounded by queue count

The states and the transitions between them are listed in :mod:`redkit.jobs.states`.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from redkit._codegen import IS_ASYNC, async_only
from redkit._trace import traced
from redkit.codec import DEFAULT_MAX_BYTES, dumps, loads, milliseconds, seconds
from redkit.durability import Durability, replication
from redkit.errors import InvalidInput, JobFailed, JobTimeout, translate_redis_errors
from redkit.jobs.states import PRIORITY_MAX, PRIORITY_MIN, JobState
from redkit.keys import QUEUE_NAME
from redkit.scripts import ScriptSet

if TYPE_CHECKING:
    from redkit.client import Redkit

__all__ = ["Job", "JobSpec", "Queue", "QueueStats", "find_job_queues", "list_queues"]

SCRIPTS = ScriptSet(__package__)

MAX_NAME_LENGTH = 200
MAX_JOB_ID_LENGTH = 256
MAX_PROGRESS_BYTES = 16 * 1024
"""A progress report is a status line, not a result: kept small (it rides every event)."""
_NOT_THE_WORKER = (
    "only the worker running a job can report its progress: call it on the Job your "
    "function receives as its second argument"
)
ENQUEUE_BATCH = 1000
"""Jobs per enqueue script call in :meth:`Queue.enqueue_many` (bounds one call's work)."""
DONE_LIST_TTL = 60.0

_UNSET: Any = object()
_BLOCKING: weakref.WeakKeyDictionary[Redkit, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def blocking_slots(rk: Redkit) -> asyncio.Semaphore:
    """At most a quarter of the pool blocks in BLPOP at once, so waiters never starve callers."""
    slots = _BLOCKING.get(rk)
    if slots is None:
        slots = asyncio.Semaphore(max(1, rk.settings.max_connections // 4))
        _BLOCKING[rk] = slots
    return slots


def wait_chunk(rk: Redkit) -> float:
    """Longest single BLPOP: it must answer before the client's socket timeout fires."""
    return max(0.05, rk.settings.command_timeout * 0.75)


def check_name(value: object, what: str, limit: int = MAX_NAME_LENGTH) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > limit:
        raise InvalidInput(f"{what} is {len(value)} characters; the limit is {limit}")
    return value


# A state as the server returns it (bytes; str with decode_responses) -> JobState.
_STATE_REPLIES: dict[Any, JobState] = {
    **{state.value.encode(): state for state in JobState},
    **{state.value: state for state in JobState},
}


def _state(value: Any) -> JobState:
    """A state read from the server. An unknown one would be a bug in the scripts:
    ``JobState()`` says so rather than guess one."""
    return _STATE_REPLIES.get(value) or JobState(_text(value))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms_to_s(value: Any) -> float | None:
    return None if value is None else int(value) / 1000


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts by state (``delayed`` includes retrying jobs)."""

    queue: str
    waiting: int
    delayed: int
    active: int
    completed: int
    failed: int
    paused: bool
    cancelled: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "waiting": self.waiting,
            "delayed": self.delayed,
            "active": self.active,
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "paused": self.paused,
        }


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job for :meth:`Queue.enqueue_many` (a mapping with these keys works too)."""

    function: str
    payload: Any = None
    priority: int = 0
    delay: float | timedelta = 0
    max_attempts: int | None = None
    backoff: float | timedelta | None = None
    timeout: float | timedelta | None = _UNSET
    job_id: str | None = None


@dataclass(eq=False)
class Job:
    """A job as last read from (or written to) the server. Times: seconds since the epoch
    (server clock). ``return_value`` holds the result of a completed job; ``await
    job.result()`` waits for it."""

    id: str
    queue: str
    function: str
    payload: Any
    state: JobState
    priority: int = 0
    attempts: int = 0
    max_attempts: int = 1
    timeout: float | None = None
    return_value: Any = None
    error: str | None = None
    traceback: str | None = None
    created_at: float | None = None
    scheduled_at: float | None = None
    """When it was (or is) due to run: enqueue time plus delay, or the end of its backoff."""
    started_at: float | None = None
    finished_at: float | None = None
    progress: Any = None
    """The last progress the job reported (:meth:`set_progress`), by any attempt."""
    created: bool = True
    """False when :meth:`Queue.enqueue` found a job with this ``job_id`` already there (this
    object then describes the new request, except ``state``, which is the existing job's)."""
    _queue: Queue | None = field(default=None, repr=False)
    _owner: str | None = field(default=None, repr=False)
    """The id of the worker running this attempt, on the Job a worker hands its function."""
    _traceparent: bytes | None = field(default=None, repr=False, compare=False)
    """The enqueuer's trace context as the server gave it back: untrusted (redkit.otel)."""
    if IS_ASYNC:
        # Sync: a sync Job is never a worker's (the worker is async), so it has no loop.
        _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
        """The worker's event loop, for reports from a plain ``def`` job's thread."""

    def __repr__(self) -> str:
        return (
            f"<Job {self.id} {self.function!r} on {self.queue!r} {self.state.value} "
            f"attempt {self.attempts}/{self.max_attempts}>"
        )

    def _q(self) -> Queue:
        if self._queue is None:
            raise InvalidInput("this Job is not bound to a queue; get it with queue.get(id)")
        return self._queue

    async def refresh(self) -> Job:
        """Read the job again from the server (fields updated in place); return it."""
        fresh = await self._q().get(self.id)
        if fresh is None:
            raise JobFailed(f"job {self.id} no longer exists (trimmed, drained or never there)")
        for name in (
            "state",
            "attempts",
            "return_value",
            "error",
            "traceback",
            "started_at",
            "finished_at",
            "scheduled_at",
            "progress",
        ):
            setattr(self, name, getattr(fresh, name))
        return self

    async def set_progress(self, progress: Any) -> bool:
        """Record how far the running job got: a number (``0.4``) or any small JSON value
        (``{"step": "build", "done": 3, "of": 7}``). One round trip.

        Call it on the Job your function receives (``async def deploy(payload, job)``). It
        is stored on the job (``Job.progress``) and sent as a ``progress`` event on the
        queue's lifecycle stream, which the dashboard and notifications read. Returns False
        when this attempt no longer owns the job (it finished, or its lease was lost to
        another worker): then nothing is written.
        """
        queue = self._q()
        if self._owner is None:
            raise InvalidInput(_NOT_THE_WORKER)
        data = dumps(progress, max_bytes=MAX_PROGRESS_BYTES, what="job progress")
        recorded = await queue.rk.run(
            SCRIPTS["progress"],
            [queue.job_key(self.id), queue.events_key],
            [self._owner, self.attempts, data, queue.events_maxlen, self.id],
        )
        if recorded:
            self.progress = loads(data)
        return bool(recorded)

    @async_only
    def set_progress_sync(self, progress: Any, timeout: float = 10.0) -> bool:
        """:meth:`set_progress` for a plain ``def`` job, which runs in the worker's threads.

        It hands the report to the worker's event loop and waits for it (at most
        ``timeout`` seconds). From ``async def`` code, ``await job.set_progress(...)``.
        """
        loop = self._loop
        if loop is None or self._owner is None:
            raise InvalidInput(_NOT_THE_WORKER)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise InvalidInput("in async code, use `await job.set_progress(...)`")
        return asyncio.run_coroutine_threadsafe(self.set_progress(progress), loop).result(timeout)

    async def status(self) -> JobState:
        """The job's state now (one round trip)."""
        return (await self.refresh()).state

    async def result(self, timeout: float | timedelta | None = None) -> Any:  # noqa: ASYNC109
        """Wait until the job finishes and return its result, without polling.

        Raises :class:`~redkit.errors.JobFailed` if it failed or was cancelled, and
        :class:`~redkit.errors.JobTimeout` if it has not finished within ``timeout`` seconds
        (``None``: wait as long as it takes).
        """
        return await self._q().wait(self.id, timeout=timeout, job=self)

    async def cancel(self) -> JobState | None:
        """Cancel the job (see :meth:`Queue.cancel`)."""
        return await self._q().cancel(self.id)


def job_from_hash(queue: Queue, job_id: str, raw: Mapping[Any, Any] | Sequence[Any]) -> Job:
    """A :class:`Job` from the job hash (a mapping, or a flat field/value list)."""
    if isinstance(raw, Mapping):
        items = {_text(k): v for k, v in raw.items()}
    else:
        items = {_text(raw[i]): raw[i + 1] for i in range(0, len(raw), 2)}
    timeout_ms = int(items.get("timeout") or 0)
    state = _state(items["state"])
    payload = items.get("payload")
    return Job(
        id=job_id,
        queue=queue.name,
        function=_text(items.get("fn", b"")),
        payload=loads(payload),
        state=state,
        priority=int(items.get("prio") or 0),
        attempts=int(items.get("attempts") or 0),
        max_attempts=int(items.get("max") or 1),
        timeout=timeout_ms / 1000 if timeout_ms else None,
        return_value=loads(items["result"]) if "result" in items else None,
        error=_text(items["error"]) if "error" in items else None,
        traceback=_text(items["traceback"]) if items.get("traceback") else None,
        created_at=_ms_to_s(items.get("created")),
        scheduled_at=_ms_to_s(items.get("due")),
        started_at=_ms_to_s(items.get("started")),
        finished_at=_ms_to_s(items.get("finished")),
        progress=loads(items["progress"]) if "progress" in items else None,
        _queue=queue,
    )


class Queue:
    """A named job queue. Make it with ``rk.queue(name, **options)``.

    ``name``: 1-128 characters from ASCII letters, digits and ``_ . - :`` (anything else is
    :class:`~redkit.errors.InvalidInput`; see :mod:`redkit.keys`).

    Defaults for the jobs it enqueues: ``max_attempts`` (3), ``backoff`` (1 s: the wait
    before attempt 2; it doubles each attempt, with +-20% jitter, up to ``max_backoff``),
    ``timeout`` (300 s per attempt; ``None``: none).
    Bounds: ``keep_completed`` jobs (1000) for at most ``completed_ttl`` (1 h);
    ``keep_failed`` jobs (10000) for at most ``failed_ttl`` (7 days), and as many cancelled
    ones, kept apart; ``events``: the
    lifecycle stream's length (10000, ``0`` to write none). ``max_payload_bytes`` caps a
    payload (and a result) as JSON.

    ``durability``: ``"async"`` (the default): an enqueue that returned may still be lost if
    the master dies before its replica has it (a failover promotes a replica that is a few
    writes behind). ``"replicated"``: an enqueue returns only once ``replicas`` replicas
    confirmed it (``WAIT``, within ``durability_timeout``), else it raises
    :class:`~redkit.errors.NotReplicated`; one that returned survives the failover of one
    master (see :mod:`redkit.durability`). Only the enqueue waits; claims and results do
    not (a lost claim or result makes the job run again: at-least-once).
    """

    def __init__(
        self,
        rk: Redkit,
        name: str,
        *,
        max_attempts: int = 3,
        backoff: float | timedelta = 1.0,
        max_backoff: float | timedelta = 3600.0,
        timeout: float | timedelta | None = 300.0,
        keep_completed: int = 1000,
        completed_ttl: float | timedelta = 3600.0,
        keep_failed: int = 10_000,
        failed_ttl: float | timedelta = timedelta(days=7),
        events: int = 10_000,
        max_payload_bytes: int = DEFAULT_MAX_BYTES,
        durability: Durability = "async",
        replicas: int = 1,
        durability_timeout: float | timedelta | None = None,
    ) -> None:
        self.rk = rk
        self.name = QUEUE_NAME.check(name, "queue name")
        self.durability = durability
        self._replication = replication(rk, durability, replicas, durability_timeout)
        self.max_attempts = _check_attempts(max_attempts)
        self.backoff_ms = milliseconds(backoff, "backoff", allow_zero=True)
        self.max_backoff_ms = milliseconds(max_backoff, "max_backoff", allow_zero=True)
        self.timeout_ms = _timeout_ms(timeout)
        self.keep_completed = _check_count(keep_completed, "keep_completed")
        self.completed_ttl_ms = milliseconds(completed_ttl, "completed_ttl")
        self.keep_failed = _check_count(keep_failed, "keep_failed")
        self.failed_ttl_ms = milliseconds(failed_ttl, "failed_ttl")
        self.events_maxlen = _check_count(events, "events")
        if isinstance(max_payload_bytes, bool) or not isinstance(max_payload_bytes, int):
            raise InvalidInput(f"max_payload_bytes must be an int, got {max_payload_bytes!r}")
        if max_payload_bytes < 1:
            raise InvalidInput(f"max_payload_bytes must be >= 1, got {max_payload_bytes!r}")
        self.max_payload_bytes = max_payload_bytes
        group = rk.keys.group("q", name)
        self.group = group
        self.waiting_key = group.key("waiting")
        self.delayed_key = group.key("delayed")
        self.active_key = group.key("active")
        self.completed_key = group.key("completed")
        self.failed_key = group.key("failed")
        self.cancelled_key = group.key("cancelled")
        self.paused_key = group.key("paused")
        self.seq_key = group.key("seq")
        self.events_key = group.key("events")
        self.wake_key = group.key("wake")
        self.job_prefix = group.key("job") + ":"
        self.done_prefix = group.key("done") + ":"
        self.once_prefix = group.key("once") + ":"
        self._registered = False
        # One tuple for every enqueue: the script runner checks a tuple's slots only once.
        self._enqueue_keys = (
            self.waiting_key,
            self.delayed_key,
            self.seq_key,
            self.events_key,
            self.wake_key,
        )

    def __repr__(self) -> str:
        return f"<Queue {self.name!r} namespace={self.rk.namespace!r}>"

    def job_key(self, job_id: str) -> str:
        return self.job_prefix + job_id

    # -- enqueue -------------------------------------------------------------------------------

    def _job_args(
        self,
        function: str,
        payload: Any,
        priority: int,
        delay: float | timedelta,
        max_attempts: int | None,
        backoff: float | timedelta | None,
        timeout: float | timedelta | None,
        job_id: str | None,
        once: str = "",
    ) -> list[str | int | bytes]:
        check_name(function, "function name")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise InvalidInput(f"priority must be an int, got {priority!r}")
        if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            raise InvalidInput(
                f"priority {priority} is out of range: use {PRIORITY_MIN}..{PRIORITY_MAX} "
                "(higher runs first)"
            )
        # No delay (the usual case) skips the conversion and its checks.
        delay_ms = (
            0
            if delay == 0 and type(delay) is int
            else milliseconds(delay, "delay", allow_zero=True)
        )
        attempts = self.max_attempts if max_attempts is None else _check_attempts(max_attempts)
        backoff_ms = (
            self.backoff_ms
            if backoff is None
            else milliseconds(backoff, "backoff", allow_zero=True)
        )
        timeout_ms = self.timeout_ms if timeout is _UNSET else _timeout_ms(timeout)
        fresh = job_id is None
        if job_id is None:
            job_id = secrets.token_hex(16)  # 128 random bits: no job has this id yet
        else:
            check_name(job_id, "job_id", MAX_JOB_ID_LENGTH)
        data = dumps(payload, max_bytes=self.max_payload_bytes, what="job payload")
        return [
            job_id,
            function,
            data,
            priority,
            delay_ms,
            attempts,
            backoff_ms,
            timeout_ms,
            once,
            int(fresh),
        ]

    async def _enqueue_args(self, args: list[str | int | bytes], count: int) -> list[Any]:
        if not self._registered:
            # Once per Queue object: lets `redkit jobs stats` list the namespace's queues.
            with translate_redis_errors("register queue"):
                await self.rk.redis.sadd(self.rk.keys.key("jobs", "queues"), self.name)
            self._registered = True
        tracing = self.rk.tracing
        head: list[str | int | bytes] = [
            self.job_prefix,
            self.once_prefix,
            self.events_maxlen,
            86_400_000,
            count,
            # The enqueue span's context, for the worker's span of the job (redkit.otel).
            "" if tracing is None else tracing.traceparent(),
        ]
        if self._replication is not None:
            durable: list[Any] = await self.rk.run_replicated(
                SCRIPTS["enqueue"], self._enqueue_keys, head + args, self._replication
            )
            return durable
        result: list[Any] = await self.rk.run(SCRIPTS["enqueue"], self._enqueue_keys, head + args)
        return result

    @traced("job.enqueue")
    async def enqueue(
        self,
        function: str,
        payload: Any = None,
        *,
        priority: int = 0,
        delay: float | timedelta = 0,
        max_attempts: int | None = None,
        backoff: float | timedelta | None = None,
        timeout: float | timedelta | None = _UNSET,  # noqa: ASYNC109 (the job's own timeout)
        job_id: str | None = None,
    ) -> Job:
        """Queue a call of ``function`` (a name the workers know) with ``payload`` (JSON).

        ``priority``: -1000..1000, higher runs first (FIFO within one priority). ``delay``:
        run no earlier than this many seconds from now. ``job_id``: your own id; while a job
        with this id exists (until its retention ends) it is not queued again: the returned
        Job has ``created=False`` and the existing job's state. One round trip.
        """
        args = self._job_args(
            function, payload, priority, delay, max_attempts, backoff, timeout, job_id
        )
        reply = await self._enqueue_args(args, 1)
        return self._job_from_args(args, payload, reply[0], reply[1])

    @traced("job.enqueue_many")
    async def enqueue_many(self, jobs: Iterable[JobSpec | Mapping[str, Any]]) -> list[Job]:
        """Queue many jobs, in this order: one round trip per batch of 1000 jobs.

        Each item is a :class:`JobSpec` or a mapping with its keys (``function``, ``payload``,
        ``priority``, ``delay``, ``max_attempts``, ``backoff``, ``timeout``, ``job_id``).
        Every job is checked before anything is written.
        """
        specs: list[JobSpec] = []
        for item in jobs:
            if isinstance(item, JobSpec):
                specs.append(item)
            elif isinstance(item, Mapping):
                try:
                    specs.append(JobSpec(**item))
                except TypeError as exc:
                    raise InvalidInput(f"bad job spec {item!r}: {exc}") from None
            else:
                raise InvalidInput(f"enqueue_many takes JobSpecs or mappings, got {item!r}")
        rows = [
            self._job_args(
                s.function,
                s.payload,
                s.priority,
                s.delay,
                s.max_attempts,
                s.backoff,
                s.timeout,
                s.job_id,
            )
            for s in specs
        ]
        chunks = [rows[i : i + ENQUEUE_BATCH] for i in range(0, len(rows), ENQUEUE_BATCH)]
        # One batch after the other, so that FIFO order across batches is the list's order.
        replies = [
            await self._enqueue_args([a for row in chunk for a in row], len(chunk))
            for chunk in chunks
        ]
        out: list[Job] = []
        for chunk_index, reply in enumerate(replies):
            for i in range(len(chunks[chunk_index])):
                index = chunk_index * ENQUEUE_BATCH + i
                out.append(
                    self._job_from_args(
                        rows[index], specs[index].payload, reply[2 * i], reply[2 * i + 1]
                    )
                )
        return out

    def _job_from_args(self, args: Sequence[Any], payload: Any, created: Any, state: Any) -> Job:
        # args are _job_args' own values (str and int already): no conversions needed.
        timeout_ms = args[7]
        return Job(
            id=args[0],
            queue=self.name,
            function=args[1],
            payload=payload,
            state=_state(state),
            priority=args[3],
            max_attempts=args[5],
            timeout=timeout_ms / 1000 if timeout_ms else None,
            created=created == 1,
            _queue=self,
        )

    # -- read ----------------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        """The job with this id, or ``None`` if there is none (never was, or trimmed)."""
        check_name(job_id, "job_id", MAX_JOB_ID_LENGTH)
        with translate_redis_errors(f"get job {job_id}"):
            raw = await self.rk.redis.hgetall(self.job_key(job_id))
        if not raw:
            return None
        return job_from_hash(self, job_id, raw)

    async def stats(self) -> QueueStats:
        """Counts by state, in one round trip."""
        keys = [
            self.waiting_key,
            self.delayed_key,
            self.active_key,
            self.completed_key,
            self.failed_key,
            self.paused_key,
            self.cancelled_key,
        ]
        w, d, a, c, f, p, x = await self.rk.run(SCRIPTS["stats"], keys)
        return QueueStats(self.name, w, d, a, c, f, bool(p), x)

    async def jobs(
        self, state: JobState | str, offset: int = 0, limit: int = 50, *, newest_first: bool = False
    ) -> list[Job]:
        """A page of the jobs in ``state`` (waiting in run order; the others by time).

        ``delayed`` also lists retrying jobs (one set holds both: both wait for a time).
        """
        try:
            wanted = JobState(state)
            if wanted is JobState.REMOVED:
                raise ValueError(state)  # nothing is stored in that state: nothing to list
        except ValueError:
            names = ", ".join(s.value for s in JobState if s is not JobState.REMOVED)
            raise InvalidInput(f"unknown job state {state!r}; use one of {names}") from None
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidInput(f"offset must be an int >= 0, got {offset!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidInput(f"limit must be an int in 1..1000, got {limit!r}")
        zset = {
            JobState.WAITING: self.waiting_key,
            JobState.DELAYED: self.delayed_key,
            JobState.RETRYING: self.delayed_key,
            JobState.ACTIVE: self.active_key,
            JobState.COMPLETED: self.completed_key,
            JobState.FAILED: self.failed_key,
            JobState.CANCELLED: self.cancelled_key,
        }[wanted]
        reply = await self.rk.run(
            SCRIPTS["list"], [zset], [self.job_prefix, offset, limit, int(newest_first)]
        )
        out: list[Job] = []
        for i in range(1, len(reply), 2):
            if reply[i + 1]:  # a trimmed job whose id is still in the set
                out.append(job_from_hash(self, _text(reply[i]), reply[i + 1]))
        return out

    async def search_failed(
        self, query: str, limit: int = 50, *, scan: int = 10_000
    ) -> tuple[list[Job], int]:
        """Failed jobs whose id is ``query``, or whose function name or error text contains
        it (case-insensitive), newest first; one round trip.

        No KEYS or SCAN: the script walks the failed set (newest first, at most ``scan`` ids)
        and matches each job's search text, which the fail script stores on the job (so it
        is bounded and trimmed with the job). Returns the jobs found (at most ``limit``) and
        how many ids were looked at.
        """
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("search for a non-empty string (a job id, function or error)")
        if len(query) > 200:
            raise InvalidInput(f"a search is at most 200 characters, got {len(query)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidInput(f"limit must be an int in 1..1000, got {limit!r}")
        if isinstance(scan, bool) or not isinstance(scan, int) or not 1 <= scan <= 100_000:
            raise InvalidInput(f"scan must be an int in 1..100000, got {scan!r}")
        reply = await self.rk.run(
            SCRIPTS["search_failed"],
            [self.failed_key],
            [self.job_prefix, query.strip(), query.strip().lower(), limit, scan],
        )
        out: list[Job] = []
        for i in range(1, len(reply), 2):
            if reply[i + 1]:
                out.append(job_from_hash(self, _text(reply[i]), reply[i + 1]))
        return out, int(reply[0])

    async def events(self, count: int = 100) -> list[dict[str, str]]:
        """The latest lifecycle events, oldest first: ``{"id", "event", "job", ...}``."""
        with translate_redis_errors("read job events"):
            entries = await self.rk.redis.xrevrange(self.events_key, count=count)
        out = []
        for entry_id, fields in reversed(entries or []):
            row = {"id": _text(entry_id)}
            row.update({_text(k): _text(v) for k, v in (fields or {}).items()})
            out.append(row)
        return out

    async def wait(
        self,
        job_id: str,
        timeout: float | timedelta | None = None,  # noqa: ASYNC109
        *,
        job: Job | None = None,
    ) -> Any:
        """Wait for job ``job_id`` to finish; return its result (see :meth:`Job.result`).

        Each round registers the waiter and reads the job in one script, then blocks on the
        job's done list, which complete/fail/cancel push to: no polling.
        """
        limit = None if timeout is None else seconds(timeout, "timeout", allow_zero=True)
        loop = asyncio.get_running_loop()
        deadline = None if limit is None else loop.time() + limit
        job_key = self.job_key(job_id)
        done_key = self.done_prefix + job_id
        while True:
            raw = await self.rk.run(SCRIPTS["watch"], [job_key], [1])
            if not raw:
                raise JobFailed(
                    f"job {job_id} on queue {self.name!r} does not exist (any more): it was "
                    "never enqueued, or it was drained or trimmed"
                )
            found = job_from_hash(self, job_id, raw)
            if job is not None:
                for name in ("state", "attempts", "return_value", "error", "traceback"):
                    setattr(job, name, getattr(found, name))
            if found.state == JobState.COMPLETED:
                return found.return_value
            if found.state in (JobState.FAILED, JobState.CANCELLED):
                raise JobFailed(
                    f"job {job_id} ({found.function}) {found.state.value} after "
                    f"{found.attempts} attempt(s): {found.error}",
                    error=found.error,
                )
            remaining = math.inf if deadline is None else deadline - loop.time()
            if remaining <= 0:
                raise JobTimeout(
                    f"job {job_id} ({found.function}) is still {found.state.value} after "
                    f"{limit:g} s; wait longer (timeout=...) or check the workers"
                )
            block = min(wait_chunk(self.rk), remaining)
            async with blocking_slots(self.rk):
                with translate_redis_errors(f"wait for job {job_id}"):
                    await self.rk.redis.blpop([done_key], timeout=max(0.001, round(block, 3)))

    # -- change ----------------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> JobState | None:
        """Cancel a job: a pending one at once, an active one at its worker's next heartbeat
        (the function is cancelled). Returns the state it was in (``None``: no such job);
        a finished job is left as it is."""
        check_name(job_id, "job_id", MAX_JOB_ID_LENGTH)
        keys = [self.waiting_key, self.delayed_key, self.cancelled_key, self.events_key]
        args: list[str | int] = [
            self.job_prefix,
            self.done_prefix,
            job_id,
            self.failed_ttl_ms,
            self.events_maxlen,
            self.keep_failed,
        ]
        before = await self.rk.run(SCRIPTS["cancel"], keys, args)
        return None if not before else _state(before)

    async def retry(self, job_id: str) -> bool:
        """Queue a failed or cancelled job again, with its attempts back to zero.

        Returns False if the job is not failed or cancelled; raises InvalidInput if there is
        no such job.
        """
        check_name(job_id, "job_id", MAX_JOB_ID_LENGTH)
        keys = [
            self.waiting_key,
            self.failed_key,
            self.seq_key,
            self.events_key,
            self.wake_key,
            self.cancelled_key,
        ]
        before = await self.rk.run(
            SCRIPTS["retry"], keys, [self.job_prefix, job_id, self.events_maxlen]
        )
        if not before:
            raise InvalidInput(f"no job {job_id} on queue {self.name!r} (trimmed or never there)")
        return _text(before) in (JobState.FAILED, JobState.CANCELLED)

    async def retry_all_failed(self) -> int:
        """Queue every failed job again (attempts back to zero), in steps of 1000 jobs per
        script call; returns how many ids left the failed set (cancelled jobs stay)."""
        keys = [self.waiting_key, self.failed_key, self.seq_key, self.events_key, self.wake_key]
        total = 0
        # Bounded: the failed set holds at most keep_failed ids, 1000 per round.
        for _ in range(self.keep_failed // 1000 + 2):
            moved = int(
                await self.rk.run(
                    SCRIPTS["retry_failed"], keys, [self.job_prefix, self.events_maxlen, 1000]
                )
            )
            total += moved
            if moved == 0:
                break
        return total

    async def delete(self, job_id: str) -> JobState | None:
        """Remove a job that is not running (its hash and its id in every state set).

        Returns the state it was in (``None``: no such job). An active job is left as it is
        and ``JobState.ACTIVE`` returned: cancel it first.
        """
        check_name(job_id, "job_id", MAX_JOB_ID_LENGTH)
        keys = [
            self.waiting_key,
            self.delayed_key,
            self.completed_key,
            self.failed_key,
            self.cancelled_key,
            self.events_key,
        ]
        before = await self.rk.run(
            SCRIPTS["delete"], keys, [self.job_prefix, job_id, self.events_maxlen]
        )
        return None if not before else _state(before)

    async def pause(self) -> bool:
        """Stop handing out jobs (enqueueing goes on). True if it was running."""
        keys = [self.paused_key, self.wake_key, self.events_key]
        return bool(await self.rk.run(SCRIPTS["set_paused"], keys, [1, self.events_maxlen]))

    async def resume(self) -> bool:
        """Hand out jobs again. True if it was paused."""
        keys = [self.paused_key, self.wake_key, self.events_key]
        return bool(await self.rk.run(SCRIPTS["set_paused"], keys, [0, self.events_maxlen]))

    async def is_paused(self) -> bool:
        with translate_redis_errors("queue paused?"):
            return bool(await self.rk.redis.exists(self.paused_key))

    async def drain(self) -> int:
        """Remove every waiting, delayed and retrying job (active ones finish); return how
        many were removed. Works in bounded steps of 1000 jobs per script call."""
        total = 0
        while True:
            removed = int(
                await self.rk.run(
                    SCRIPTS["drain"], [self.waiting_key, self.delayed_key], [self.job_prefix, 1000]
                )
            )
            total += removed
            if removed == 0:
                return total


def _check_attempts(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise InvalidInput(f"max_attempts must be an int in 1..1000, got {value!r}")
    return value


def _check_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{what} must be an int >= 0, got {value!r}")
    return value


def _timeout_ms(value: float | timedelta | None) -> int:
    """A job timeout in ms; 0 means none."""
    return 0 if value is None else milliseconds(value, "job timeout")


async def find_job_queues(rk: Redkit, job_id: str) -> list[str]:
    """The queues (of :func:`list_queues`) that hold a job with this id, sorted.

    A job's hash lives under its queue's hash tag, so the id alone does not name one key:
    each known queue is asked for it, all in one pipeline (bounded by the queue count).
    """
    check_name(job_id, "job_id", MAX_JOB_ID_LENGTH)
    names = await list_queues(rk)
    if not names:
        return []
    with translate_redis_errors(f"find job {job_id}"):
        pipe = rk.redis.pipeline(transaction=False)
        for name in names:
            pipe.exists(Queue(rk, name).job_key(job_id))
        found = await pipe.execute()
    return [name for name, hit in zip(names, found, strict=True) if hit]


async def list_queues(rk: Redkit) -> list[str]:
    """Names of the queues that were enqueued to in this namespace (sorted)."""
    with translate_redis_errors("list queues"):
        names = await rk.redis.smembers(rk.keys.key("jobs", "queues"))
    return sorted(_text(n) for n in names)
