"""``redkit jobs stats | list | show | retry | cancel`` (the worker command runs in
test_processes.py, as real processes)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import redkit
from jobs.helpers import claim, eventually
from redkit.cli.jobs import app, load_functions, load_schedules
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


@pytest.mark.cluster
async def test_retry_cancel_and_show_find_a_job_on_any_queue_by_its_id(
    rk: redkit.Redkit, redis_url: str
) -> None:
    where = ["--url", redis_url, "-n", rk.namespace]
    job = await rk.queue("email").enqueue("send_email")
    await rk.queue("other").enqueue("f")
    cancelled = await invoke("cancel", job.id, *where)
    assert cancelled.exit_code == 0, cancelled.output
    assert "on queue 'email' cancelled (it was waiting)" in cancelled.stdout
    retried = await invoke("retry", job.id, *where)
    assert retried.exit_code == 0, retried.output
    assert await job.status() is JobState.WAITING
    shown = await invoke("show", job.id, "--json", *where)
    assert json.loads(shown.stdout)["queue"] == "email"
    missing = await invoke("cancel", "nope", *where)
    assert missing.exit_code == 1
    assert "no job 'nope' on any queue" in missing.output
    assert "email, other" in missing.output
    # The same id on two queues: the command asks for -q instead of guessing.
    await rk.queue("other").enqueue("f", job_id="twice")
    await rk.queue("email").enqueue("f", job_id="twice")
    ambiguous = await invoke("cancel", "twice", *where)
    assert ambiguous.exit_code == 1
    assert "several queues (email, other): pass -q" in ambiguous.output
    assert (await invoke("cancel", "twice", "-q", "other", *where)).exit_code == 0


@pytest.mark.cluster
async def test_cancel_and_retry_print_json(rk: redkit.Redkit, redis_url: str) -> None:
    where = ["--url", redis_url, "-n", rk.namespace, "--json"]
    job = await rk.queue("email").enqueue("send_email")
    cancelled = await invoke("cancel", job.id, *where)
    assert cancelled.exit_code == 0, cancelled.output
    assert json.loads(cancelled.stdout) == {
        "id": job.id,
        "queue": "email",
        "before": "waiting",
        "outcome": "cancelled",
    }
    again = json.loads((await invoke("cancel", job.id, *where)).stdout)
    assert (again["before"], again["outcome"]) == ("cancelled", "finished")
    retried = await invoke("retry", job.id, *where)
    assert json.loads(retried.stdout) == {
        "id": job.id,
        "queue": "email",
        "retried": True,
        "state": None,
    }


async def test_cancelled_and_failed_jobs_are_listed_and_counted_apart(
    rk: redkit.Redkit, redis_url: str
) -> None:
    where = ["-q", "email", "--url", redis_url, "-n", rk.namespace]
    q = rk.queue("email")
    cancelled = await q.enqueue("send_email")
    await cancelled.cancel()
    listed = await invoke("list", "cancelled", "--json", *where)
    assert [j["id"] for j in json.loads(listed.stdout)] == [cancelled.id]
    assert json.loads((await invoke("list", "failed", "--json", *where)).stdout) == []
    stats = json.loads((await invoke("stats", "--json", *where)).stdout)
    assert (stats[0]["failed"], stats[0]["cancelled"]) == (0, 1)
    assert "cancelled" in (await invoke("stats", *where)).stdout


async def test_jobs_list_fits_80_columns_without_cutting_ids_or_headers(
    rk: redkit.Redkit, redis_url: str
) -> None:
    where = ["-q", "email", "--url", redis_url, "-n", rk.namespace]
    q = rk.queue("email")
    jobs = [await q.enqueue("send_a_rather_long_function_name", max_attempts=1) for _ in range(2)]
    for job in jobs:
        await job.cancel()
    for state in ("waiting", "cancelled"):
        if state == "waiting":
            await q.enqueue("send_email", priority=3)
        argv = ["list", state, *where]
        result = await asyncio.to_thread(runner.invoke, app, argv, env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert max(len(line) for line in lines) <= 80
        assert "…" not in result.stdout
        assert "function" in result.stdout
        if state == "cancelled":
            assert all(job.id in result.stdout for job in jobs)


async def test_schedules_come_from_a_module_as_dicts_or_a_function_of_rk(
    rk: redkit.Redkit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBS_TEST_PREFIX", "p")
    (nightly,) = await load_schedules("jobs.tasks:nightly", rk)
    assert (nightly.cron.text, nightly.function, nightly.queue.name) == (
        "0 3 * * *",
        "record",
        "maintenance",
    )
    (every,) = await load_schedules("jobs.tasks:every_second", rk)
    assert every.name == "every-second"
    with pytest.raises(redkit.InvalidInput, match="has no 'nothing'"):
        await load_schedules("jobs.tasks:nothing", rk)
    with pytest.raises(redkit.InvalidInput, match="must be a list of schedules"):
        await load_schedules("jobs.tasks:functions", rk)


def _spawn(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=out)


async def test_the_worker_command_runs_the_schedules_it_is_given(
    rk: redkit.Redkit, redis_url: str, server_kind: str, tmp_path: Path
) -> None:
    prefix = f"{rk.namespace}:sched"
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": str(root / "tests"),
        "JOBS_TEST_URL": redis_url,
        "JOBS_TEST_PREFIX": prefix,
        "JOBS_TEST_QUEUE": "ticks",
    }
    argv = [sys.executable, "-m", "redkit.cli", "worker", "jobs.tasks:functions"]
    argv += ["-q", "ticks", "--schedules", "jobs.tasks:every_second"]
    argv += ["--url", redis_url, "-n", rk.namespace]
    log = tmp_path / "worker.log"
    proc = await asyncio.to_thread(_spawn, argv, root, env, log)
    try:

        async def ran() -> bool:
            return bool(await rk.redis.hlen(prefix + ":runs"))

        await eventually(ran, timeout=20)
        listed = await invoke("schedules", "--json", "--url", redis_url, "-n", rk.namespace)
        (entry,) = json.loads(listed.stdout)
        assert (entry["name"], entry["cron"], entry["queue"]) == (
            "every-second",
            "* * * * * *",
            "ticks",
        )
        assert entry["runner"].endswith(f":{proc.pid}")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
        await rk.redis.delete(prefix + ":runs", prefix + ":running", prefix + ":overlaps")
    assert code == 0, log.read_text()
    assert "scheduled ticks enqueued" in log.read_text()


async def test_schedules_says_where_schedules_run_when_none_does(
    rk: redkit.Redkit, redis_url: str
) -> None:
    result = await invoke("schedules", "--url", redis_url, "-n", rk.namespace)
    assert result.exit_code == 0
    assert "--schedules" in result.stdout
