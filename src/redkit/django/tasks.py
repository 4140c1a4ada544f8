"""Django's tasks framework (DEP 14) on redkit's job queue: a ``TASKS`` backend.

::

    TASKS = {
        "default": {
            "BACKEND": "redkit.django.tasks.RedkitBackend",
            "LOCATION": "redis://127.0.0.1:6379/0",    # empty: REDIS_URL, else embedded
            "QUEUES": ["default", "mail"],
            "OPTIONS": {"NAMESPACE": "rk"},
        }
    }

and run the tasks with ``DJANGO_SETTINGS_MODULE=mysite.settings redkit worker
redkit.django.tasks --queue default --queue mail`` (the same server and namespace).

Django 6.0's ``django.tasks`` is used where it exists; on older Django, the ``django-tasks``
backport (``pip install redkit[django]`` brings it; add ``"django_tasks"`` to
``INSTALLED_APPS``). Write the tasks with the ``task`` decorator of the one you use.

How Django's model maps onto redkit's queue:

- A task result's id is the redkit job's id; a Django queue is the redkit queue of the same
  name (``QUEUES``; a name must be a valid redkit queue name). The job's function is the
  task's ``module_path``, its payload ``{"args": [...], "kwargs": {...}}``.
- Priority: Django's -100..100 is redkit's priority as it is (redkit takes -1000..1000,
  higher first, FIFO within one priority), so the order is exactly Django's.
- ``run_after``: the job's delay, counted from now on this machine's clock (the server's
  clock then decides when it is due).
- Status: waiting, delayed and retrying jobs are ``READY``; active ``RUNNING``; completed
  ``SUCCESSFUL``; failed and cancelled ``FAILED``.
- Enqueue on commit (``OPTIONS["ENQUEUE_ON_COMMIT"]``, default True, as DEP 14 defines it):
  inside ``transaction.atomic()`` the job is written when the transaction commits (nothing
  on a rollback); ``enqueue`` returns its ``TaskResult`` at once, with the id it will have.
  Arguments are checked before that (JSON, size), so a bad call fails at ``enqueue``; a
  server that cannot be reached at commit raises from the end of the ``atomic`` block.
- Results: the return value (JSON; anything else fails the task) and, for a failure, one
  ``TaskError`` with the exception's class path and traceback (redkit keeps the last
  attempt's error only). redkit records no worker id per attempt: ``worker_ids`` holds one
  empty id per attempt, so that ``attempts`` counts right. Results stay readable for as long
  as the worker's queue keeps finished jobs (``redkit worker --keep-completed``, 1 h).
- Attempts: one by default (``OPTIONS["MAX_ATTEMPTS"]``), as Django's own backends run a
  task once; ``TIMEOUT`` (seconds per attempt, default 300; ``None``: none).

What the worker runs: only the ``@task`` functions of this process's registry, found by
importing each installed app's ``tasks`` module and the modules of ``OPTIONS["MODULES"]``.
A job names its function by a string an attacker may have written (anyone who can write to
the queue); that string is looked up in the registry, never imported.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import math
import os
import secrets
import threading
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import close_old_connections, connections, transaction
from django.utils import timezone
from django.utils.module_loading import module_has_submodule

import redkit
import redkit.sync
from redkit._sync.jobs.queue import job_from_hash as sync_job_from_hash
from redkit.client import connect_settings
from redkit.codec import DEFAULT_MAX_BYTES, dumps, seconds
from redkit.connection import parse_url
from redkit.errors import ConfigurationError, InvalidInput, RedkitError, translate_redis_errors
from redkit.jobs.queue import MAX_JOB_ID_LENGTH, MAX_NAME_LENGTH, job_from_hash
from redkit.jobs.states import JobState
from redkit.jobs.worker import _error_text
from redkit.keys import QUEUE_NAME

try:  # Django >= 6.0
    from django.tasks import (
        TaskContext,
        TaskResult,
        TaskResultStatus,
        default_task_backend,
        task,
        task_backends,
    )
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TaskError
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
    from django.tasks.signals import task_enqueued, task_finished, task_started
except ImportError:  # older Django: the django-tasks backport
    from django_tasks import (
        TaskContext,
        TaskResult,
        TaskResultStatus,
        default_task_backend,
        task,
        task_backends,
    )
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import TaskError
    from django_tasks.exceptions import InvalidTaskError as InvalidTask
    from django_tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch
    from django_tasks.signals import task_enqueued, task_finished, task_started

# Django's names re-exported, from django.tasks or the backport, whichever this Django uses.
__all__ = [
    "InvalidTask",
    "InvalidTaskArguments",
    "RedkitBackend",
    "TaskResultDoesNotExist",
    "TaskResultMismatch",
    "TaskResultStatus",
    "default_task_backend",
    "discover_tasks",
    "task",
    "task_backends",
    "worker_functions",
]

log = logging.getLogger("redkit.django.tasks")

_OPTIONS = frozenset(
    {"NAMESPACE", "ENQUEUE_ON_COMMIT", "DATABASE", "MAX_ATTEMPTS", "TIMEOUT", "MODULES"}
)
_STATUS = {
    JobState.WAITING: TaskResultStatus.READY,
    JobState.DELAYED: TaskResultStatus.READY,
    JobState.RETRYING: TaskResultStatus.READY,
    JobState.ACTIVE: TaskResultStatus.RUNNING,
    JobState.COMPLETED: TaskResultStatus.SUCCESSFUL,
    JobState.FAILED: TaskResultStatus.FAILED,
    JobState.CANCELLED: TaskResultStatus.FAILED,
}
_MAX_JSON_DEPTH = 100


class InvalidTaskArguments(InvalidTask, InvalidInput):  # type: ignore[misc]
    """A task's arguments (or return value) are not JSON: Django requires JSON-serialisable
    arguments, and redkit stores them as JSON. Also a Django ``InvalidTask`` and a redkit
    ``InvalidInput``, so either ``except`` catches it."""


# -- the registry ------------------------------------------------------------------------------

_REGISTRY: dict[str, Any] = {}
"""module_path -> the Task as ``@task`` made it. Bounded by the task functions the code
defines: a Task registers itself when a RedkitBackend validates it (at decoration time)."""
_REGISTRY_LOCK = threading.Lock()


def _register(task: Any) -> None:
    path = task.module_path
    with _REGISTRY_LOCK:
        known = _REGISTRY.get(path)
        # ``task.using(...)`` makes a copy that is validated again: keep the decorated one.
        if known is None or known.func is not task.func:
            _REGISTRY[path] = task


def discover_tasks() -> None:
    """Import the ``tasks`` module of every installed app and the ``OPTIONS["MODULES"]`` of
    every RedkitBackend, so that their ``@task`` functions are registered. Only modules the
    project names are imported: never one named by a job."""
    modules: list[str] = []
    for config in apps.get_app_configs():
        if module_has_submodule(config.module, "tasks"):
            modules.append(f"{config.name}.tasks")
    for alias in getattr(settings, "TASKS", None) or {}:
        backend = task_backends[alias]
        if isinstance(backend, RedkitBackend):
            modules.extend(backend.modules)
    for name in modules:
        importlib.import_module(name)


def _task_for(path: str) -> Any | None:
    task = _REGISTRY.get(path)
    if task is None:
        discover_tasks()
        task = _REGISTRY.get(path)
    return task


# -- JSON -----------------------------------------------------------------------------------------


def _json(value: Any, where: str, depth: int = 0) -> Any:
    """``value`` as plain JSON types (tuples become lists, as Django's own backends make
    them), or InvalidTaskArguments naming where the first non-JSON value is."""
    if depth > _MAX_JSON_DEPTH:
        raise InvalidTaskArguments(f"{where} is nested more than {_MAX_JSON_DEPTH} deep")
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidTaskArguments(f"{where} is {value!r}, which JSON cannot hold")
        return value
    if isinstance(value, list | tuple):
        return [_json(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidTaskArguments(
                    f"{where} has the key {key!r} ({type(key).__name__}): JSON object keys "
                    "are strings"
                )
            out[key] = _json(item, f"{where}[{key!r}]", depth + 1)
        return out
    raise InvalidTaskArguments(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which is not "
        "JSON: pass str, int, float, bool, None, lists and dicts with str keys (e.g. an id "
        "instead of a model instance, an ISO string instead of a datetime)"
    )


# -- the backend --------------------------------------------------------------------------------


def _clock(value: float | None) -> datetime | None:
    if value is None:
        return None
    if settings.USE_TZ:
        return datetime.fromtimestamp(value, tz=UTC)
    return datetime.fromtimestamp(value)


# Django makes a backend object per thread: they share one client per (server, namespace), as
# a redkit.sync.Redkit may be shared by every thread, and one async client per event loop.
# Bounded by the backends the settings configure (times the event loops alive: entries of
# closed loops are dropped when one is added).
_SYNC_CLIENTS: dict[tuple[str | None, str | None], redkit.sync.Redkit] = {}
_ASYNC_CLIENTS: dict[tuple[asyncio.AbstractEventLoop, str | None, str | None], redkit.Redkit] = {}
_CLIENTS_LOCK = threading.Lock()
# The Queue objects of each client: a Queue registers its name (for `redkit jobs stats`) on
# its first enqueue only, so reusing it keeps an enqueue one round trip. Bounded by QUEUES.
_QUEUES: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


class RedkitBackend(BaseTaskBackend):  # type: ignore[misc]  # Django ships no type hints
    """A Django ``TASKS`` backend on redkit's job queue
    (``"BACKEND": "redkit.django.tasks.RedkitBackend"``).

    ``LOCATION``: the server URL (empty: ``REDIS_URL``, else the embedded server).
    ``QUEUES``: the queue names tasks may use (default ``["default"]``). ``OPTIONS`` (all
    optional): ``NAMESPACE`` (redkit's key namespace), ``ENQUEUE_ON_COMMIT`` (default True),
    ``DATABASE`` (whose transactions ``ENQUEUE_ON_COMMIT`` follows, default ``"default"``),
    ``MAX_ATTEMPTS`` (default 1), ``TIMEOUT`` (seconds per attempt, default 300, ``None``:
    none), ``MODULES`` (modules with tasks beyond the installed apps' ``tasks`` modules).
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options = dict(params.get("OPTIONS") or {})
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigurationError(
                f"RedkitBackend does not know the OPTIONS {', '.join(unknown)}; it accepts "
                f"{', '.join(sorted(_OPTIONS))}"
            )
        if not self.queues:
            raise ConfigurationError(
                f"TASKS[{alias!r}]['QUEUES'] is empty: name the queues its tasks may use"
            )
        for name in self.queues:
            try:
                QUEUE_NAME.check(name, "queue name")
            except InvalidInput as exc:
                raise ConfigurationError(f"TASKS[{alias!r}]['QUEUES']: {exc}") from None
        location = params.get("LOCATION") or None
        if location is not None and not isinstance(location, str):
            raise ConfigurationError(f"LOCATION must be a server URL, got {location!r}")
        self._connect: dict[str, Any] = {"url": location, "namespace": options.get("NAMESPACE")}
        # A bad URL or namespace is reported where Django builds the backend.
        connect_settings(**self._connect)
        if location is not None:
            parse_url(location)
        on_commit = options.get("ENQUEUE_ON_COMMIT", True)
        if not isinstance(on_commit, bool):
            raise ConfigurationError(f"ENQUEUE_ON_COMMIT must be True or False, got {on_commit!r}")
        self.enqueue_on_commit = on_commit
        self.database = options.get("DATABASE", "default")
        if on_commit and self.database != "default" and self.database not in settings.DATABASES:
            raise ConfigurationError(
                f"OPTIONS DATABASE {self.database!r} is not in DATABASES (ENQUEUE_ON_COMMIT "
                "follows that database's transactions)"
            )
        attempts = options.get("MAX_ATTEMPTS", 1)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 1000:
            raise ConfigurationError(f"MAX_ATTEMPTS must be an int in 1..1000, got {attempts!r}")
        timeout = options.get("TIMEOUT", 300.0)
        if timeout is not None:
            try:
                seconds(timeout, "TIMEOUT")
            except InvalidInput as exc:
                raise ConfigurationError(str(exc)) from None
        self._queue_options: dict[str, Any] = {"max_attempts": attempts, "timeout": timeout}
        modules = options.get("MODULES", [])
        if isinstance(modules, str) or not all(isinstance(m, str) for m in modules):
            raise ConfigurationError(f"MODULES must be a list of module names, got {modules!r}")
        self.modules: list[str] = list(modules)
        self._key = (location, options.get("NAMESPACE"))

    def __repr__(self) -> str:
        return f"<RedkitBackend {self.alias!r} queues={sorted(self.queues)}>"

    # -- clients -----------------------------------------------------------------------------

    def _sync(self) -> redkit.sync.Redkit:
        rk = _SYNC_CLIENTS.get(self._key)
        if rk is None:
            with _CLIENTS_LOCK:
                rk = _SYNC_CLIENTS.get(self._key)
                if rk is None:
                    rk = _SYNC_CLIENTS[self._key] = redkit.sync.connect(**self._connect)
        return rk

    async def _async(self) -> redkit.Redkit:
        loop = asyncio.get_running_loop()
        key = (loop, *self._key)
        rk = _ASYNC_CLIENTS.get(key)
        if rk is not None:
            return rk
        rk = await redkit.connect(**self._connect)
        other = _ASYNC_CLIENTS.get(key)
        if other is not None:  # another task of this loop connected first
            await rk.close()
            return other
        for old in [k for k in _ASYNC_CLIENTS if k[0].is_closed()]:
            del _ASYNC_CLIENTS[old]
        _ASYNC_CLIENTS[key] = rk
        return rk

    def _queue(self, rk: Any, name: str) -> Any:
        queues = _QUEUES.get(rk)
        if queues is None:
            queues = _QUEUES.setdefault(rk, {})
        queue = queues.get(name)
        if queue is None:
            queue = queues[name] = rk.queue(name, **self._queue_options)
        return queue

    def close(self) -> None:
        """Close the sync client of this backend's server and namespace (at shutdown, or in
        tests); the next call opens a new one."""
        with _CLIENTS_LOCK:
            rk = _SYNC_CLIENTS.pop(self._key, None)
        if rk is not None:
            rk.close()

    async def aclose(self) -> None:
        """Close the running event loop's client of this backend's server and namespace."""
        rk = _ASYNC_CLIENTS.pop((asyncio.get_running_loop(), *self._key), None)
        if rk is not None:
            await rk.close()

    # -- enqueue -----------------------------------------------------------------------------

    def validate_task(self, task: Any) -> None:
        """Django's checks, and the task joins the registry the worker runs from."""
        super().validate_task(task)
        if len(task.module_path) > MAX_NAME_LENGTH:
            raise InvalidTask(
                f"the task's path {task.module_path[:80]!r}... is longer than "
                f"{MAX_NAME_LENGTH} characters"
            )
        _register(task)

    def _prepare(self, task: Any, args: Any, kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self.validate_task(task)
        payload = {"args": _json(list(args), "args"), "kwargs": _json(dict(kwargs), "kwargs")}
        try:
            # Checked here, not when the job is written: that may be at commit time.
            dumps(payload, max_bytes=DEFAULT_MAX_BYTES, what="the task's arguments")
        except InvalidInput as exc:
            raise InvalidTaskArguments(str(exc)) from None
        result = TaskResult(
            task=task,
            id=secrets.token_hex(16),  # 128 random bits, as redkit's own job ids
            status=TaskResultStatus.READY,
            enqueued_at=None,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=payload["args"],
            kwargs=payload["kwargs"],
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        return result, payload

    @staticmethod
    def _delay(task: Any) -> float:
        if task.run_after is None:
            return 0
        run_after = task.run_after
        if timezone.is_naive(run_after):  # USE_TZ = False: local time, as Django means it
            run_after = timezone.make_aware(run_after)
        wait: float = (run_after - timezone.now()).total_seconds()
        return max(0.0, wait)

    def _job_options(self, task: Any, result: Any) -> dict[str, Any]:
        return {"priority": task.priority, "delay": self._delay(task), "job_id": result.id}

    def _enqueued(self, result: Any) -> None:
        object.__setattr__(result, "enqueued_at", timezone.now())
        task_enqueued.send(type(self), task_result=result)

    def _write(self, result: Any, payload: dict[str, Any]) -> None:
        task = result.task
        queue = self._queue(self._sync(), task.queue_name)
        queue.enqueue(task.module_path, payload, **self._job_options(task, result))
        self._enqueued(result)

    def _deferred(self) -> bool:
        """True when the write waits for the current transaction to commit."""
        return self.enqueue_on_commit and connections[self.database].in_atomic_block

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Queue the task (one round trip); inside ``transaction.atomic()`` with
        ``ENQUEUE_ON_COMMIT``, when the transaction commits. Returns its TaskResult."""
        result, payload = self._prepare(task, args, kwargs)
        if self._deferred():
            transaction.on_commit(lambda: self._write(result, payload), using=self.database)
        else:
            self._write(result, payload)
        return result

    async def aenqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """:meth:`enqueue` on the async client (no thread hop)."""
        result, payload = self._prepare(task, args, kwargs)
        if self._deferred():  # only code run by sync_to_async can be in a transaction
            transaction.on_commit(lambda: self._write(result, payload), using=self.database)
            return result
        rk = await self._async()
        queue = self._queue(rk, task.queue_name)
        await queue.enqueue(task.module_path, payload, **self._job_options(task, result))
        self._enqueued(result)
        return result

    # -- results -----------------------------------------------------------------------------

    def _check_id(self, result_id: Any) -> str:
        # An id often comes from a URL: a bad one is "no such result", never a 500.
        if not isinstance(result_id, str) or not 0 < len(result_id) <= MAX_JOB_ID_LENGTH:
            raise TaskResultDoesNotExist(f"no task result {str(result_id)[:80]!r}")
        return result_id

    def get_result(self, result_id: str) -> Any:
        """The task's result as the server has it now (one round trip); raises
        ``TaskResultDoesNotExist`` for an unknown id, or one whose retention ended."""
        result_id = self._check_id(result_id)
        rk = self._sync()
        names = sorted(self.queues)
        queues = [self._queue(rk, name) for name in names]
        with translate_redis_errors(f"get task result {result_id}"):
            pipe = rk.redis.pipeline(transaction=False)
            for queue in queues:
                pipe.hgetall(queue.job_key(result_id))
            replies = pipe.execute()
        for queue, raw in zip(queues, replies, strict=True):
            if raw:
                return self._result(sync_job_from_hash(queue, result_id, raw))
        raise TaskResultDoesNotExist(f"no task result {result_id!r}")

    async def aget_result(self, result_id: str) -> Any:
        """:meth:`get_result` on the async client."""
        result_id = self._check_id(result_id)
        rk = await self._async()
        queues = [self._queue(rk, name) for name in sorted(self.queues)]
        with translate_redis_errors(f"get task result {result_id}"):
            pipe = rk.redis.pipeline(transaction=False)
            for queue in queues:
                pipe.hgetall(queue.job_key(result_id))
            replies = await pipe.execute()
        for queue, raw in zip(queues, replies, strict=True):
            if raw:
                return self._result(job_from_hash(queue, result_id, raw))
        raise TaskResultDoesNotExist(f"no task result {result_id!r}")

    def _result(self, job: Any) -> Any:
        registered = _task_for(job.function)
        payload = job.payload if isinstance(job.payload, dict) else {}
        args, kwargs = payload.get("args"), payload.get("kwargs")
        if registered is None or not isinstance(args, list) or not isinstance(kwargs, dict):
            # A job on the queue that this backend did not write: not a task result.
            raise TaskResultDoesNotExist(
                f"job {job.id} on queue {job.queue!r} runs {job.function[:80]!r}, which is not "
                "a registered task"
            )
        run_after = None
        created, due = job.created_at, job.scheduled_at
        if created is not None and due is not None and due > created:
            run_after = _clock(due)
        try:
            task = registered.using(
                priority=job.priority, queue_name=job.queue, run_after=run_after, backend=self.alias
            )
        except InvalidTask:  # e.g. a priority outside Django's range: not written by a task
            raise TaskResultDoesNotExist(
                f"job {job.id} on queue {job.queue!r} was not enqueued as a task"
            ) from None
        status = _STATUS.get(job.state, TaskResultStatus.FAILED)
        errors = []
        if job.error is not None:
            errors.append(
                TaskError(
                    exception_class_path=_exception_path(job),
                    traceback=job.traceback or job.error,
                )
            )
        result = TaskResult(
            task=task,
            id=job.id,
            status=status,
            enqueued_at=_clock(job.created_at),
            started_at=_clock(job.started_at),
            last_attempted_at=_clock(job.started_at),
            finished_at=_clock(job.finished_at) if job.state.terminal else None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=errors,
            # redkit does not record which worker ran each attempt: one empty id per
            # attempt, so that ``attempts`` (their count) is right.
            worker_ids=[""] * job.attempts,
        )
        if status == TaskResultStatus.SUCCESSFUL:
            object.__setattr__(result, "_return_value", job.return_value)
        return result

    # -- running (in `redkit worker`) ---------------------------------------------------------

    def runner(self, task: Any) -> Callable[..., Any]:
        """The redkit job function that runs ``task``: ``async def`` for an async task (run
        on the worker's loop), else a plain ``def`` (run in the worker's threads, with
        Django's stale database connections closed around it as a request does)."""
        backend = self

        def begin(payload: Any, job: Any) -> tuple[Any, list[Any], dict[str, Any]]:
            if not isinstance(payload, dict):
                raise InvalidTaskArguments(f"job {job.id}: the payload is not a task's")
            args, kwargs = payload.get("args"), payload.get("kwargs")
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise InvalidTaskArguments(f"job {job.id}: the payload is not a task's")
            result = TaskResult(
                task=task.using(queue_name=job.queue, backend=backend.alias),
                id=job.id,
                status=TaskResultStatus.RUNNING,
                enqueued_at=None,
                started_at=timezone.now(),
                last_attempted_at=timezone.now(),
                finished_at=None,
                args=args,
                kwargs=kwargs,
                backend=backend.alias,
                errors=[],
                worker_ids=[""] * job.attempts,
            )
            task_started.send(type(backend), task_result=result)
            if task.takes_context:
                args = [TaskContext(task_result=result), *args]
            return result, args, kwargs

        def failed(result: Any, exc: Exception) -> dict[str, str]:
            kind = type(exc)
            path = f"{kind.__module__}.{kind.__qualname__}"
            object.__setattr__(result, "status", TaskResultStatus.FAILED)
            object.__setattr__(result, "finished_at", timezone.now())
            task_finished.send(type(backend), task_result=result)
            # The exception's class, for TaskError.exception_class_path, with the error text
            # the worker records for it (so a later attempt's other error is not given this
            # class): written by this code only (a job's payload cannot set it).
            return {"exception_class": path, "error": _error_text(exc)}

        def succeeded(result: Any, value: Any) -> Any:
            object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
            object.__setattr__(result, "finished_at", timezone.now())
            object.__setattr__(result, "_return_value", value)
            task_finished.send(type(backend), task_result=result)
            return value

        if inspect.iscoroutinefunction(task.func):

            async def run_async(payload: Any, job: Any) -> Any:
                result, args, kwargs = begin(payload, job)
                try:
                    value = _json(await task.func(*args, **kwargs), "the task's return value")
                except Exception as exc:
                    try:
                        await job.set_progress(failed(result, exc))
                    except RedkitError as lost:
                        log.warning("task %s: its error class was not recorded: %s", job.id, lost)
                    raise
                return succeeded(result, value)

            return run_async

        def run(payload: Any, job: Any) -> Any:
            close_old_connections()
            try:
                result, args, kwargs = begin(payload, job)
                try:
                    value = _json(task.func(*args, **kwargs), "the task's return value")
                except Exception as exc:
                    try:
                        job.set_progress_sync(failed(result, exc))
                    except (RedkitError, TimeoutError) as lost:
                        log.warning("task %s: its error class was not recorded: %s", job.id, lost)
                    raise
                return succeeded(result, value)
            finally:
                close_old_connections()

        return run


def _exception_path(job: Any) -> str:
    progress = job.progress
    if (
        isinstance(progress, dict)
        and isinstance(progress.get("exception_class"), str)
        and progress.get("error") == job.error
    ):
        path: str = progress["exception_class"]
        return path
    # The worker failed the job itself: its lease expired, it timed out, was cancelled, or
    # no worker knew its function.
    if (job.error or "").startswith("timed out"):
        return "redkit.errors.JobTimeout"
    return "redkit.errors.JobFailed"


def worker_functions() -> dict[str, Callable[..., Any]]:
    """The job functions ``redkit worker`` runs: module path -> runner, one for every
    registered ``@task`` of a RedkitBackend (after :func:`discover_tasks`). Sets Django up
    first (``DJANGO_SETTINGS_MODULE`` must name the project's settings)."""
    if not apps.ready:
        if not os.environ.get("DJANGO_SETTINGS_MODULE") and not settings.configured:
            raise ConfigurationError(
                "set DJANGO_SETTINGS_MODULE (e.g. mysite.settings) to run Django tasks: "
                "DJANGO_SETTINGS_MODULE=mysite.settings redkit worker redkit.django.tasks"
            )
        import django

        django.setup()
    discover_tasks()
    out: dict[str, Callable[..., Any]] = {}
    with _REGISTRY_LOCK:
        tasks = dict(_REGISTRY)
    for path, task in tasks.items():
        backend = task_backends[task.backend]
        if isinstance(backend, RedkitBackend):
            out[path] = backend.runner(task)
    if not out:
        raise ConfigurationError(
            "no task of a RedkitBackend found: define them with @task in an installed app's "
            "tasks module, or list their modules in OPTIONS MODULES"
        )
    return out


def __getattr__(name: str) -> Mapping[str, Callable[..., Any]]:
    # `redkit worker redkit.django.tasks` reads the module's `functions`: built on demand,
    # so that importing this module (in settings, in views) sets nothing up.
    if name == "functions":
        return worker_functions()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
