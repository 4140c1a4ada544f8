"""``redkit worker --processes N``: real supervisor and child processes, real signals.

The children run ``jobs.tasks:functions`` (see tests/jobs/tasks.py); each child writes its
own line to the workers list (``redkit jobs workers``), naming the supervisor and its index.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import redkit
from jobs.helpers import eventually
from redkit.cli.jobs import app
from redkit.jobs import JobSpec, WorkerInfo, list_workers
from redkit.jobs.supervisor import parse_processes

ROOT = Path(__file__).resolve().parents[2]


class Supervised:
    """One ``redkit worker --processes N`` started through the CLI, killed at the end."""

    def __init__(self, url: str, namespace: str, logs: Path) -> None:
        self.url, self.namespace, self.logs = url, namespace, logs
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, processes: str) -> subprocess.Popen[bytes]:
        argv = [
            sys.executable,
            "-c",
            "from redkit.cli.jobs import app; app()",
            "worker",
            "jobs.tasks:functions",
            "--queue",
            "work",
            "--processes",
            processes,
            "--concurrency",
            "5",
            "--lease",
            "1",
            "--grace",
            "3",
            "--url",
            self.url,
            "--namespace",
            self.namespace,
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "JOBS_TEST_URL": self.url}
        log = open(self.logs / "supervisor.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        log.close()
        return self.proc

    def log(self) -> str:
        return (self.logs / "supervisor.log").read_text(errors="replace")


@pytest.fixture
def supervised(redis_url: str, namespace: str, tmp_path: Path) -> Iterator[Supervised]:
    sup = Supervised(redis_url, namespace, tmp_path)
    yield sup
    if sup.proc is not None and sup.proc.poll() is None:
        sup.proc.kill()
        sup.proc.wait(5)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def _children(rk: redkit.Redkit, supervisor: int) -> list[WorkerInfo]:
    return [w for w in await list_workers(rk) if w.supervisor == supervisor]


async def _has_children(rk: redkit.Redkit, supervisor: int, n: int) -> bool:
    return len(await _children(rk, supervisor)) == n


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


async def test_a_supervisor_runs_n_children_that_share_the_jobs_and_each_list_themselves(
    rk: redkit.Redkit, supervised: Supervised
) -> None:
    proc = supervised.start("2")
    await eventually(lambda: _has_children(rk, proc.pid, 2), timeout=30)
    children = await _children(rk, proc.pid)
    assert sorted(c.index for c in children) == [0, 1]
    assert len({c.pid for c in children}) == 2
    assert all(c.queues == ["work"] and c.concurrency == 5 for c in children)
    q = rk.queue("work")
    prefix = rk.keys.key("rec")
    await q.enqueue_many([JobSpec("record", {"prefix": prefix, "sleep": 0.01})] * 200)

    async def finished() -> bool:
        return (await q.stats()).completed == 200

    await eventually(finished, timeout=30)
    runs = await rk.redis.hgetall(prefix + ":runs")
    assert len(runs) == 200
    assert set(runs.values()) == {b"1"}
    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["workers", "--url", supervised.url, "--namespace", supervised.namespace, "--json"],
    )
    assert result.exit_code == 0, result.output
    listed = [w for w in json.loads(result.output) if w["supervisor"] == proc.pid]
    assert sorted(w["pid"] for w in listed) == sorted(c.pid for c in children)


async def test_a_killed_child_is_restarted_and_sigterm_stops_them_all_without_orphans(
    rk: redkit.Redkit, supervised: Supervised
) -> None:
    proc = supervised.start("2")
    await eventually(lambda: _has_children(rk, proc.pid, 2), timeout=30)
    first = {c.index: c.pid for c in await _children(rk, proc.pid)}
    os.kill(first[0], signal.SIGKILL)

    async def replaced() -> bool:
        now = {c.index: c for c in await _children(rk, proc.pid)}
        return 0 in now and now[0].pid != first[0] and now[0].restarts == 1

    await eventually(replaced, timeout=30)
    now = {c.index: c.pid for c in await _children(rk, proc.pid)}
    assert now[1] == first[1]  # the other child was left alone
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert not any(_alive(pid) for pid in now.values()), supervised.log()
    assert "exited with -9" in supervised.log()

    async def unlisted() -> bool:
        return not {c.pid for c in await _children(rk, proc.pid)} & set(now.values())

    # A clean stop removes each child's line (the SIGKILLed one's ages out of the list).
    await eventually(unlisted, timeout=5)


async def test_children_stop_when_their_supervisor_is_killed(
    rk: redkit.Redkit, supervised: Supervised
) -> None:
    proc = supervised.start("2")
    await eventually(lambda: _has_children(rk, proc.pid, 2), timeout=30)
    pids = [c.pid for c in await _children(rk, proc.pid)]
    proc.kill()
    proc.wait(5)
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)


def test_processes_is_a_positive_number_or_auto() -> None:
    assert parse_processes("3") == 3
    assert parse_processes("auto") == len(os.sched_getaffinity(0))
    for bad in ("0", "-1", "many", ""):
        with pytest.raises(redkit.InvalidInput):
            parse_processes(bad)
    result = CliRunner().invoke(app, ["worker", "jobs.tasks:functions", "--processes", "zero"])
    assert result.exit_code == 1
    assert "--processes" in result.output


def test_a_sigterm_while_the_worker_starts_up_exits_cleanly(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    argv = [sys.executable, "-c", "from redkit.cli.jobs import app; app()", "worker"]
    argv += ["jobs.slow_tasks:functions", "--url", redis_url, "--namespace", namespace]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "tests"),
        "JOBS_TEST_MARKER": str(marker),
        "JOBS_TEST_IMPORT_SLEEP": "5",
    }
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert marker.exists()
        proc.send_signal(signal.SIGTERM)  # the functions are still importing
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
