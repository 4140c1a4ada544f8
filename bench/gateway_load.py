"""The load generator of bench/gateway.py, run in a process of its own.

``python -m bench.gateway_load --port PORT --path PATH --connections N --warmup S --duration S``
reads a JSON list of clients on stdin, ``[{"cookie": "...", "body": "...", "expect": [...]}]``
(connection ``i`` is client ``i % len(clients)``), and prints one JSON line: requests/s over
the measured window, p50/p99/p99.9 latency (ms) of the requests it saw, how many responses it
read in all (warm-up included), its own CPU time per response, and the measured responses
that were not what the client expects (``bad``, with the first one's head).

Closed loop at a fixed concurrency: each of N keep-alive HTTP/1.1 connections sends a request,
reads the whole response, and sends the next. The client is a few lines over asyncio streams,
not httpx: on a 2-core machine the generator shares the CPUs with the server, and an HTTP
client that costs as much per request as the server would halve every figure alike and hide
the differences. Each response is checked: status 200, its ``Content-Length`` body read in
full, each expected header line present, and the body holding the client's marker (for the
per-user cache: each user gets its own page).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

MAX_HEAD = 64 * 1024


@dataclass
class Client:
    cookie: str
    body: bytes
    expect: list[bytes]


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    total: int = 0
    """Every response, the warm-up's included (the server's CPU time is shared by them all)."""
    bad: int = 0
    first_bad: str = ""


def _request(host: str, port: int, path: str, cookie: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: application/json"]
    if cookie:
        lines.append(f"Cookie: {cookie}")
    lines.append("User-Agent: bench-gateway")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    raise ValueError("a response without Content-Length")


async def _connection(
    host: str,
    port: int,
    request: bytes,
    client: Client,
    measure_from: float,
    until: float,
    tally: Tally,
) -> None:
    reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEAD)
    clock = time.perf_counter
    try:
        while True:
            began = clock()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.readexactly(_content_length(head))
            done = clock()
            tally.total += 1
            lower = head.lower()
            good = (
                head.startswith(b"HTTP/1.1 200 ")
                and all(e in lower for e in client.expect)
                and client.body in body
            )
            if began >= measure_from and done <= until:
                tally.latencies.append(done - began)
                if not good:
                    tally.bad += 1
                    tally.first_bad = tally.first_bad or (head + body[:200]).decode("latin-1")
            if done >= until:
                return
    finally:
        writer.close()


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


async def run(
    host: str,
    port: int,
    path: str,
    clients: list[Client],
    connections: int,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    cpu = time.process_time()
    now = time.perf_counter()
    measure_from, until = now + warmup, now + warmup + duration
    tally = Tally()
    await asyncio.gather(
        *(
            _connection(
                host,
                port,
                _request(host, port, path, clients[i % len(clients)].cookie),
                clients[i % len(clients)],
                measure_from,
                until,
                tally,
            )
            for i in range(connections)
        )
    )
    cpu = time.process_time() - cpu
    ordered = sorted(tally.latencies)
    return {
        "requests": len(ordered),
        "total": tally.total,
        "rate": len(ordered) / duration,
        "p50": _percentile(ordered, 0.5),
        "p99": _percentile(ordered, 0.99),
        "p999": _percentile(ordered, 0.999),
        "client_cpu_us": cpu / max(1, tally.total) * 1e6,
        "bad": tally.bad,
        "first_bad": tally.first_bad,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_load")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    clients = [
        Client(c["cookie"], c["body"].encode(), [e.lower().encode() for e in c["expect"]])
        for c in json.load(sys.stdin)
    ]
    result = asyncio.run(
        run(
            args.host,
            args.port,
            args.path,
            clients,
            args.connections,
            args.warmup,
            args.duration,
        )
    )
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
