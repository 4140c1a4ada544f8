"""Helpers of the notification tests: the server's view of pub/sub connections."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.cluster import RedisCluster

import redkit


def _nodes(rk: redkit.Redkit) -> list[Any]:
    return rk.redis.get_primaries() if isinstance(rk.redis, RedisCluster) else [None]


async def pubsub_clients(rk: redkit.Redkit) -> list[tuple[Any, dict[str, str]]]:
    """(node, CLIENT LIST row) of this namespace's connections that hold subscriptions."""
    found: list[tuple[Any, dict[str, str]]] = []
    for node in _nodes(rk):
        kwargs = {"target_nodes": node} if node is not None else {}
        rows: Any = await rk.redis.client_list(**kwargs)
        for row in rows:
            subs = sum(int(row.get(field, 0) or 0) for field in ("sub", "psub", "ssub"))
            if row.get("name") == f"redkit:{rk.namespace}" and subs:
                found.append((node, row))
    return found


async def kill_pubsub_connections(rk: redkit.Redkit) -> int:
    """``CLIENT KILL`` every subscribed connection of the namespace; return how many."""
    killed = 0
    for node, row in await pubsub_clients(rk):
        kwargs = {"target_nodes": node} if node is not None else {}
        killed += int(await rk.redis.execute_command("CLIENT KILL", "ID", row["id"], **kwargs))
    return killed


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until ``check()`` is true (polling), or fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def command_stats(rk: redkit.Redkit) -> Counter[str]:
    """Calls per command from ``INFO commandstats``, summed over the primaries."""
    out: Counter[str] = Counter()
    for node in _nodes(rk):
        kwargs = {"target_nodes": node} if node is not None else {}
        info: dict[str, Any] = await rk.redis.info("commandstats", **kwargs)
        for name, stats in info.items():
            out[name.removeprefix("cmdstat_")] += int(stats["calls"])
    return out
