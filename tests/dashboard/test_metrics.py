"""/metrics parsed by prometheus-client's own parser; the figures move when the primitives
are used."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import redkit
from dashboard.helpers import serve
from redkit.cache.middleware import CacheMiddleware, CacheRule
from redkit.dashboard.metrics import metrics_app
from redkit.ratelimit.middleware import RateLimitMiddleware
from redkit.ratelimit.policy import TierPolicy


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(timeout=10) as c:
        response = await c.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_follow_the_queues_workers_locks_cache_and_rate_limits(
    rk: redkit.Redkit,
) -> None:
    cache = rk.cache()
    q = rk.queue("metered")
    limiter = rk.rate_limiter(limit=1, window=60, name="metrics-test")

    async def work(payload: Any) -> int:
        return 1

    app = Starlette(routes=[Mount("/metrics", metrics_app(rk, caches={"pages": cache}))])
    async with serve(app) as base:
        url = base.removesuffix("/redkit") + "/metrics/"
        await q.enqueue("work", delay=600)
        await q.enqueue("work")
        await q.enqueue("work")
        before = await scrape(url)
        assert before[("redkit_queue_jobs", (("queue", "metered"), ("state", "waiting")))] == 2
        assert before[("redkit_queue_jobs", (("queue", "metered"), ("state", "delayed")))] == 1
        assert before[("redkit_queue_oldest_waiting_seconds", (("queue", "metered"),))] >= 0
        assert before[("redkit_locks_held", (("kind", "lock"),))] == 0

        processed = ("metered", "work", "completed")
        key = (
            "redkit_jobs_processed_total",
            tuple(sorted(zip(("queue", "function", "outcome"), processed, strict=True))),
        )
        worker = rk.worker([q], {"work": work}, handle_signals=False)
        task = asyncio.create_task(worker.run())
        try:
            for _ in range(500):
                if (await q.stats()).completed == 2:
                    break
                await asyncio.sleep(0.02)
            async with rk.lock("metrics:held", ttl=30):
                await cache.set("k", 1)
                await cache.get("k")
                await cache.get("missing")
                await limiter.hit("ip:1")
                await limiter.hit("ip:1")
                after = await scrape(url)
        finally:
            worker.stop()
            await asyncio.wait_for(task, 10)
        assert after[key] - before.get(key, 0) == 2
        assert after[("redkit_queue_jobs", (("queue", "metered"), ("state", "completed")))] == 2
        assert after[("redkit_workers_alive", ())] >= 1
        assert after[("redkit_locks_held", (("kind", "lock"),))] == 1
        assert after[("redkit_cache_requests_total", (("cache", "pages"), ("result", "hit")))] == 1
        assert after[("redkit_cache_requests_total", (("cache", "pages"), ("result", "miss")))] == 1
        limited = (
            "redkit_ratelimit_decisions_total",
            (("limiter", "metrics-test"), ("result", "limited")),
        )
        assert after[limited] - before.get(limited, 0) == 1
        durations = (
            "redkit_job_duration_seconds_count",
            (("function", "work"), ("queue", "metered")),
        )
        assert after[durations] - before.get(durations, 0) == 2


def delta(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_metrics_count_the_middlewares_sessions_notifications_and_pipeline(
    rk: redkit.Redkit,
) -> None:
    cache = rk.cache(name="metered-http")

    async def page(request: Request) -> PlainTextResponse:
        return PlainTextResponse("page")

    site: Any = Starlette(routes=[Route("/page", page), Route("/open", page)])
    site.add_middleware(CacheMiddleware, cache=cache, rules=[CacheRule("/page", ttl=60)])
    tiers = {"anonymous": [(3, 60)]}
    site.add_middleware(RateLimitMiddleware, policy=TierPolicy(rk, tiers=tiers))
    store = rk.sessions(idle_ttl=600, absolute_ttl=3600)
    metrics = Starlette(routes=[Mount("/metrics", metrics_app(rk, sessions=store))])
    bus = rk.notifications()
    async with serve(metrics) as base, serve(site) as site_url:
        url = base.removesuffix("/redkit") + "/metrics/"
        before = await scrape(url)
        async with (
            httpx.AsyncClient(base_url=site_url.removesuffix("/redkit")) as c,
            bus.subscribe("metered:events") as sub,
        ):
            statuses = [
                (await c.get(path)).status_code for path in ("/page", "/page", "/open", "/page")
            ]
            assert statuses == [200, 200, 200, 429]
            await bus.publish("metered:events", {"n": 1})
            assert await sub.get(timeout=5) is not None
            session = await store.create("u1", {})
            await store.create("u1", {})
            await store.revoke(session.id)
            assert await store.revoke_all("u1") == 1
            # Concurrent calls share the automatic pipeline's round trips.
            await asyncio.gather(*(rk.rate_limiter(100, 60).peek(f"k{i}") for i in range(20)))
            after = await scrape(url)
    http_cache = "redkit_http_cache_responses_total"
    assert delta(before, after, http_cache, cache="metered-http", result="miss") == 1
    assert delta(before, after, http_cache, cache="metered-http", result="hit") == 1
    http_limits = "redkit_http_ratelimit_requests_total"
    assert delta(before, after, http_limits, result="allowed") == 3
    assert delta(before, after, http_limits, result="limited") == 1
    assert delta(before, after, "redkit_sessions_created_total") == 2
    assert delta(before, after, "redkit_sessions_revoked_total") == 2
    active = ("redkit_sessions_active", (("store", "default"),))
    assert (before[active], after[active]) == (0, 2)  # both sessions were active, then ended
    assert delta(before, after, "redkit_notify_published_total") == 1
    assert delta(before, after, "redkit_notify_delivered_total") >= 1
    assert after[("redkit_notify_subscribers", ())] >= 1
    if rk.pipeline is not None:
        assert delta(before, after, "redkit_pipeline_round_trips_total") > 0
        assert delta(before, after, "redkit_pipeline_batches_total") >= 1
        assert delta(before, after, "redkit_pipeline_batched_calls_total") >= 2
    # No label value comes from a request (its address is the rate-limit key, its path the
    # cache's): only names from the configuration and fixed sets.
    values = {value for _, labels in after for _, value in labels}
    assert not {v for v in values if "127.0.0.1" in v or "/page" in v or "/open" in v}
