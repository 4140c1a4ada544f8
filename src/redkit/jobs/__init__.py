"""Jobs: a queue with priorities, delays, retries and leases; a worker; cron schedules.

- :class:`Queue` (``rk.queue(name)``): ``enqueue`` / ``enqueue_many`` (one round trip per
  batch), ``get``, ``cancel``, ``retry``, ``stats``, ``jobs``, ``pause``/``resume``, ``drain``.
- :class:`Job`: what was enqueued; ``await job.result(timeout=)`` waits without polling.
- :class:`Worker` (``rk.worker(queues, functions, concurrency)``): batch claims, leases with
  heartbeats, timeouts, graceful shutdown on SIGTERM/SIGINT.
- :class:`Schedule` (``rk.schedule(cron, function, payload)``): each tick enqueued once, by
  whoever runs it (``rk.worker(..., schedules=[...])``, ``redkit worker --schedules``, or
  ``await schedule.run()``); :func:`list_schedules` lists the running ones.
- :class:`JobState` and :data:`~redkit.jobs.states.TRANSITIONS`: the states, in one place.
"""

from redkit.jobs.cron import CronExpression
from redkit.jobs.presence import WorkerInfo, list_workers
from redkit.jobs.queue import (
    Job,
    JobSpec,
    Queue,
    QueueStats,
    find_job_queues,
    list_queues,
)
from redkit.jobs.schedule import Schedule, ScheduleInfo, list_schedules
from redkit.jobs.states import PRIORITY_MAX, PRIORITY_MIN, TRANSITIONS, JobState, Transition
from redkit.jobs.worker import Worker

__all__ = [
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "TRANSITIONS",
    "CronExpression",
    "Job",
    "JobSpec",
    "JobState",
    "Queue",
    "QueueStats",
    "Schedule",
    "ScheduleInfo",
    "Transition",
    "Worker",
    "WorkerInfo",
    "find_job_queues",
    "list_queues",
    "list_schedules",
    "list_workers",
]
