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


@pytest.mark.cluster
def test_invalidate_prints_json_with_json(redis_url: str, namespace: str) -> None:
    asyncio.run(_fill(redis_url, namespace))
    where = ["--url", redis_url, "-n", namespace]
    result = runner.invoke(app, ["invalidate", "t", "nothing", "--json", *where])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "cache": "default",
        "tags": ["t", "nothing"],
        "invalidated": 2,
    }


@pytest.mark.cluster
def test_list_names_the_caches_that_counted_and_stats_hints_at_an_unknown_name(
    redis_url: str, namespace: str
) -> None:
    asyncio.run(_fill(redis_url, namespace))
    where = ["--url", redis_url, "-n", namespace]
    listed = runner.invoke(app, ["list", "--json", *where])
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert (row["name"], row["hits"], row["misses"]) == ("default", 1, 1)
    assert "default" in runner.invoke(app, ["list", *where]).stdout
    unknown = runner.invoke(app, ["stats", "--name", "nonexistent", "--json", *where])
    assert unknown.exit_code == 0
    assert json.loads(unknown.stdout)["hits"] == 0  # stdout stays JSON
    assert "no cache named 'nonexistent'" in unknown.stderr
    assert "known caches: default" in unknown.stderr
    known = runner.invoke(app, ["stats", *where])
    assert "no cache named" not in known.stderr


def test_list_in_an_empty_namespace_says_so(redis_url: str, namespace: str) -> None:
    result = runner.invoke(app, ["list", "--url", redis_url, "-n", namespace])
    assert result.exit_code == 0
    assert "no cache has counted" in result.stdout
