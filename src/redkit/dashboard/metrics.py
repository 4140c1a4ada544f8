"""``/metrics`` for Prometheus: the process's counters plus the namespace's state.

::

    from redkit.dashboard.metrics import metrics_app
    app.mount("/metrics", metrics_app(rk))

Counters are kept in-process, on the hot path, without a Redis round trip (rate-limit
decisions, job attempts and their durations: prometheus-client's default registry). The
gauges of the shared state are read once per scrape, one script per queue sent together:

- ``redkit_queue_jobs{queue, state}``: jobs by state (waiting, delayed, active, completed,
  failed); ``redkit_queue_oldest_waiting_seconds{queue}``; ``redkit_queue_paused{queue}``
- ``redkit_workers_alive``; ``redkit_locks_held{kind}``
- ``redkit_cache_requests_total{cache, result}`` (hit, miss, stale; every process's, as
  the cache counts them in Redis) for the caches passed in ``caches=``

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` units). The endpoint
has no auth of its own: mount it where only the scraper reaches, or wrap it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import redkit.jobs.metrics  # noqa: F401 (registers the job counters before the first scrape)
from redkit.dashboard import data
from redkit.errors import RedkitError
from redkit.jobs.presence import list_workers

if TYPE_CHECKING:
    from redkit.cache.core import Cache
    from redkit.client import Redkit

__all__ = ["metrics_app", "state_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Snapshot(Collector):
    """Metric families read before the scrape (collectors are synchronous)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


async def state_metrics(rk: Redkit, caches: Mapping[str, Cache] | None = None) -> list[Metric]:
    """The namespace's state as metric families: one round trip per queue/cache, together."""
    queues = await data.all_queues(rk)
    jobs = GaugeMetricFamily(
        "redkit_queue_jobs", "Jobs by queue and state.", labels=["queue", "state"]
    )
    oldest = GaugeMetricFamily(
        "redkit_queue_oldest_waiting_seconds",
        "How long the longest-waiting job of the queue has waited (0: none waits).",
        labels=["queue"],
    )
    paused = GaugeMetricFamily("redkit_queue_paused", "1 if the queue is paused.", labels=["queue"])
    for q in queues:
        for state, count in q.counts.items():
            jobs.add_metric([q.name, state], count)
        oldest.add_metric([q.name], q.oldest_wait or 0.0)
        paused.add_metric([q.name], int(q.paused))
    alive = GaugeMetricFamily("redkit_workers_alive", "Workers that beat within their lease.")
    alive.add_metric([], len(await list_workers(rk)))
    held = GaugeMetricFamily("redkit_locks_held", "Locks held now, by kind.", labels=["kind"])
    kinds: dict[str, int] = {"lock": 0, "rwlock": 0, "semaphore": 0}
    for lock in await data.locks(rk):
        kinds[str(lock["kind"])] += 1
    for kind, n in kinds.items():
        held.add_metric([kind], n)
    out: list[Metric] = [jobs, oldest, paused, alive, held]
    if caches:
        requests = CounterMetricFamily(
            "redkit_cache_requests",
            "Cache lookups by cache and result (every process's).",
            labels=["cache", "result"],
        )
        for name, stats in (await data.cache_stats(caches)).items():
            for result, field in (("hit", "hits"), ("miss", "misses"), ("stale", "stale")):
                requests.add_metric([name, result], float(stats[field]))
        out.append(requests)
    return out


def metrics_app(rk: Redkit, *, caches: Mapping[str, Cache] | None = None) -> Starlette:
    """An ASGI app answering ``GET /`` with the Prometheus text format (mount it)."""

    async def endpoint(request: Request) -> Response:
        try:
            families = await state_metrics(rk, caches)
        except RedkitError as exc:
            return JSONResponse({"error": f"Redis is not answering: {exc}"}, 503)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot(families))
        body = generate_latest(REGISTRY) + generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE)

    app = Starlette(routes=[Route("/", endpoint)])
    app.state.redkit = rk
    return app
