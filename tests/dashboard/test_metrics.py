"""/metrics parsed by prometheus-client's own parser; the figures move when the primitives
are used."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Mount

import redkit
from dashboard.helpers import serve
from redkit.dashboard.metrics import metrics_app


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
