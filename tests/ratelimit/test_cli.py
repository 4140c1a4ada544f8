"""``redkit limits show|reset``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

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


def test_show_prints_each_limiters_decision(redis_url: str, namespace: str) -> None:
    async def use() -> None:
        async with redkit.connect(redis_url, namespace) as rk:
            await rk.rate_limiter(10, 3600, "sliding_window").hit("user:7", cost=3)
            await rk.rate_limiter(4, 0.5, "gcra", burst=2).hit("user:7", cost=2)
            await rk.rate_limiter(5, 60, name="custom").hit("user:7")

    asyncio.run(use())
    args = ["--url", redis_url, "--namespace", namespace]
    shown = runner.invoke(app, ["show", "user:7", "--json", *args])
    assert shown.exit_code == 0, shown.output
    by_name = {s["limiter"]: s for s in json.loads(shown.stdout)}
    window = by_name["sliding_window:10/3600s"]["decision"]
    assert window["limit"] == 10
    assert window["remaining"] == 7
    assert window["allowed"] is True
    # Sliding: the hits weigh into the next window. (An hour's window: with a minute's, a run
    # whose hit and show straddled a window's end saw 59.996, about once in a hundred.)
    assert 3600 < window["reset_after"] <= 7200
    bucket = by_name["gcra:4/500ms:b2"]["decision"]
    assert bucket["limit"] == 2
    assert bucket["remaining"] == 0
    assert bucket["allowed"] is False
    assert 0 < bucket["retry_after"] <= 0.125
    assert by_name["custom"]["decision"] is None
    assert "--limit" in by_name["custom"]["note"]

    table = runner.invoke(app, ["show", "user:7", *args], env={"COLUMNS": "160"})
    assert table.exit_code == 0, table.output
    assert "remaining" in table.stdout
    assert "{'w'" not in table.stdout  # no raw state
    given = runner.invoke(
        app, ["show", "user:7", "--json", "--limit", "5", "--window", "60", *args]
    )
    custom = {s["limiter"]: s for s in json.loads(given.stdout)}["custom"]["decision"]
    assert custom["limit"] == 5
    assert custom["remaining"] == 4


def test_show_and_reset_read_the_namespace_from_a_dot_env_file(
    redis_url: str, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def use() -> None:
        async with redkit.connect(redis_url, namespace) as rk:
            await rk.rate_limiter(10, 60, "fixed_window").hit("user:env", cost=4)

    asyncio.run(use())
    monkeypatch.delenv("REDKIT_NAMESPACE", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"REDIS_URL={redis_url}\nREDKIT_NAMESPACE={namespace}\n")
    shown = runner.invoke(app, ["show", "user:env", "--json"])
    assert shown.exit_code == 0, shown.output
    assert [s["state"]["n"] for s in json.loads(shown.stdout)] == ["4"]
    reset = runner.invoke(app, ["reset", "user:env"])
    assert reset.exit_code == 0, reset.output
    assert "reset 1" in reset.stdout
