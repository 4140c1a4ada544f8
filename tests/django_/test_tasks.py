"""``TASKS = {"default": {"BACKEND": "redkit.django.tasks.RedkitBackend", ...}}``: Django's
tasks framework (DEP 14) on redkit's queue, enqueued from the test project's views and run
by a real redkit worker (in this process, and as ``redkit worker`` in a process of its own)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import AsyncClient, Client
from django.test.utils import override_settings

import redkit
import redkit.sync
from django_ import tasks
from django_.conftest import tasks_config
from jobs.helpers import eventually, running
from redkit.cli.jobs import load_functions
from redkit.codec import DEFAULT_MAX_BYTES
from redkit.django.tasks import (
    InvalidTask,
    InvalidTaskArguments,
    RedkitBackend,
    TaskResultDoesNotExist,
    TaskResultMismatch,
    TaskResultStatus,
    default_task_backend,
    task_backends,
    worker_functions,
)
from redkit.errors import ConfigurationError, InvalidInput
from redkit.jobs import JobState, Worker

ROOT = Path(__file__).resolve().parents[2]


def worker(rk: redkit.Redkit) -> Worker:
    """A redkit worker in this process, running the project's tasks."""
    return Worker(
        rk,
        queues=["default", "mail"],
        functions=worker_functions(),
        concurrency=4,
        handle_signals=False,
    )


async def get(path: str) -> Any:
    """A sync view through Django's test client (in a thread: the view's client is sync)."""
    response = await asyncio.to_thread(Client().get, path)
    return response.status_code, json.loads(response.content)


async def finished(result_id: str, timeout: float = 20) -> Any:
    """The task's result once it finished (polled through the backend, bounded)."""

    async def done() -> bool:
        result = await default_task_backend.aget_result(result_id)
        return bool(result.is_finished)

    await eventually(done, timeout=timeout)
    return await default_task_backend.aget_result(result_id)


# -- enqueue from views, run by a worker, read the result -----------------------------------------


@pytest.mark.cluster
@pytest.mark.usefixtures("tasks_async")
async def test_a_task_enqueued_by_a_view_runs_on_a_worker_and_its_result_is_read_back(
    rk: redkit.Redkit,
) -> None:
    status, body = await get("/tasks/add/?a=2&b=40")
    assert status == 200
    assert body["status"] == "READY"
    job = await rk.queue("default").get(body["id"])
    assert job is not None
    assert (job.function, job.payload) == ("django_.tasks.add", {"args": [2, 40], "kwargs": {}})
    async with running(worker(rk)):
        result = await finished(body["id"])
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42
    assert result.attempts == 1
    assert result.errors == []
    assert result.args == [2, 40]
    assert result.task.func is tasks.add.func
    assert result.enqueued_at <= result.started_at <= result.finished_at
    _, shown = await get(f"/tasks/result/{body['id']}/")
    assert (shown["status"], shown["return_value"]) == ("SUCCESSFUL", 42)
    # Through the Task, as Django's API has it: the result must be that task's.
    assert (await tasks.add.aget_result(body["id"])).return_value == 42
    with pytest.raises(TaskResultMismatch):
        await tasks.charge.aget_result(body["id"])


@pytest.mark.cluster
@pytest.mark.usefixtures("tasks_async")
async def test_an_async_view_aenqueues_an_async_task_on_its_queue_with_its_priority(
    rk: redkit.Redkit,
) -> None:
    response = await AsyncClient().get("/tasks/mail/?to=a@example.org&s=hi")
    body = json.loads(response.content)
    job = await rk.queue("mail").get(body["id"])
    assert job is not None
    assert (job.state, job.priority) == (JobState.WAITING, 10)
    async with running(worker(rk)):
        result = await finished(body["id"])
    assert result.return_value == {"to": "a@example.org", "subject": "hi"}
    assert result.task.queue_name == "mail"
    assert result.task.priority == 10
    shown = json.loads((await AsyncClient().get(f"/tasks/aresult/{body['id']}/")).content)
    assert shown["status"] == "SUCCESSFUL"


@pytest.mark.usefixtures("tasks_async")
async def test_a_failing_task_reports_its_exception_class_and_traceback(
    rk: redkit.Redkit,
) -> None:
    _, body = await get("/tasks/charge/?amount=5")
    asynchronous = await tasks.acharge.aenqueue(7)
    async with running(worker(rk)):
        failed = await finished(body["id"])
        afailed = await finished(asynchronous.id)
    for result, amount in ((failed, 5), (afailed, 7)):
        assert result.status == TaskResultStatus.FAILED
        (error,) = result.errors
        assert error.exception_class_path == "django_.tasks.PaymentDeclined"
        assert error.exception_class is tasks.PaymentDeclined
        assert f"card declined for {amount}" in error.traceback
        assert "raise PaymentDeclined" in error.traceback
        with pytest.raises(ValueError, match="failed"):
            result.return_value  # noqa: B018 (Django raises for a failed task's value)
    _, shown = await get(f"/tasks/result/{body['id']}/")
    assert shown["status"] == "FAILED"
    assert shown["errors"][0]["exception"] == "django_.tasks.PaymentDeclined"
    # Django runs a task once: no retry unless OPTIONS MAX_ATTEMPTS says so.
    job = await rk.queue("default").get(body["id"])
    assert job is not None
    assert (job.state, job.attempts) == (JobState.FAILED, 1)


async def test_with_max_attempts_a_task_is_retried_and_reports_its_last_error(
    rk: redkit.Redkit, redis_url: str
) -> None:
    config = tasks_config(redis_url, rk.namespace, MAX_ATTEMPTS=2, TIMEOUT=0.5)
    with override_settings(TASKS=config):
        try:
            enqueued = await tasks.declined_then_stuck.aenqueue()
            async with running(worker(rk)):
                result = await finished(enqueued.id)
            assert result.status == TaskResultStatus.FAILED
            assert result.attempts == 2
            (error,) = result.errors
            # The timeout of attempt 2, not attempt 1's PaymentDeclined.
            assert error.exception_class_path == "redkit.errors.JobTimeout"
            assert "timed out after 0.5 s" in error.traceback
        finally:
            await task_backends["default"].aclose()


@pytest.mark.usefixtures("tasks_async")
async def test_a_context_task_sees_its_attempt_and_id(rk: redkit.Redkit) -> None:
    enqueued = await tasks.which_attempt.aenqueue("x")
    async with running(worker(rk)):
        result = await finished(enqueued.id)
    assert result.return_value == {"label": "x", "attempt": 1, "id": enqueued.id}


@pytest.mark.usefixtures("tasks_async")
async def test_a_return_value_that_is_not_json_fails_the_task_clearly(rk: redkit.Redkit) -> None:
    enqueued = await tasks.bad_return.aenqueue()
    async with running(worker(rk)):
        result = await finished(enqueued.id)
    assert result.status == TaskResultStatus.FAILED
    (error,) = result.errors
    assert error.exception_class is InvalidTaskArguments
    assert "the task's return value is a builtins.object" in error.traceback


# -- run_after, priority ------------------------------------------------------------------------


@pytest.mark.usefixtures("tasks_async")
async def test_run_after_holds_the_task_until_its_time(rk: redkit.Redkit) -> None:
    async with running(worker(rk)):
        _, body = await get("/tasks/later/?seconds=2")
        job = await rk.queue("default").get(body["id"])
        assert job is not None
        # Delayed on the server until run_after (a worker is running all along).
        assert job.state in (JobState.DELAYED, JobState.ACTIVE, JobState.COMPLETED)
        assert job.scheduled_at is not None
        assert job.created_at is not None
        assert job.scheduled_at - job.created_at == pytest.approx(2, abs=0.5)
        pending = await default_task_backend.aget_result(body["id"])
        if job.state is JobState.DELAYED:
            assert pending.status == TaskResultStatus.READY
            assert pending.task.run_after is not None
        result = await finished(body["id"])
    assert result.return_value == 42
    # Started no earlier than run_after (both clocks are this machine's).
    assert result.started_at.timestamp() >= body["run_after"] - 0.05


@pytest.mark.usefixtures("tasks_async")
async def test_higher_priority_tasks_run_first_as_django_orders_them(rk: redkit.Redkit) -> None:
    low = await tasks.add.using(priority=-100).aenqueue(0, 1)
    mid = await tasks.add.aenqueue(0, 2)
    high = await tasks.add.using(priority=100).aenqueue(0, 3)
    waiting = await rk.queue("default").jobs("waiting")
    assert [j.id for j in waiting] == [high.id, mid.id, low.id]
    assert [j.priority for j in waiting] == [100, 0, -100]
    with pytest.raises(InvalidTask, match="priority"):
        tasks.add.using(priority=101)


# -- enqueue on commit, with a real database ---------------------------------------------------


@pytest.mark.usefixtures("tasks_sync")
def test_a_task_enqueued_in_a_transaction_is_queued_when_it_commits() -> None:
    body = Client().get("/tasks/order/").json()
    # Not on the queue while the order was not committed; there once it was.
    assert body["visible_inside"] is False
    assert body["stored"] == 1
    result = default_task_backend.get_result(body["id"])
    assert result.status == TaskResultStatus.READY
    (order_id,) = result.args
    assert isinstance(order_id, int)


@pytest.mark.usefixtures("tasks_sync")
def test_a_rolled_back_transaction_enqueues_nothing(raw: redkit.sync.Redkit) -> None:
    body = Client().get("/tasks/order/?outcome=rollback").json()
    assert body["stored"] == 0
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(body["id"])
    assert raw.queue("default").stats().waiting == 0


def test_enqueue_on_commit_can_be_turned_off(
    redis_url: str, namespace: str, raw: redkit.sync.Redkit
) -> None:
    config = tasks_config(redis_url, namespace, ENQUEUE_ON_COMMIT=False)
    with override_settings(TASKS=config):
        try:
            body = Client().get("/tasks/order/?outcome=rollback").json()
            assert body["visible_inside"] is True
            assert default_task_backend.get_result(body["id"]).status == TaskResultStatus.READY
        finally:
            task_backends["default"].close()


@pytest.mark.usefixtures("tasks_sync")
def test_an_enqueue_from_a_sync_view_is_one_round_trip(raw: redkit.sync.Redkit) -> None:
    def calls() -> dict[str, int]:
        stats = raw.redis.info("commandstats")
        return {
            name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
            for name in ("evalsha", "eval", "sadd", "hgetall")
        }

    Client().get("/tasks/add/?a=1&b=1")  # the first one also registers the queue's name
    before = calls()
    for _ in range(3):
        assert Client().get("/tasks/add/?a=1&b=1").status_code == 200
    after = calls()
    assert after["evalsha"] + after["eval"] - before["evalsha"] - before["eval"] == 3
    assert after["sadd"] == before["sadd"]


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("tasks_sync")
def test_arguments_that_are_not_json_are_refused_before_anything_is_queued(
    raw: redkit.sync.Redkit,
) -> None:
    response = Client().get("/tasks/bad/")
    assert response.status_code == 400
    assert "args[0] is a datetime.datetime, which is not JSON" in response.json()["error"]
    with pytest.raises(InvalidInput, match=r"kwargs\['when'\]\[1\]"):
        tasks.add.enqueue(1, b=1, when=[1, {1, 2}])
    with pytest.raises(InvalidTaskArguments, match="JSON object keys are strings"):
        tasks.add.enqueue({1: "a"}, 2)
    with pytest.raises(InvalidTaskArguments, match="nan"):
        tasks.add.enqueue(float("nan"), 2)
    with pytest.raises(InvalidTaskArguments, match="the task's arguments"):
        tasks.add.enqueue("x" * (DEFAULT_MAX_BYTES + 1), 2)
    assert raw.queue("default").stats().waiting == 0


@pytest.mark.usefixtures("tasks_sync")
def test_an_unknown_or_malformed_result_id_is_a_404_not_a_500(raw: redkit.sync.Redkit) -> None:
    for bad in ("nope", "x" * 300, "..%2F..%2Fetc"):
        assert Client().get(f"/tasks/result/{bad}/").status_code == 404
    # A job on the queue that no task wrote is not a task result either.
    job = raw.queue("default").enqueue("os.system", {"args": ["id"], "kwargs": {}})
    with pytest.raises(TaskResultDoesNotExist, match="not a registered task"):
        default_task_backend.get_result(job.id)
    outside = raw.queue("default").enqueue(
        "django_.tasks.add", {"args": [1, 2], "kwargs": {}}, priority=500
    )
    with pytest.raises(TaskResultDoesNotExist, match="not enqueued as a task"):
        default_task_backend.get_result(outside.id)


@pytest.mark.usefixtures("tasks_async")
async def test_a_job_naming_a_function_that_is_not_a_task_never_runs_it(
    rk: redkit.Redkit,
) -> None:
    functions = worker_functions()
    assert "django_.tasks.add" in functions
    assert "django_.tasks.not_a_task" not in functions
    assert "os.system" not in functions
    queue = rk.queue("default")
    forged = [
        await queue.enqueue(name, {"args": ["boom"], "kwargs": {}}, max_attempts=1)
        for name in ("django_.tasks.not_a_task", "os.system", "django_.tasks.PaymentDeclined")
    ]
    async with running(worker(rk)):
        for job in forged:
            with pytest.raises(redkit.JobFailed, match="unknown function"):
                await job.result(timeout=20)


@pytest.mark.usefixtures("tasks_async")
async def test_a_forged_payload_for_a_real_task_fails_without_running_it(
    rk: redkit.Redkit,
) -> None:
    queue = rk.queue("default")
    job = await queue.enqueue("django_.tasks.add", {"args": "12"}, max_attempts=1)
    async with running(worker(rk)):
        with pytest.raises(redkit.JobFailed, match="the payload is not a task's"):
            await job.result(timeout=20)


def test_bad_backend_settings_are_configuration_errors(redis_url: str) -> None:
    params: dict[str, Any] = {"LOCATION": redis_url, "QUEUES": ["default"]}
    for options, match in (
        ({"EXPIRE": 1}, "does not know the OPTIONS EXPIRE"),
        ({"MAX_ATTEMPTS": 0}, "MAX_ATTEMPTS"),
        ({"ENQUEUE_ON_COMMIT": "yes"}, "ENQUEUE_ON_COMMIT"),
        ({"DATABASE": "replica"}, "not in DATABASES"),
        ({"TIMEOUT": -1}, "TIMEOUT"),
        ({"MODULES": "myapp.tasks"}, "MODULES"),
    ):
        with pytest.raises(ConfigurationError, match=match):
            RedkitBackend("x", {**params, "OPTIONS": options})
    with pytest.raises(ConfigurationError, match="queue name"):
        RedkitBackend("x", {**params, "QUEUES": ["no spaces"]})
    with pytest.raises(ConfigurationError, match="empty"):
        RedkitBackend("x", {**params, "QUEUES": []})


# -- `redkit worker` ------------------------------------------------------------------------------


def test_the_cli_worker_target_is_the_module_itself() -> None:
    functions = load_functions("redkit.django.tasks")
    assert set(functions) >= {"django_.tasks.add", "django_.tasks.send_mail"}


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=out)


@pytest.mark.usefixtures("tasks_async")
async def test_redkit_worker_runs_the_projects_tasks_in_its_own_process(
    rk: redkit.Redkit, redis_url: str, tmp_path: Path
) -> None:
    _, added = await get("/tasks/add/?a=1&b=2")
    _, charged = await get("/tasks/charge/?amount=3")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "tests"),
        "DJANGO_SETTINGS_MODULE": "django_.settings",
        "REDIS_URL": redis_url,
    }
    argv = [sys.executable, "-m", "redkit.cli", "worker", "redkit.django.tasks"]
    argv += ["-q", "default", "-q", "mail", "--url", redis_url, "-n", rk.namespace]
    log = tmp_path / "worker.log"
    proc = await asyncio.to_thread(_spawn, argv, env, log)
    try:
        result = await finished(added["id"], timeout=60)
        failure = await finished(charged["id"], timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
    assert code == 0, log.read_text()
    assert result.return_value == 3
    assert failure.errors[0].exception_class_path == "django_.tasks.PaymentDeclined"
    assert "django_.tasks.add" in log.read_text()


def test_the_worker_needs_the_settings_module(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = "from redkit.django import tasks; tasks.functions"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, check=False
    )
    assert done.returncode != 0
    assert b"set DJANGO_SETTINGS_MODULE" in done.stderr
