"""Cron schedules: each tick enqueued exactly once, however many schedulers run.

::

    nightly = rk.schedule(cron="0 3 * * *", function="cleanup", queue="maintenance")
    worker = rk.worker(["maintenance"], functions, schedules=[nightly])   # or: await nightly.run()

Exactly once. Every scheduler computes the same ticks (cron times are absolute) and enqueues
each with a once-name ``cron:<name>:<tick epoch>`` and the job id derived from it, in the
enqueue script: the first ``SET NX`` of the once-name wins and the others are told the job
exists. The once-name lives one day (bounded), longer than any realistic skew between
schedulers, and unlike the job id it survives the job's own retention.

Clock. A scheduler sleeps until the next tick by the server's clock (``TIME``, read before
each sleep), so schedulers on machines with skewed clocks agree. A tick that passes while no
scheduler runs is skipped, not caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any

from redkit.errors import RedkitError, translate_redis_errors
from redkit.jobs.cron import CronExpression, time_zone
from redkit.jobs.queue import _UNSET, Job, check_name

if TYPE_CHECKING:
    from redkit.client import Redkit

__all__ = ["Schedule"]

log = logging.getLogger("redkit.jobs")


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
