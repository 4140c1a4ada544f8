"""Dashboard pages under load: 100,000 jobs waiting and 1,000 failed; server time per page.

``python -m bench.dashboard_pages [--redis-url URL] [--jobs N] [--failed N]`` prints one
JSON line per page: {"section": "dashboard", "name", "value" (median ms), "unit", "runs"}.
The requests go straight to the ASGI app (httpx's ASGI transport), so the figure is the
server's time: Redis reads, rendering, no network. Not part of ``python -m bench``'s
comparisons (no peer has these pages).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

import httpx

import redkit
from redkit.dashboard import Role, dashboard_app

PAGES = (
    "/",
    "/jobs",
    "/jobs/bench?state=waiting",
    "/jobs/bench?state=waiting&page=2000",
    "/jobs/bench?state=failed",
    "/jobs/search?q=order+999",
    "/locks",
    "/audit",
)


async def _boom(payload: Any) -> None:
    raise RuntimeError(f"card declined for order {payload}")


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_pages")
    parser.add_argument("--redis-url")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--failed", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    async with redkit.connect(args.redis_url, namespace="bench-dash") as rk:
        async for key in rk.redis.scan_iter(match="bench-dash:*", count=1000):
            await rk.redis.unlink(key)
        failing = rk.queue("bench-fail")
        await failing.enqueue_many(
            {"function": "boom", "payload": n, "max_attempts": 1} for n in range(args.failed)
        )
        worker = rk.worker([failing], {"boom": _boom}, concurrency=50, handle_signals=False)
        task = asyncio.create_task(worker.run())
        while (await failing.stats()).failed < args.failed:  # noqa: ASYNC110 (set-up, not measured)
            await asyncio.sleep(0.1)
        worker.stop()
        await task
        # Two queues: the failed list and the search read the failing one, the waiting lists
        # the big one; the overview and the jobs page read both.
        queue = rk.queue("bench")
        await queue.enqueue_many(
            {"function": "noop", "payload": {"n": n}} for n in range(args.jobs)
        )
        app = dashboard_app(rk, auth=lambda request: Role.ADMIN)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
            for path in (*PAGES, "/jobs/bench-fail?state=failed"):
                times = []
                for _ in range(args.runs):
                    began = time.perf_counter()
                    response = await client.get(path)
                    times.append((time.perf_counter() - began) * 1000)
                    assert response.status_code == 200, (path, response.status_code)
                line = {
                    "section": "dashboard",
                    "name": f"GET {path}",
                    "value": round(statistics.median(times), 2),
                    "unit": "ms",
                    "runs": args.runs,
                }
                sys.stdout.write(json.dumps(line) + "\n")
        async for key in rk.redis.scan_iter(match="bench-dash:*", count=1000):
            await rk.redis.unlink(key)


if __name__ == "__main__":
    asyncio.run(main())
