"""``redkit cache stats`` and ``redkit cache invalidate``."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

import redkit
from redkit.cli.cache import app

runner = CliRunner()


async def _fill(url: str, namespace: str) -> None:
    async with redkit.connect(url, namespace) as rk:
        cache = rk.cache()
        await cache.set("a", 1, tags=["t"])
        await cache.set("b", 2, tags=["t"])
        await cache.get("a")
        await cache.get("zzz")
        await cache.drain()  # counts reach the server in batches; write them now


@pytest.mark.cluster
def test_stats_and_invalidate_from_the_command_line(redis_url: str, namespace: str) -> None:
    asyncio.run(_fill(redis_url, namespace))
    result = runner.invoke(app, ["stats", "--json", "--url", redis_url, "-n", namespace])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["hits"], data["misses"], data["hit_ratio"]) == (1, 1, 0.5)

    table = runner.invoke(app, ["stats", "--url", redis_url, "-n", namespace])
    assert table.exit_code == 0, table.output
    assert "hits" in table.stdout
    assert "50.0%" in table.stdout

    result = runner.invoke(app, ["invalidate", "t", "--url", redis_url, "-n", namespace])
    assert result.exit_code == 0, result.output
    assert "invalidated 2 entries" in result.stdout


def test_a_dead_server_is_one_clear_line() -> None:
    result = runner.invoke(app, ["stats", "--url", "redis://127.0.0.1:1"])
    assert result.exit_code == 1
    assert "error:" in result.output
    assert "Traceback" not in result.output
