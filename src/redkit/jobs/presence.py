"""Workers alive: each worker beats into one hash of its namespace, the dashboard reads it.

``<ns>:jobs:workers`` (hash) worker id -> last beat and a small JSON description (queues,
concurrency, running jobs, totals, host, pid). Bounded: a worker's entry is dropped when it
leaves or when it has not beaten for its alive window; the hash expires after the last one.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from redkit.errors import translate_redis_errors
from redkit.jobs.queue import SCRIPTS

if TYPE_CHECKING:
    from redkit.client import Redkit

__all__ = ["WorkerInfo", "announce", "list_workers"]


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One live worker as it described itself at its last heartbeat."""

    id: str
    last_seen: float
    """Server time of the last beat (seconds since the epoch)."""
    queues: list[str]
    concurrency: int
    running: int
    completed: int
    failed: int
    host: str
    pid: int
    supervisor: int = 0
    """The pid of the ``redkit worker --processes N`` supervisor (0: none)."""
    index: int = 0
    """This child's index under its supervisor."""
    restarts: int = 0
    """How many times the supervisor restarted this child."""
    started: float = 0.0
    """When this worker started (seconds since the epoch, its own clock)."""


def workers_key(rk: Redkit) -> str:
    return rk.keys.key("jobs", "workers")


async def announce(rk: Redkit, worker_id: str, info: dict[str, Any] | None, alive_ms: int) -> int:
    """Record a beat of ``worker_id`` (``info=None``: it leaves); one round trip."""
    description = (
        b""
        if info is None
        # The alive window travels with the beat, so a reader can tell a dead worker's line
        # (SIGKILL: no goodbye) from a live one before any other worker's beat drops it.
        else orjson.dumps({**info, "host": _HOST, "pid": _PID, "alive_ms": alive_ms})
    )
    result = await rk.run(
        SCRIPTS["presence"], [workers_key(rk)], [worker_id, description, alive_ms]
    )
    return int(result)


async def list_workers(rk: Redkit) -> list[WorkerInfo]:
    """Workers that beat within their alive window, by host and pid (two round trips: the
    hash, and the server's clock to judge each line by its own alive window)."""
    with translate_redis_errors("list workers"):
        raw = await rk.redis.hgetall(workers_key(rk))
        seconds, micros = await rk.redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    out = []
    for key, value in raw.items():
        text = value.decode() if isinstance(value, bytes) else str(value)
        seen, _, body = text.partition("|")
        try:
            info = orjson.loads(body)
            alive_ms = info.get("alive_ms")
            if alive_ms is not None and int(seen) < now_ms - int(alive_ms):
                continue  # it stopped beating: the next beat of any worker drops the line
            out.append(
                WorkerInfo(
                    id=key.decode() if isinstance(key, bytes) else str(key),
                    last_seen=int(seen) / 1000,
                    queues=[str(q) for q in info.get("queues", [])],
                    concurrency=int(info.get("concurrency", 0)),
                    running=int(info.get("running", 0)),
                    completed=int(info.get("completed", 0)),
                    failed=int(info.get("failed", 0)),
                    host=str(info.get("host", "")),
                    pid=int(info.get("pid", 0)),
                    supervisor=int(info.get("supervisor", 0)),
                    index=int(info.get("index", 0)),
                    restarts=int(info.get("restarts", 0)),
                    started=float(info.get("started", 0)),
                )
            )
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
            continue  # not written by announce(): ignore it rather than fail the listing
    return sorted(out, key=lambda w: (w.host, w.pid, w.id))


_HOST = socket.gethostname()[:100]
_PID = os.getpid()
