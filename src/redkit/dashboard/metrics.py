"""``/metrics`` for Prometheus: the process's counters plus the namespace's state.

::

    from redkit.dashboard.metrics import metrics_app
    app.mount("/metrics", metrics_app(rk))

Counters are kept in-process, on the hot path, without a Redis round trip (rate-limit
decisions, job attempts and their durations, the HTTP middlewares' decisions
``redkit_http_cache_responses_total{cache, result}`` and
``redkit_http_ratelimit_requests_total{result}``, sessions created and revoked:
prometheus-client's default registry). Figures this process's primitives count as plain
integers are read at the scrape:

- ``redkit_pipeline_round_trips_total``, ``redkit_pipeline_batches_total`` and
  ``redkit_pipeline_batched_calls_total`` (automatic pipelining: exchanges with the server,
  pipelines of more than one call, and the calls they carried; the mean batch size is
  ``rate(batched_calls) / rate(batches)``)
- ``redkit_notify_published_total``, ``redkit_notify_delivered_total`` (to a local
  subscription), ``redkit_notify_dropped_total`` (lost by a slow subscription),
  ``redkit_notify_subscribers`` (this process's open subscriptions)

The gauges of the shared state are read once per scrape, one script per queue sent together:

- ``redkit_queue_jobs{queue, state}``: jobs by state (waiting, delayed, active, completed,
  failed); ``redkit_queue_oldest_waiting_seconds{queue}``; ``redkit_queue_paused{queue}``
- ``redkit_workers_alive``; ``redkit_locks_held{kind}`` (the namespace walked with
  ``SCAN``, as ``redkit locks list`` does)
- ``redkit_cache_requests_total{cache, result}`` (hit, miss, stale; every process's, as
  the cache counts them in Redis) for the caches passed in ``caches=``
- ``redkit_sessions_active{store}``: distinct sessions used in the last
  :data:`SESSIONS_ACTIVE_MINUTES` minutes by every process (a HyperLogLog, ~0.8% error; see
  :meth:`redkit.sessions.SessionStore.activity`) for the store passed in ``sessions=``

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` units). Label values
are names from the configuration (queues, caches, limiters, functions) or fixed sets, never
what a request carried. The endpoint has no auth of its own: mount it where only the scraper
reaches, or wrap it.
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

# Imported for their counters, registered before the first scrape.
import redkit.cache.metrics
import redkit.jobs.metrics
import redkit.sessions.metrics  # noqa: F401
from redkit.dashboard import data
from redkit.errors import RedkitError
from redkit.jobs.presence import list_workers
from redkit.notify.bus import COUNTS as NOTIFY_COUNTS
from redkit.notify.hub import subscriptions_of

if TYPE_CHECKING:
    from redkit.cache.core import Cache
    from redkit.client import Redkit
    from redkit.sessions.store import SessionStore

__all__ = ["metrics_app", "process_metrics", "state_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SESSIONS_ACTIVE_MINUTES = 5
"""The window of ``redkit_sessions_active``."""


class _Snapshot(Collector):
    """Metric families read before the scrape (collectors are synchronous)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


async def state_metrics(
    rk: Redkit,
    caches: Mapping[str, Cache] | None = None,
    sessions: SessionStore | None = None,
) -> list[Metric]:
    """The namespace's state as metric families: one round trip per queue/cache/session
    store, together."""
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
    if sessions is not None:
        active = GaugeMetricFamily(
            "redkit_sessions_active",
            f"Distinct sessions used in the last {SESSIONS_ACTIVE_MINUTES} minutes, every "
            "process's (HyperLogLog: ~0.8% error).",
            labels=["store"],
        )
        activity = await sessions.activity(SESSIONS_ACTIVE_MINUTES)
        active.add_metric([sessions.name], activity.active)
        out.append(active)
    return out


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, text)
    family.add_metric([], value)
    return family


def process_metrics(rk: Redkit) -> list[Metric]:
    """What this process counts as plain integers (no Redis read): the automatic pipeline's
    round trips and batches, and the notifications published, delivered and dropped."""
    out: list[Metric] = []
    pipeline = rk.pipeline
    if pipeline is not None:
        out += [
            _counter(
                "redkit_pipeline_round_trips",
                "Exchanges with the server through the automatic pipeline (a lone call or a "
                "batch is one).",
                pipeline.round_trips,
            ),
            _counter(
                "redkit_pipeline_batches",
                "Pipelines of more than one call written by the automatic pipeline.",
                pipeline.batches,
            ),
            _counter(
                "redkit_pipeline_batched_calls",
                "Calls that travelled in those batches (mean batch size: their rate over "
                "the batches' rate).",
                pipeline.batched_calls,
            ),
        ]
    subscribers = subscriptions_of(rk)
    out += [
        _counter(
            "redkit_notify_published",
            "Notifications published by this process.",
            NOTIFY_COUNTS.published,
        ),
        _counter(
            "redkit_notify_delivered",
            "Notifications handed to a subscription of this process (one per subscription).",
            NOTIFY_COUNTS.delivered,
        ),
        _counter(
            "redkit_notify_dropped",
            "Notifications a slow subscription of this process lost.",
            NOTIFY_COUNTS.dropped,
        ),
    ]
    gauge = GaugeMetricFamily("redkit_notify_subscribers", "Open subscriptions of this process.")
    gauge.add_metric([], subscribers)
    out.append(gauge)
    return out


def metrics_app(
    rk: Redkit,
    *,
    caches: Mapping[str, Cache] | None = None,
    sessions: SessionStore | None = None,
) -> Starlette:
    """An ASGI app answering ``GET /`` with the Prometheus text format (mount it).

    ``caches``: the caches whose request counts to show; ``sessions``: the session store whose
    active sessions to count (``redkit_sessions_active``)."""

    async def endpoint(request: Request) -> Response:
        try:
            families = await state_metrics(rk, caches, sessions)
        except RedkitError as exc:
            return JSONResponse({"error": f"Redis is not answering: {exc}"}, 503)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot([*families, *process_metrics(rk)]))
        body = generate_latest(REGISTRY) + generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE)

    app = Starlette(routes=[Route("/", endpoint)])
    app.state.redkit = rk
    return app
