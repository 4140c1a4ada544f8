"""Counting server commands with INFO commandstats, and a session store's reads."""

from __future__ import annotations

from collections import Counter
from typing import Any

from redis.asyncio.cluster import RedisCluster

import redkit
from redkit.sessions import Session, SessionStore


class CountingStore(SessionStore):
    """A real store that counts its reads (each one is a round trip to the server)."""

    reads = 0

    async def get(self, session_id: str) -> Session | None:
        self.reads += 1
        return await super().get(session_id)


class CommandCounter:
    """Commands the server ran, by name, from ``INFO commandstats`` (summed over a Cluster's
    primaries). Commands run inside scripts count too: this measures server work."""

    def __init__(self, rk: redkit.Redkit) -> None:
        self.rk = rk

    async def snapshot(self) -> Counter[str]:
        redis = self.rk.redis
        if isinstance(redis, RedisCluster):
            infos: list[dict[str, Any]] = [
                await redis.info("commandstats", target_nodes=node)
                for node in redis.get_primaries()
            ]
        else:
            infos = [await redis.info("commandstats")]
        out: Counter[str] = Counter()
        for info in infos:
            for name, stats in info.items():
                out[name.removeprefix("cmdstat_")] += int(stats["calls"])
        return out

    async def since(self, before: Counter[str]) -> Counter[str]:
        after = await self.snapshot()
        after.subtract(before)
        return after
