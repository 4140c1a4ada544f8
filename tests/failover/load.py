"""Load for the failover tests: every primitive at work while a master dies.

Each actor has a client of its own (its own :func:`redkit.connect`) and records, per call,
when it succeeded and when it raised :class:`redkit.ConnectionLost`; a call that takes longer
than :data:`HANG` counts as a hang. Any other exception ends the actor, and so fails the
test. Actors:

- a producer enqueueing jobs (the acknowledged ones are recorded) and two workers running
  them (every run is recorded, with its start time);
- a rate-limit checker;
- a lock holder, taking the lock again and again and recording its fencing tokens;
- a publisher and a subscriber (the events received and the gap markers).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redkit
from redkit.errors import ConnectionLost, LockLost, LockNotAcquired
from redkit.jobs import Job
from redkit.notify import Event

T = TypeVar("T")

HANG = 10.0
"""No call may take longer (the command and connect timeouts are 2 s, with one retry on a
dropped connection): one that does is a hang, whatever it ends with."""

CHANNEL = "feed"
QUEUE = "work"
LOCK = "resource"


@dataclass
class Track:
    """What one actor saw: the times (monotonic) of its successes and of its failures."""

    name: str
    ok: list[float] = field(default_factory=list)
    lost: list[float] = field(default_factory=list)
    hangs: int = 0
    last_error: str = ""
    """The last failure's text, for the message of a check that fails."""

    def recovery(self, since: float) -> float | None:
        """Seconds from ``since`` to the first success after it (None: not yet)."""
        after = [t for t in self.ok if t > since]
        return after[0] - since if after else None

    async def call(self, operation: Awaitable[T], *also: type[Exception]) -> T | None:
        """Run ``operation``; ``None`` if it raised ConnectionLost (or one of ``also``)."""
        try:
            async with asyncio.timeout(HANG):
                result = await operation
        except TimeoutError:
            self.hangs += 1
            self.last_error = f"a call took more than {HANG} s"
            return None
        except ConnectionLost as exc:
            self.lost.append(time.monotonic())
            self.last_error = f"ConnectionLost: {exc}"
            return None
        except also as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            return None
        self.ok.append(time.monotonic())
        return result


@dataclass
class Load:
    """Start with :meth:`start`, stop with :meth:`stop`; the records stay for the checks."""

    url: str
    namespace: str
    durability: str = "async"
    """The queue's durability level (its enqueues wait for the replica when replicated)."""
    clients: list[redkit.Redkit] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    workers: list[Any] = field(default_factory=list)
    tracks: dict[str, Track] = field(default_factory=dict)
    acked: dict[int, float] = field(default_factory=dict)
    """Job number -> when its enqueue returned."""
    runs: list[tuple[int, float]] = field(default_factory=list)
    """(job number, start time) of every run, by either worker."""
    fences: list[int] = field(default_factory=list)
    published: dict[str, int] = field(default_factory=dict)
    received: list[Event] = field(default_factory=list)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def track(self, name: str) -> Track:
        return self.tracks.setdefault(name, Track(name))

    async def _client(self) -> redkit.Redkit:
        rk = await redkit.connect(self.url, self.namespace)
        self.clients.append(rk)
        return rk

    async def start(self) -> None:
        subscribed = asyncio.Event()
        actors: list[Coroutine[Any, Any, None]] = [
            self._producer(),
            self._limiter(),
            self._locker(),
            self._subscriber(subscribed),
            self._worker(0),
            self._worker(1),
        ]
        for actor in actors:
            self.tasks.append(asyncio.create_task(actor))
        async with asyncio.timeout(HANG):
            await subscribed.wait()  # the publisher starts once someone listens
        self.tasks.append(asyncio.create_task(self._publisher()))

    def queue(self, rk: redkit.Redkit) -> Any:
        return rk.queue(QUEUE, durability=self.durability)

    async def _producer(self) -> None:
        rk = await self._client()
        queue = self.queue(rk)
        track = self.track("enqueue")
        n = 0
        while not self._stopping.is_set():
            n += 1
            if await track.call(queue.enqueue("record", {"n": n}, job_id=f"j{n}")) is not None:
                self.acked[n] = time.monotonic()
            await asyncio.sleep(0.005)

    async def _worker(self, index: int) -> None:
        rk = await self._client()
        track = self.track(f"worker {index}")

        async def record(payload: dict[str, int], job: Job) -> None:
            self.runs.append((payload["n"], time.monotonic()))
            track.ok.append(time.monotonic())

        # A short lease: a job whose run the failover hid is handed out again soon.
        worker = rk.worker(
            self.queue(rk),
            functions={"record": record},
            concurrency=4,
            lease=2,
            grace=1,
            handle_signals=False,
        )
        self.workers.append(worker)
        await worker.run()

    async def _limiter(self) -> None:
        rk = await self._client()
        # fail="raise": the outage shows as ConnectionLost, not as fail-open decisions.
        limiter = rk.rate_limiter(limit=10_000_000, window=60, fail="raise")
        track = self.track("rate limit")
        while not self._stopping.is_set():
            await track.call(limiter.hit("k"))
            await asyncio.sleep(0.005)

    async def _locker(self) -> None:
        rk = await self._client()
        track = self.track("lock")

        async def hold() -> int:
            async with rk.lock(LOCK, ttl=1, timeout=0.5) as lock:
                assert lock.fencing_token is not None
                self.fences.append(lock.fencing_token)
                await asyncio.sleep(0.01)
                return lock.fencing_token

        while not self._stopping.is_set():
            # A lock that the failover took from its holder, or one still held on the new
            # master by an acquisition whose reply was lost: typed errors, not hangs.
            await track.call(hold(), LockNotAcquired, LockLost)
            await asyncio.sleep(0.005)

    async def _publisher(self) -> None:
        rk = await self._client()
        bus = rk.notifications(history=100_000)
        track = self.track("publish")
        n = 0
        while not self._stopping.is_set():
            n += 1
            event_id = await track.call(bus.publish(CHANNEL, {"n": n}))
            if event_id is not None:
                self.published[event_id] = n
            await asyncio.sleep(0.005)

    async def _subscriber(self, subscribed: asyncio.Event) -> None:
        rk = await self._client()
        bus = rk.notifications(history=100_000)
        track = self.track("subscribe")
        async with bus.subscribe(CHANNEL) as sub:
            subscribed.set()
            async for event in sub:
                self.received.append(event)
                if not event.is_gap:
                    track.ok.append(time.monotonic())

    async def stop_producing(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        self._stopping.set()
        for worker in self.workers:
            worker.stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HANG):
                await asyncio.gather(*self.tasks[:1], *self.tasks[4:6], return_exceptions=True)
        for task in self.tasks:
            if not task.done():
                task.cancel()
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        for rk in self.clients:
            await rk.close()
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result

    def check_actors(self) -> None:
        """Fail if an actor died of an unexpected error (it would be silent otherwise)."""
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def wait(self, until: Callable[[], bool], bound: float, what: str) -> float:
        """Poll ``until`` (every 20 ms) for at most ``bound`` seconds; return the time taken."""
        began = time.monotonic()
        while not until():
            self.check_actors()
            if time.monotonic() - began > bound:
                raise AssertionError(f"{what}: not within {bound} s")
            await asyncio.sleep(0.02)
        return time.monotonic() - began

    def recoveries(self, since: float) -> dict[str, float | None]:
        return {name: track.recovery(since) for name, track in self.tracks.items()}

    def errors(self) -> dict[str, str]:
        return {name: track.last_error for name, track in self.tracks.items()}
