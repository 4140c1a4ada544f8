"""``redkit limits show|reset``."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

import redkit
from redkit.cli.limits import app

runner = CliRunner()


@pytest.mark.cluster
def test_show_and_reset_a_key(redis_url: str, namespace: str) -> None:
    async def use() -> None:
        async with redkit.connect(redis_url, namespace) as rk:
            await rk.rate_limiter(10, 60, "fixed_window").hit("user:[1]*", cost=3)
            await rk.rate_limiter(5, 60, "sliding_log").hit("user:[1]*", cost=2)
            await rk.rate_limiter(5, 60, "sliding_log").hit("user:[1]x")  # another key

    asyncio.run(use())
    args = ["--url", redis_url, "--namespace", namespace]
    shown = runner.invoke(app, ["show", "user:[1]*", "--json", *args])
    assert shown.exit_code == 0, shown.output
    states = json.loads(shown.stdout)
    assert [s["limiter"] for s in states] == ["fixed_window:10/60s", "sliding_log:5/60s"]
    assert states[0]["state"]["n"] == "3"
    assert states[1]["state"] == {"units in window": 2}
    assert 0 < states[0]["expires_in"] <= 60

    table = runner.invoke(app, ["show", "user:[1]*", *args])
    assert "fixed_window:10/60s" in table.stdout

    reset = runner.invoke(app, ["reset", "user:[1]*", *args])
    assert reset.exit_code == 0
    assert "reset 2" in reset.stdout
    after = runner.invoke(app, ["show", "user:[1]*", "--json", *args])
    assert json.loads(after.stdout) == []
    other = runner.invoke(app, ["show", "user:[1]x", "--json", *args])
    assert len(json.loads(other.stdout)) == 1  # the glob characters matched nothing else
