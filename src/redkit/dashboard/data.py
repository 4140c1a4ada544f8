"""What the dashboard reads. Each function is one round trip per object it reads (queue,
lock, cache), run concurrently so that the client's automatic pipelining sends them together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from redkit.dashboard.security import MASK, Masker
from redkit.errors import InvalidInput, translate_redis_errors
from redkit.jobs.queue import Job, list_queues
from redkit.jobs.states import JobState
from redkit.locks.admin import list_locks
from redkit.scripts import ScriptSet

if TYPE_CHECKING:
    from redkit.cache.core import Cache
    from redkit.client import Redkit
    from redkit.ratelimit.limiter import RateLimiter, RateLimits

SCRIPTS = ScriptSet(__package__)

MAX_QUEUES = 200
"""Queues shown (a namespace with more lists the first ones by name)."""
PAGE_SIZE = 25
TOP_LIMITED_SHOWN = 10
"""Keys shown per rate limiter in its "most limited" list."""
TAGS_SHOWN = 20
"""Tags shown per cache in its "entries per tag" list."""
SESSION_WINDOWS = (5, 60)
"""Minutes over which the Sessions view counts the active sessions."""
MAX_PAGE = 10_000
LIST_STATES = ("waiting", "delayed", "active", "completed", "failed", "cancelled")
"""The state sets that can be listed (retrying jobs are in delayed)."""
_BAND = 1_000_000_000_000  # the waiting score's step between two priorities (states.py)


@dataclass
class QueueSummary:
    name: str
    counts: dict[str, int]
    paused: bool
    oldest_wait: float | None
    """Seconds the longest-waiting job has waited (None: nothing waits)."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def queue_names(rk: Redkit) -> list[str]:
    return (await list_queues(rk))[:MAX_QUEUES]


async def queue_summary(rk: Redkit, name: str) -> QueueSummary:
    queue = rk.queue(name)
    stats, oldest = await asyncio.gather(
        queue.stats(),
        rk.run(SCRIPTS["oldest_waiting"], [queue.waiting_key], [20, queue.job_prefix, _BAND]),
    )
    counts = {k: int(v) for k, v in stats.as_dict().items() if k not in ("queue", "paused")}
    due, now = int(oldest[0]), int(oldest[1])
    wait = max(0.0, (now - due) / 1000) if due >= 0 and counts.get("waiting") else None
    return QueueSummary(name, counts, stats.paused, wait)


async def all_queues(rk: Redkit) -> list[QueueSummary]:
    names = await queue_names(rk)
    return list(await asyncio.gather(*(queue_summary(rk, n) for n in names)))


def check_state(state: str) -> str:
    if state not in LIST_STATES:
        raise InvalidInput(f"unknown state {state!r}; one of {', '.join(LIST_STATES)}")
    return state


def check_page(value: object) -> int:
    try:
        page = int(str(value))
    except ValueError:
        raise InvalidInput(f"page must be a whole number, got {value!r}") from None
    if not 1 <= page <= MAX_PAGE:
        raise InvalidInput(f"page must be in 1..{MAX_PAGE}, got {page}")
    return page


async def job_page(rk: Redkit, name: str, state: str, page: int) -> tuple[list[Job], int]:
    """A page of a state set (newest first, except waiting, which is in run order) and the
    set's size; the set is indexed, so this is one ZRANGE, never a scan."""
    queue = rk.queue(name)
    newest = state != "waiting"
    jobs, stats = await asyncio.gather(
        queue.jobs(JobState(state), (page - 1) * PAGE_SIZE, PAGE_SIZE, newest_first=newest),
        queue.stats(),
    )
    return jobs, int(stats.as_dict().get(state, 0))


async def job_events(rk: Redkit, name: str, job_id: str, count: int = 2000) -> list[dict[str, str]]:
    """The job's entries among the queue's latest lifecycle events (bounded read)."""
    events = await rk.queue(name).events(count)
    return [e for e in events if e.get("job") == job_id]


async def locks(rk: Redkit) -> list[dict[str, Any]]:
    return [
        {
            "kind": info.kind,
            "name": info.name,
            "holders": info.holders,
            "ttl": info.ttl,
            "fencing_token": info.fencing_token,
            "waiters": info.waiters,
            "mode": info.mode,
            "holder": info.holder,
            "held_for": info.held_for,
        }
        for info in await list_locks(rk)
    ]


def audit_key(rk: Redkit) -> str:
    return rk.keys.key("dashboard", "audit")


async def audit_entries(rk: Redkit, count: int = 50) -> list[dict[str, str]]:
    with translate_redis_errors("read the dashboard audit log"):
        raw = await rk.redis.xrevrange(audit_key(rk), count=count)
    out = []
    for entry_id, fields in raw or []:
        row = {"id": _text(entry_id)}
        row.update({_text(k): _text(v) for k, v in (fields or {}).items()})
        row["time"] = str(int(row["id"].split("-")[0]) / 1000)
        out.append(row)
    return out


async def cache_stats(caches: Mapping[str, Cache]) -> dict[str, dict[str, Any]]:
    names = list(caches)
    stats = await asyncio.gather(*(caches[n].stats() for n in names))
    return {n: {**s.as_dict(), "ratio": s.hit_ratio} for n, s in zip(names, stats, strict=True)}


async def top_limited(
    limiters: Mapping[str, RateLimiter | RateLimits],
) -> dict[str, dict[str, Any]]:
    """Each limiter's most limited keys of the last minutes (one pipeline per limiter, sent
    together): ``{"keys": [(key, denials), ...]}``. Other processes' denials arrive within
    their flush interval (``redkit.ratelimit.limiter.TOP_FLUSH_INTERVAL``)."""
    names = list(limiters)
    tops = await asyncio.gather(*(limiters[n].top_limited(TOP_LIMITED_SHOWN) for n in names))
    return {n: {"keys": top} for n, top in zip(names, tops, strict=True)}


async def tag_counts(caches: Mapping[str, Cache]) -> dict[str, list[tuple[str, int]]]:
    """Each cache's live entries per tag, most first (at most TAGS_SHOWN tags; one script
    per shard, sent together)."""
    names = list(caches)
    counts = await asyncio.gather(*(caches[n].tag_counts(TAGS_SHOWN) for n in names))
    return dict(zip(names, counts, strict=True))


def rate_limit_decisions() -> dict[str, dict[str, float]]:
    """Decisions by limiter and result counted in this process (prometheus counters: no
    Redis round trip)."""
    from redkit.ratelimit.metrics import DECISIONS

    out: dict[str, dict[str, float]] = {}
    for metric in DECISIONS.collect():
        for sample in metric.samples:
            if not sample.name.endswith("_total"):
                continue
            limiter = sample.labels.get("limiter", "")
            out.setdefault(limiter, {})[sample.labels.get("result", "")] = sample.value
    return out


def pretty(value: Any, masker: Masker) -> str:
    """JSON for a human, with sensitive fields masked."""
    try:
        return orjson.dumps(masker(value), option=orjson.OPT_INDENT_2).decode()
    except TypeError:
        return MASK
