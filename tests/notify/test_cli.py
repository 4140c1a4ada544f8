"""``redkit notify publish | history | tail``."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner, Result

import redkit
from notify.helpers import eventually, pubsub_clients
from redkit.cli.notify import app

runner = CliRunner()


async def invoke(*args: str) -> Result:
    # The CLI runs its own event loop (asyncio.run): give it a thread of its own.
    return await asyncio.to_thread(lambda: runner.invoke(app, list(args)))


@pytest.mark.cluster
async def test_publish_prints_the_id_and_history_lists_the_events(
    rk: redkit.Redkit, redis_url: str
) -> None:
    where = ("--url", redis_url, "-n", rk.namespace)
    first = await invoke("publish", "deployment:status", '{"status": "building"}', *where)
    assert first.exit_code == 0, first.output
    await invoke("publish", "deployment:status", '{"status": "live"}', *where)
    listed = await invoke("history", "deployment:status", "--json", *where)
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert rows[0]["id"] == first.stdout.strip()
    assert [r["data"] for r in rows] == [{"status": "building"}, {"status": "live"}]
    text = await invoke("history", "deployment:status", "--count", "1", *where)
    assert '{"status":"live"}' in text.stdout
    assert "building" not in text.stdout
    empty = await invoke("history", "nothing", *where)
    assert "no events kept" in empty.stdout


async def test_publish_refuses_bad_json_and_empty_channels(
    rk: redkit.Redkit, redis_url: str
) -> None:
    where = ("--url", redis_url, "-n", rk.namespace)
    bad = await invoke("publish", "ch", "{not json", *where)
    assert bad.exit_code == 1
    assert "not valid JSON" in bad.output
    empty = await invoke("publish", "", "1", *where)
    assert empty.exit_code == 1
    assert "non-empty string" in empty.output


async def test_tail_follows_a_pattern_live(rk: redkit.Redkit, redis_url: str) -> None:
    bus = rk.notifications()
    earlier = await bus.publish("deployment:p1", "earlier")
    where = ("--url", redis_url, "-n", rk.namespace)
    tail = asyncio.create_task(invoke("tail", "deployment:*", "--count", "2", "--json", *where))
    await eventually(lambda: _subscribed(rk))
    await bus.publish("project:created", "not matched")
    await bus.publish("deployment:p1", "one")
    await bus.publish("deployment:p2", "two")
    result = await asyncio.wait_for(tail, 15)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["channel"], r["data"]) for r in rows] == [
        ("deployment:p1", "one"),
        ("deployment:p2", "two"),
    ]
    # With --last-event-id it first replays what came after that id.
    replay = await invoke(
        "tail", "deployment:p1", "--count", "1", "--last-event-id", earlier, *where
    )
    assert replay.exit_code == 0, replay.output
    assert '"one"' in replay.stdout


async def _subscribed(rk: redkit.Redkit) -> bool:
    return bool(await pubsub_clients(rk))


async def test_publish_prints_json_with_json(rk: redkit.Redkit, redis_url: str) -> None:
    where = ("--url", redis_url, "-n", rk.namespace)
    published = await invoke("publish", "deployment:status", '{"a": 1}', "--json", *where)
    assert published.exit_code == 0, published.output
    data = json.loads(published.stdout)
    assert data["channel"] == "deployment:status"
    (event,) = await rk.notifications().history("deployment:status")
    assert data["id"] == event.id
