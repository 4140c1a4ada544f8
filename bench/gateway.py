"""The gateway: a cached ``GET /api/projects`` through session check + tier limit + cache hit.

Each stack (bench/gateway_apps.py) is a FastAPI app under real uvicorn (h11, no access log)
in a process of its own, on the bench's Valkey; the load comes from another process
(bench/gateway_load.py): 50 keep-alive connections in a closed loop, a warm-up, then a fixed
window. Every request carries the session cookie of a signed-in user (10 users, connection
``i`` is user ``i % 10``), and every limit is set high enough that all requests are allowed.

- **redkit**: redkit's ``SessionMiddleware`` (signed cookie), ``RateLimitMiddleware`` with a
  ``TierPolicy`` (the session's tier, per user, headers on) and ``CacheMiddleware`` with a
  per-user rule, wired as the platform's gateway wires them: per hit, three round trips
  (session read, limit check, cache lookup).
- **redkit.web.RedkitWeb**: the same stack installed by ``RedkitWeb``.
- **peer**: FastAPI + starsessions (Redis store, rolling lifetime: it writes the session back
  and sets the cookie on every response, which is how it renews one) + slowapi (Redis storage
  through ``limits``, the sliding window counter, headers on; its storage is synchronous, so
  each check blocks the event loop, and the headers cost it a second call) + fastapi-cache2
  (Redis backend, per-user key; the hit is decoded and re-serialised by FastAPI).
- **ceiling: the endpoint alone**: the same route with none of the three middlewares (the
  endpoint runs each time, and FastAPI serialises its page).

Figures, from the same runs (one load run per side and run gives them all): requests/s, p50
and p99 latency, and the server process's CPU time per request (user + system, from
``/proc``, warm-up included). On a shared machine requests/s and latency move with the
others' load by 2x and more between runs; CPU per request moves far less (10-20%): it is
the figure to trust when they disagree. The gateway's own cost is the stack's CPU per request
minus the endpoint's alone (a hit skips the endpoint, so it is the three layers and their
round trips less the routing and serialisation the hit saves; it can come out negative).

Checked on each run: every measured response was a 200 with the stack's marks (redkit
``X-Cache: HIT`` and the rate-limit headers; the peer ``X-FastAPI-Cache: HIT`` and
``X-RateLimit-Remaining``) and the page of the connection's own user; the cached stacks ran
the endpoint only to fill the cache (at most once per user), the bare one on every request.

The HTTP servers and the load generator inherit the bench's CPU placement (with the default
pinning, they share the CPUs that the embedded server does not use). Each run prints its
figures, the load generator's own CPU per request and the load average.
``BENCH_GW_PROFILE=1`` runs each server under cProfile (CPU time); the stats are written
beside its log (the folder is printed) when the bench ends.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import json
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.harness import Comparison, Context, Runner, comparison, verify
from redkit.embedded import find_free_port

ROOT = Path(__file__).resolve().parents[1]
PATH = "/api/projects"
USERS = 10
CONNECTIONS = 50
PEER = "FastAPI + starsessions + slowapi + fastapi-cache2"
REDKITWEB = "redkit.web.RedkitWeb (same stack)"
DIRECT = "ceiling: the endpoint alone, no middleware"
HAVE_PEERS = all(importlib.util.find_spec(m) for m in ("starsessions", "slowapi", "fastapi_cache"))
STARTUP = 60.0  # seconds a server may take to answer (imports on a loaded machine)

console = Console(stderr=True)


@dataclass
class _Stack:
    """One app's server process, its signed-in users, and what its responses must show."""

    name: str
    expect: list[str]
    cached: bool
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    cookies: list[str] = field(default_factory=list)


STACKS: dict[str, _Stack] = {
    "redkit": _Stack(
        "redkit", ["x-cache: HIT", "x-ratelimit-remaining:", "ratelimit-policy:"], True
    ),
    "redkitweb": _Stack(
        "redkitweb", ["x-cache: HIT", "x-ratelimit-remaining:", "ratelimit-policy:"], True
    ),
    "peer": _Stack("peer", ["x-fastapi-cache: HIT", "x-ratelimit-remaining:"], True),
    "direct": _Stack("direct", [], False),
}
_LOGS_DIR: list[Path] = []


def _logs() -> Path:
    """The servers' logs (and profiles), in a folder made on first use and left for reading."""
    if not _LOGS_DIR:
        _LOGS_DIR.append(Path(tempfile.mkdtemp(prefix="redkit-bench-gateway-")))
        console.print(f"  gateway servers' logs: {_LOGS_DIR[0]}")
    return _LOGS_DIR[0]


def _stop_all() -> None:
    for stack in STACKS.values():
        proc, stack.proc = stack.proc, None
        if proc is None or proc.poll() is not None:
            continue
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


atexit.register(_stop_all)


async def _http(port: int, method: str, target: str, cookie: str = "") -> tuple[bytes, bytes]:
    """One request on a fresh connection: (head, body). Setup only, never measured."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        extra = f"Cookie: {cookie}\r\n" if cookie else ""
        writer.write(
            f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}"
            "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.read()
        return head, body
    finally:
        writer.close()


async def _calls(stack: _Stack) -> int:
    _, body = await _http(stack.port, "GET", "/bench/calls")
    return int(json.loads(body)["calls"])


async def _started(ctx: Context, stack: _Stack) -> _Stack:
    """The stack's server, started on first use (and kept for every run and figure)."""
    if stack.proc is not None and stack.proc.poll() is None:
        return stack
    stack.port = find_free_port()
    logs = _logs()
    log = logs / f"{stack.name}.log"
    # Popen, not asyncio's: the servers outlive the event loop of one figure (atexit stops them).
    with log.open("wb") as output:
        stack.proc = subprocess.Popen(  # noqa: ASYNC220
            [
                sys.executable,
                "-m",
                "bench.gateway_apps",
                stack.name,
                "--redis-url",
                ctx.url,
                "--port",
                str(stack.port),
                "--namespace",
                f"bench-gw-{stack.name}-{secrets.token_hex(4)}",
                *(
                    ["--profile", str(logs / f"{stack.name}.prof")]
                    if os.environ.get("BENCH_GW_PROFILE")
                    else []
                ),
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP
    while True:
        verify(stack.proc.poll() is None, f"the {stack.name} server died: see {log}")
        try:
            await _calls(stack)
            break
        except (OSError, ValueError, asyncio.IncompleteReadError):
            verify(loop.time() < deadline, f"the {stack.name} server did not start: see {log}")
            await asyncio.sleep(0.1)
    stack.cookies = []
    for n in range(USERS):
        head, _ = await _http(stack.port, "POST", f"/bench/login?user=user-{n}")
        cookie = next(
            (
                line.split(b":", 1)[1].split(b";")[0].strip().decode()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"set-cookie:")
            ),
            "",
        )
        verify(head.startswith(b"HTTP/1.1 200 ") and bool(cookie), f"{stack.name}: no login")
        stack.cookies.append(cookie)
    return stack


@dataclass
class Load:
    rate: float
    p50: float
    p99: float
    cpu_us: float
    """The server process's CPU time (user + system) per request, warm-up included."""
    load_average: float


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float:
    """A process's CPU time so far (user + system, /proc/PID/stat: Linux only)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


async def _measure(ctx: Context, name: str) -> Load:
    stack = await _started(ctx, STACKS[name])
    clients = [
        {"cookie": cookie, "body": f'"owner":"user-{n}"', "expect": stack.expect}
        for n, cookie in enumerate(stack.cookies)
    ]
    # Each user's page is in the cache before the run (the peer's cache has no single-flight:
    # 50 connections missing at once would all run the endpoint).
    for cookie in stack.cookies:
        head, _ = await _http(stack.port, "GET", PATH, cookie)
        verify(head.startswith(b"HTTP/1.1 200 "), f"{name}: {head[:100]!r}")
    before = await _calls(stack)
    assert stack.proc is not None
    cpu = _cpu_seconds(stack.proc.pid)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.gateway_load",
        "--port",
        str(stack.port),
        "--path",
        PATH,
        "--connections",
        str(CONNECTIONS),
        "--warmup",
        f"{max(0.5, 2 * ctx.scale):g}",
        "--duration",
        f"{max(1.0, 5 * ctx.scale):g}",
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(json.dumps(clients).encode())
    verify(proc.returncode == 0, f"the load generator failed: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out)
    cpu = _cpu_seconds(stack.proc.pid) - cpu
    ran = await _calls(stack) - before
    verify(result["requests"] > 0, f"{name}: no request completed in the window")
    verify(result["bad"] == 0, f"{name}: {result['bad']} bad responses: {result['first_bad']}")
    if stack.cached:
        verify(ran <= USERS, f"{name}: the endpoint ran {ran} times: the cache did not hit")
    else:
        verify(ran >= result["requests"], f"{name}: the endpoint ran only {ran} times")
    cpu_us = cpu / result["total"] * 1e6
    load = Load(result["rate"], result["p50"], result["p99"], cpu_us, os.getloadavg()[0])
    console.print(
        f"  {name}: {load.rate:,.0f} req/s, p50 {load.p50:.2f} ms, p99 {load.p99:.2f} ms, "
        f"server CPU {cpu_us:,.0f} µs/request, load generator CPU "
        f"{result['client_cpu_us']:,.0f} µs/request (load average {load.load_average:.2f})"
    )
    return load


_RUNS: dict[str, list[Load]] = {}
"""Each stack's measurements, in order: one load run gives the rate and the latencies, so
the latency figures reuse the runs the rate figure made (the k-th call of a side reads the
k-th run), and measure afresh only when run alone (``--only``)."""


async def _nth(ctx: Context, name: str, k: int) -> Load:
    runs = _RUNS.setdefault(name, [])
    while len(runs) <= k:
        runs.append(await _measure(ctx, name))
    return runs[k]


def _side(name: str, pick: Callable[[Load], float]) -> Runner:
    calls = 0

    async def run(ctx: Context) -> float:
        nonlocal calls
        calls += 1
        return pick(await _nth(ctx, name, calls - 1))

    return run


def _cost(name: str) -> Runner:
    """Server CPU per request that the stack adds to the bare endpoint (run k of both)."""
    calls = 0

    async def run(ctx: Context) -> float:
        nonlocal calls
        calls += 1
        stack, bare = await _nth(ctx, name, calls - 1), await _nth(ctx, "direct", calls - 1)
        return stack.cpu_us - bare.cpu_us

    return run


FIGURE = f"cached GET {PATH}, {CONNECTIONS} connections"


def _register(
    name: str, unit: str, pick: Callable[[Load], float], *, higher_is_better: bool
) -> Comparison:
    comp = comparison("gateway", name, unit, higher_is_better=higher_is_better)(
        _side("redkit", pick)
    )
    if HAVE_PEERS:
        comp.peers[PEER] = _side("peer", pick)
    comp.peers[REDKITWEB] = _side("redkitweb", pick)
    comp.peers[DIRECT] = _side("direct", pick)
    return comp


_register(FIGURE, "requests/s", lambda m: m.rate, higher_is_better=True)
_register(f"{FIGURE}, p50 latency", "ms", lambda m: m.p50, higher_is_better=False)
_register(f"{FIGURE}, p99 latency", "ms", lambda m: m.p99, higher_is_better=False)
_register(
    f"{FIGURE}, server CPU per request", "µs/request", lambda m: m.cpu_us, higher_is_better=False
)
cost = comparison(
    "gateway",
    "the gateway's own CPU per request (stack - endpoint alone)",
    "µs/request",
    higher_is_better=False,
)(_cost("redkit"))
if HAVE_PEERS:
    cost.peers[PEER] = _cost("peer")
cost.peers[REDKITWEB] = _cost("redkitweb")
