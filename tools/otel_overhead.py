#!/usr/bin/env python
"""What tracing costs the client: CPU time per operation, with tracing off, on without an SDK
(the global tracer provider, a no-op until an application configures one), and on with the
SDK recording every span (exported nowhere, so only redkit's and the SDK's own cost counts).

    python tools/otel_overhead.py [--redis-url URL] [--n 20000] [--runs 3] [--modes off,...]

User CPU time (``getrusage``'s ``ru_utime``) of this process only: the server's work is not
in it, nor the kernel's socket calls (system time, the same in every mode and the noisiest
part on a loaded machine), and a busy machine disturbs it less than wall time. Each figure
is the median of ``--runs``, the modes interleaved. Sequential calls, one at a time: the path
a single request takes. First, the hook alone, without I/O: a marked method whose body
returns at once, against the same method unmarked. Without ``--redis-url`` an embedded
Valkey is started in a temporary directory; ``REDKIT_SPIN_WAIT=0`` keeps the client from
spinning while it waits for replies (the spin is CPU time too).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import secrets
import statistics
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import redkit

MODES = ("off", "no-sdk", "sdk")


def _set_mode(rk: Any, mode: str) -> None:
    if mode == "off":
        rk.tracing = None
        return
    import redkit.otel

    provider: Any = None
    if mode == "sdk":
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

        provider = TracerProvider()
        provider.add_span_processor(SpanProcessor())  # records, exports nothing
    redkit.otel.instrument(rk, tracer_provider=provider)


def _user_cpu() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


async def _cpu_per_op(n: int, op: Callable[[], Awaitable[Any]]) -> float:
    began = _user_cpu()
    for _ in range(n):
        await op()
    return (_user_cpu() - began) / n * 1e6


async def _hook_alone(rk: Any, modes: list[str], n: int) -> None:
    # Imported here: with --modes off the script also measures a checkout without the hook.
    from redkit._trace import traced

    class Bare:
        """A primitive whose operation does no I/O: what the hook itself costs."""

        def __init__(self, rk: Any) -> None:
            self.rk = rk
            self.name = "bare"

        async def plain(self, key: str) -> int:
            return len(key)

        @traced("lock.release")
        async def marked(self, key: str) -> int:
            return len(key)

    bare = Bare(rk)

    async def plain() -> None:
        await bare.plain("k")

    async def marked() -> None:
        await bare.marked("k")

    print(f"the hook alone, microseconds per call (n={n}, best of 5)")
    print(f"{'unmarked':24}{min([await _cpu_per_op(n, plain) for _ in range(5)]):10.2f}")
    for mode in modes:
        _set_mode(rk, mode)
        best = min([await _cpu_per_op(n, marked) for _ in range(5)])
        print(f"{'marked, ' + mode:24}{best:10.2f}")
    rk.tracing = None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    opts = parser.parse_args()
    modes = opts.modes.split(",")
    with tempfile.TemporaryDirectory() as data_dir:
        async with redkit.connect(
            opts.redis_url, "otelbench" + secrets.token_hex(3), data_dir=data_dir
        ) as rk:
            limiter = rk.rate_limiter(10**9, 3600)
            cache = rk.cache()
            await cache.set("hot", {"v": 1})
            store = rk.sessions()
            session = await store.create("u", {"a": 1})

            async def check() -> None:
                await limiter.hit("k")

            async def hit() -> None:
                await cache.get("hot")

            async def lock_pair() -> None:
                lock = rk.lock("l", ttl=10, auto_renew=False)
                await lock.acquire()
                await lock.release()

            async def session_get() -> None:
                await store.get(session.id)

            ops = {
                "rate-limit check": check,
                "cache hit": hit,
                "lock acquire+release": lock_pair,
                "session get": session_get,
            }
            if modes != ["off"]:
                await _hook_alone(rk, modes, 20 * opts.n)
            print(f"user CPU per operation, microseconds (median of {opts.runs}, n={opts.n})")
            print(f"{'operation':24}" + "".join(f"{m:>10}" for m in modes))
            for name, op in ops.items():
                figures: dict[str, list[float]] = {m: [] for m in modes}
                for run in range(opts.runs):
                    for mode in modes if run % 2 == 0 else reversed(modes):
                        _set_mode(rk, mode)
                        await _cpu_per_op(min(opts.n, 500), op)  # warm up
                        figures[mode].append(await _cpu_per_op(opts.n, op))
                rk.tracing = None
                row = "".join(f"{statistics.median(figures[m]):10.1f}" for m in modes)
                print(f"{name:24}{row}", flush=True)
            async for key in rk.redis.scan_iter(match=rk.keys.pattern, count=1000):
                await rk.redis.unlink(key)


if __name__ == "__main__":
    asyncio.run(main())
