"""``redkit jobs stats | list | show | retry | cancel`` (the worker command runs in
test_processes.py, as real processes)."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner, Result

import redkit
from jobs.helpers import claim
from redkit.cli.jobs import app, load_functions
from redkit.jobs import JobState

runner = CliRunner()


async def invoke(*args: str) -> Result:
    # The CLI runs its own event loop (asyncio.run): give it a thread of its own.
    return await asyncio.to_thread(lambda: runner.invoke(app, list(args)))


@pytest.mark.cluster
async def test_stats_list_and_show_describe_the_queues(rk: redkit.Redkit, redis_url: str) -> None:
    where = ["--url", redis_url, "-n", rk.namespace]
    q = rk.queue("email")
    job = await q.enqueue("send_email", {"to": "a@b.c"}, priority=5)
    await rk.queue("other").enqueue("f", delay=60)
    stats = await invoke("stats", "--json", *where)
    assert stats.exit_code == 0, stats.output
    rows = {r["queue"]: r for r in json.loads(stats.stdout)}
    assert rows["email"]["waiting"] == 1
    assert rows["other"]["delayed"] == 1
    table = await invoke("stats", *where)
    assert "email" in table.stdout
    assert "other" in table.stdout
    listed = await invoke("list", "waiting", "-q", "email", "--json", *where)
    assert [j["id"] for j in json.loads(listed.stdout)] == [job.id]
    assert job.id in (await invoke("list", "waiting", "-q", "email", *where)).stdout
    assert "no failed job" in (await invoke("list", "failed", "-q", "email", *where)).stdout
    shown = await invoke("show", job.id, "-q", "email", "--json", *where)
    data = json.loads(shown.stdout)
    assert (data["function"], data["payload"], data["priority"]) == (
        "send_email",
        {"to": "a@b.c"},
        5,
    )
    assert "send_email" in (await invoke("show", job.id, "-q", "email", *where)).stdout
    missing = await invoke("show", "nope", "-q", "email", *where)
    assert missing.exit_code == 1


@pytest.mark.cluster
async def test_cancel_and_retry_from_the_command_line(rk: redkit.Redkit, redis_url: str) -> None:
    where = ["-q", "email", "--url", redis_url, "-n", rk.namespace]
    q = rk.queue("email")
    job = await q.enqueue("send_email")
    cancelled = await invoke("cancel", job.id, *where)
    assert cancelled.exit_code == 0, cancelled.output
    assert "cancelled (it was waiting)" in cancelled.stdout
    assert await job.status() is JobState.CANCELLED
    retried = await invoke("retry", job.id, *where)
    assert "waiting again" in retried.stdout
    assert await job.status() is JobState.WAITING
    refused = await invoke("retry", job.id, *where)
    assert refused.exit_code == 1
    assert await claim(q, 1) == [job.id]
    active = await invoke("cancel", job.id, *where)
    assert "is running" in active.stdout
    assert (await invoke("cancel", "nope", *where)).exit_code == 1


def test_the_worker_target_must_name_functions() -> None:
    with pytest.raises(redkit.InvalidInput, match="cannot import"):
        load_functions("no_such_module_here:functions")
    with pytest.raises(redkit.InvalidInput, match="has no 'nothing'"):
        load_functions("jobs.tasks:nothing")
    assert set(load_functions("jobs.tasks")) == {"record"}
    assert set(load_functions("jobs.tasks:functions")) == {"record"}
