"""Cron schedules: each tick enqueued exactly once, however many schedulers run.

::

    nightly = rk.schedule(cron="0 3 * * *", function="cleanup", queue="maintenance")
    worker = rk.worker(["maintenance"], functions, schedules=[nightly])   # or: await nightly.run()

Exactly once. Every scheduler computes the same ticks (cron times are absolute) and enqueues
each with a once-name ``cron:<name>:<tick epoch>`` and the job id derived from it, in the
enqueue script: the first ``SET NX`` of the once-name wins and the others are told the job
exists. The once-name lives one day (bounded), longer than any realistic skew between
schedulers, and unlike the job id it survives the job's own retention.

Registry. A running scheduler announces its schedule about once a minute (name, cron, zone,
function, queue, next tick) in ``<ns>:{jobs:schedules}:seen`` (zset) and ``:info`` (hash),
so ``redkit jobs schedules`` lists them without a SCAN. Bounded: an entry not announced for
:data:`ANNOUNCE_MAX_AGE` seconds is dropped, and at most :data:`MAX_ANNOUNCED` are kept.

Clock. A scheduler sleeps until the next tick by the server's clock (``TIME``, read before
each sleep), so schedulers on machines with skewed clocks agree. A tick that passes while no
scheduler runs is skipped, not caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any

import orjson

from redkit.errors import RedkitError, translate_redis_errors
from redkit.jobs.cron import CronExpression, time_zone
from redkit.jobs.queue import _UNSET, SCRIPTS, Job, check_name

if TYPE_CHECKING:
    from redkit.client import Redkit

__all__ = ["Schedule", "ScheduleInfo", "list_schedules"]

log = logging.getLogger("redkit.jobs")

ANNOUNCE_MAX_AGE = 300.0
"""Seconds after its last announcement that a schedule leaves the registry (a scheduler
announces about once a minute while it runs)."""
MAX_ANNOUNCED = 1000
"""Schedules the registry keeps per namespace (the least recently announced go first)."""


def _registry_keys(rk: Redkit) -> list[str]:
    group = rk.keys.group("jobs", "schedules")
    return [group.key("seen"), group.key("info")]


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule some scheduler (a worker, or ``schedule.run()``) is running."""

    name: str
    cron: str
    tz: str
    function: str
    queue: str
    next_run: float | None
    """The next tick (seconds since the epoch), as the scheduler last computed it."""
    seen: float
    """When a scheduler last announced it (seconds since the epoch, server clock)."""
    runner: str
    """``host:pid`` of the scheduler that announced it last."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cron": self.cron,
            "tz": self.tz,
            "function": self.function,
            "queue": self.queue,
            "next_run": self.next_run,
            "seen": self.seen,
            "runner": self.runner,
        }


async def list_schedules(rk: Redkit, limit: int = MAX_ANNOUNCED) -> list[ScheduleInfo]:
    """The schedules announced in this namespace within :data:`ANNOUNCE_MAX_AGE`, most
    recently announced first (one round trip; no SCAN)."""
    reply = await rk.run(
        SCRIPTS["schedules"], _registry_keys(rk), [int(ANNOUNCE_MAX_AGE * 1000), limit]
    )
    out: list[ScheduleInfo] = []
    for i in range(1, len(reply), 3):
        name = reply[i].decode() if isinstance(reply[i], bytes) else str(reply[i])
        info: dict[str, Any] = orjson.loads(reply[i + 2])
        out.append(
            ScheduleInfo(
                name=name,
                cron=str(info.get("cron", "")),
                tz=str(info.get("tz", "")),
                function=str(info.get("function", "")),
                queue=str(info.get("queue", "")),
                next_run=info.get("next_run"),
                seen=int(reply[i + 1]) / 1000,
                runner=str(info.get("runner", "")),
            )
        )
    return out


class Schedule:
    """Enqueue ``function(payload)`` on ``queue`` at every tick of ``cron``.

    Make it with ``rk.schedule(cron, function, payload, queue="default", name=None,
    tz="UTC", ...)``; further keyword arguments (``priority``, ``max_attempts``,
    ``timeout``, ...) go to each :meth:`Queue.enqueue <redkit.jobs.Queue.enqueue>`. ``tz``
    (an IANA name such as ``"Europe/Berlin"``) is the zone whose wall clock ``cron``
    describes; see :mod:`redkit.jobs.cron` for daylight-saving changes. ``name`` (default
    ``function``, ``cron`` and a non-UTC ``tz``) identifies the schedule: schedulers with
    the same name share ticks.
    """

    def __init__(
        self,
        rk: Redkit,
        *,
        cron: str,
        function: str,
        payload: Any = None,
        queue: str = "default",
        name: str | None = None,
        tz: str | tzinfo = "UTC",
        **enqueue_options: Any,
    ) -> None:
        self.rk = rk
        self.cron = CronExpression.parse(cron)
        self.tz = time_zone(tz)
        self.function = check_name(function, "function name")
        self.payload = payload
        self.queue = rk.queue(queue)
        default_name = f"{function}@{cron}" + ("" if self.tz is UTC else f"@{self.tz}")
        self.name = check_name(name or default_name, "schedule name")
        bad = set(enqueue_options) - {"priority", "max_attempts", "backoff", "timeout", "delay"}
        if bad:
            raise TypeError(f"Schedule got unexpected options: {', '.join(sorted(bad))}")
        self.enqueue_options = enqueue_options
        self.enqueued = 0
        """Ticks this scheduler enqueued (it won the tick)."""

    def __repr__(self) -> str:
        return (
            f"<Schedule {self.name!r} cron={self.cron.text!r} tz={self.tz} "
            f"queue={self.queue.name!r}>"
        )

    def next_after(self, when: datetime) -> datetime:
        """The first tick strictly after ``when``, in UTC."""
        return self.cron.next_after(when, self.tz)

    async def tick(self, at: datetime) -> Job:
        """Enqueue the tick at ``at`` unless some scheduler already did (``created`` says)."""
        stamp = int(at.timestamp())
        once = f"cron:{self.name}:{stamp}"
        args = self.queue._job_args(
            self.function,
            self.payload,
            self.enqueue_options.get("priority", 0),
            self.enqueue_options.get("delay", 0),
            self.enqueue_options.get("max_attempts"),
            self.enqueue_options.get("backoff"),
            self.enqueue_options.get("timeout", _UNSET),
            once,
            once,
        )
        reply = await self.queue._enqueue_args(args, 1)
        job = self.queue._job_from_args(args, self.payload, reply[0], reply[1])
        if job.created:
            self.enqueued += 1
        return job

    async def announce(self, now: datetime) -> None:
        """Tell the registry that this schedule runs (``redkit jobs schedules``)."""
        description = {
            "cron": self.cron.text,
            "tz": str(self.tz),
            "function": self.function,
            "queue": self.queue.name,
            "next_run": self.next_after(now).timestamp(),
            "runner": f"{socket.gethostname()}:{os.getpid()}",
        }
        await self.rk.run(
            SCRIPTS["announce"],
            _registry_keys(self.rk),
            [self.name, orjson.dumps(description), int(ANNOUNCE_MAX_AGE * 1000), MAX_ANNOUNCED],
        )

    async def server_now(self) -> datetime:
        with translate_redis_errors("TIME"):
            secs, micros = await self.rk.redis.time()
        return datetime.fromtimestamp(secs + micros / 1e6, tz=UTC)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Enqueue ticks until ``stop`` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        last: datetime | None = None
        while not stop.is_set():
            try:
                now = await self.server_now()
                # At most once a minute (the longest sleep below): keeps the registry fresh.
                # Best effort: a registry that cannot be written must not stop the ticks.
                try:
                    await self.announce(now if last is None else max(now, last))
                except RedkitError as exc:
                    log.debug("schedule %s: not announced: %s", self.name, exc)
                due = self.next_after(now if last is None else max(now, last))
                # Sleep in steps of at most a minute, re-reading the server clock.
                wait = (due - now).total_seconds()
                if wait > 60:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=60)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=max(0.0, wait))
                if stop.is_set():
                    return
                await self.tick(due)
                last = due
            except RedkitError as exc:
                log.warning("schedule %s: %s; retrying in 1 s", self.name, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
