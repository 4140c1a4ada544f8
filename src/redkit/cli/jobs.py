"""``redkit jobs stats | list STATE | show ID | retry ID | cancel ID | schedules`` and
``redkit worker``."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from types import ModuleType
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

import redkit
from redkit.cli.common import (
    DataDirOption,
    JsonOption,
    NamespaceOption,
    UrlOption,
    connected,
    console,
    echo_json,
    err_console,
    resolve_namespace,
    run,
)
from redkit.errors import InvalidInput
from redkit.jobs import (
    Job,
    JobState,
    QueueStats,
    Schedule,
    ScheduleInfo,
    Worker,
    find_job_queues,
    list_queues,
    list_schedules,
    list_workers,
)
from redkit.jobs.supervisor import Supervisor, parse_processes

app = typer.Typer(
    name="jobs",
    help="Inspect job queues and schedules; retry and cancel jobs.",
    no_args_is_help=True,
    add_completion=False,
)

QueueOption = Annotated[str, typer.Option("--queue", "-q", metavar="NAME", help="Queue name.")]
FindQueueOption = Annotated[
    str | None,
    typer.Option(
        "--queue",
        "-q",
        metavar="NAME",
        help="The job's queue (default: found by its id among the namespace's queues).",
        show_default=False,
    ),
]
_STATES = ", ".join(s.value for s in JobState if s is not JobState.REMOVED)


def _when(value: float | None) -> str:
    if value is None:
        return ""
    return datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _job_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "queue": job.queue,
        "function": job.function,
        "state": job.state.value,
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "timeout": job.timeout,
        "payload": job.payload,
        "result": job.return_value,
        "progress": job.progress,
        "error": job.error,
        "traceback": job.traceback,
        "created_at": job.created_at,
        "scheduled_at": job.scheduled_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(1)


async def _queue_of(rk: redkit.Redkit, job_id: str, queue: str | None) -> str:
    """The queue that holds ``job_id``: ``queue`` if given, else found by id (the job's
    hash lives under its queue's key prefix, so each known queue is asked, in one round
    trip). InvalidInput, saying what to do, if no queue or several hold it."""
    if queue is not None:
        return queue
    found = await find_job_queues(rk, job_id)
    if len(found) == 1:
        return found[0]
    if not found:
        known = await list_queues(rk)
        where = f"queues: {', '.join(known)}" if known else "it has no queue yet"
        raise InvalidInput(
            f"no job {job_id!r} on any queue of namespace {rk.namespace!r} ({where}); "
            "it may have been trimmed after its retention"
        )
    raise InvalidInput(
        f"job id {job_id!r} is on several queues ({', '.join(found)}): pass -q QUEUE"
    )


@app.command("stats")
def stats(
    queue: Annotated[
        list[str] | None,
        typer.Option(
            "--queue", "-q", metavar="NAME", help="Queue name (repeat; default: every queue)."
        ),
    ] = None,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Jobs by state, per queue (delayed includes retrying jobs)."""

    async def fetch(rk: redkit.Redkit) -> list[QueueStats]:
        names = queue or await list_queues(rk)
        return [await rk.queue(name).stats() for name in names]

    found = connected(url, namespace, data_dir, fetch)
    if as_json:
        echo_json([s.as_dict() for s in found])
        return
    where = resolve_namespace(namespace)
    if not found:
        console.print(f"no job queue in namespace {where!r} yet")
        return
    table = Table(title=f"job queues in {where!r}", title_justify="left")
    columns = ("queue", "waiting", "delayed", "active", "completed", "failed", "cancelled")
    for column in (*columns, "paused"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for s in found:
        table.add_row(
            s.queue,
            str(s.waiting),
            str(s.delayed),
            str(s.active),
            str(s.completed),
            str(s.failed),
            str(s.cancelled),
            "yes" if s.paused else "",
        )
    console.print(table)


@app.command("workers")
def workers(
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """One line per live worker process (each child of `redkit worker --processes N` has its
    own): host, pid, supervisor, queues, jobs running and done, last heartbeat."""
    found = connected(url, namespace, data_dir, list_workers)
    if as_json:
        echo_json([dataclasses.asdict(w) for w in found])
        return
    where = resolve_namespace(namespace)
    if not found:
        console.print(f"no live worker in namespace {where!r}")
        return
    table = Table(title=f"workers in {where!r}", title_justify="left")
    columns = ("worker", "host", "pid", "supervisor:child", "queues")
    for column in (*columns, "running", "completed", "failed", "up"):
        table.add_column(column, justify="left" if column in columns else "right")
    now = time.time()
    for w in found:
        child = "-"
        if w.supervisor:
            child = f"{w.supervisor}:{w.index}"
            if w.restarts:
                child += f" ({w.restarts} restart{'s' if w.restarts > 1 else ''})"
        table.add_row(
            w.id[:8],
            w.host,
            str(w.pid),
            child,
            ",".join(w.queues),
            f"{w.running}/{w.concurrency}",
            str(w.completed),
            str(w.failed),
            f"{max(0.0, now - w.started):.0f} s" if w.started else "?",
        )
    console.print(table)


def _jobs_table(state: str, queue: str, found: list[Job], width: int) -> Table:
    """The jobs of one state, fitted to ``width`` columns: the id is never cut (it is what
    the other commands take); narrower terminals drop the columns that matter least for
    this state, and long text folds onto more lines instead of ending in an ellipsis."""
    columns: list[str] = ["id", "function"]
    if state == JobState.DELAYED:  # the delayed set holds retrying jobs too
        columns.append("state")
    if state == JobState.WAITING:
        columns.append("priority")
    columns.append("attempts")
    if width >= 100:
        columns.append("created" if state in (JobState.WAITING, JobState.DELAYED) else "finished")
    if state in (JobState.FAILED, JobState.CANCELLED, JobState.DELAYED):
        columns.append("error")
    table = Table(title=f"{state} jobs on {queue!r}", title_justify="left")
    for column in columns:
        table.add_column(
            column,
            no_wrap=column in ("id", "attempts", "priority", "created", "finished"),
            overflow="fold",
            min_width=len(column),
            justify="right" if column in ("priority", "attempts") else "left",
        )
    for job in found:
        cells = {
            "id": job.id,
            "function": job.function,
            "state": job.state.value,
            "priority": str(job.priority),
            "attempts": f"{job.attempts}/{job.max_attempts}",
            "created": _when(job.created_at),
            "finished": _when(job.finished_at),
            "error": (job.error or "")[:200],
        }
        table.add_row(*(cells[c] for c in columns))
    return table


@app.command("list")
def list_(
    state: Annotated[str, typer.Argument(metavar="STATE", help=f"One of: {_STATES}.")],
    queue: QueueOption = "default",
    offset: Annotated[int, typer.Option(metavar="N", help="Skip this many.")] = 0,
    limit: Annotated[int, typer.Option(metavar="N", help="Show at most this many (1-1000).")] = 50,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Jobs in one state (finished ones newest first)."""

    async def fetch(rk: redkit.Redkit) -> list[Job]:
        newest = state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
        return await rk.queue(queue).jobs(state, offset, limit, newest_first=newest)

    found = connected(url, namespace, data_dir, fetch)
    if as_json:
        echo_json([_job_dict(j) for j in found])
        return
    if not found:
        console.print(f"no {state} job on queue {queue!r}")
        return
    console.print(_jobs_table(state, queue, found, console.width))


@app.command("show")
def show(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job's id.")],
    queue: FindQueueOption = None,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Everything about one job, its error and traceback included."""

    async def fetch(rk: redkit.Redkit) -> tuple[str, Job | None]:
        name = await _queue_of(rk, job_id, queue)
        return name, await rk.queue(name).get(job_id)

    name, job = connected(url, namespace, data_dir, fetch)
    if job is None:
        raise _fail(f"no job {job_id!r} on queue {name!r}")
    data = _job_dict(job)
    if as_json:
        echo_json(data)
        return
    table = Table(title=f"job {job_id}", title_justify="left", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for name, value in data.items():
        if name.endswith("_at"):
            text = _when(value)
        elif name in ("payload", "result", "progress"):
            text = orjson.dumps(value).decode()
        else:
            text = "" if value is None else str(value)
        table.add_row(name, text)
    console.print(table)


@app.command("retry")
def retry(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The failed or cancelled job's id.")],
    queue: FindQueueOption = None,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Queue a failed (or cancelled) job again, its attempts back to zero."""

    async def go(rk: redkit.Redkit) -> tuple[str, bool, JobState | None]:
        name = await _queue_of(rk, job_id, queue)
        q = rk.queue(name)
        moved = await q.retry(job_id)
        job = None if moved else await q.get(job_id)
        return name, moved, None if job is None else job.state

    name, moved, state = connected(url, namespace, data_dir, go)
    if as_json:
        echo_json({"id": job_id, "queue": name, "retried": moved, "state": state})
    elif moved:
        console.print(f"job {job_id} on queue {name!r} is waiting again")
    if not moved:
        now = f" (it is {state.value})" if state is not None else ""
        raise _fail(f"job {job_id} on queue {name!r} is not failed or cancelled{now}")


@app.command("cancel")
def cancel(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job's id.")],
    queue: FindQueueOption = None,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a pending job now, or an active one at its worker's next heartbeat."""

    async def go(rk: redkit.Redkit) -> tuple[str, JobState | None]:
        name = await _queue_of(rk, job_id, queue)
        return name, await rk.queue(name).cancel(job_id)

    name, before = connected(url, namespace, data_dir, go)
    if before is None:
        raise _fail(f"no job {job_id!r} on queue {name!r}")
    if before is JobState.ACTIVE:
        outcome, text = "requested", "is running: its worker stops it at its next heartbeat"
    elif before.pending:
        outcome, text = "cancelled", f"cancelled (it was {before.value})"
    else:
        outcome, text = "finished", f"had already finished ({before.value}); nothing to cancel"
    if as_json:
        echo_json({"id": job_id, "queue": name, "before": before.value, "outcome": outcome})
    else:
        console.print(f"job {job_id} on queue {name!r} {text}")


@app.command("schedules")
def schedules(
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cron schedules that a running worker (or schedule.run()) announced lately."""

    async def fetch(rk: redkit.Redkit) -> list[ScheduleInfo]:
        return await list_schedules(rk)

    found = connected(url, namespace, data_dir, fetch)
    if as_json:
        echo_json([s.as_dict() for s in found])
        return
    where = resolve_namespace(namespace)
    if not found:
        console.print(
            f"no schedule runs in namespace {where!r}: schedules run inside a worker "
            "(redkit worker ... --schedules module:attr, or rk.worker(..., schedules=[...])) "
            "or with await schedule.run()"
        )
        return
    table = Table(title=f"schedules in {where!r}", title_justify="left")
    for column in ("name", "cron", "tz", "function", "queue", "next run (UTC)", "runner"):
        table.add_column(column, overflow="fold")
    for s in found:
        table.add_row(s.name, s.cron, s.tz, s.function, s.queue, _when(s.next_run), s.runner)
    console.print(table)


def _import(target: str, default: str) -> tuple[ModuleType, str]:
    module_name, _, attribute = target.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(f"cannot import {module_name!r} (from {target!r}): {exc}") from exc
    return module, attribute or default


def load_functions(target: str) -> dict[str, Callable[..., Any]]:
    """``module:attribute`` (default attribute ``functions``): a mapping of name -> function,
    or a list of functions (named by ``__name__``). The current directory is importable."""
    module, attribute = _import(target, "functions")
    module_name = module.__name__
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise InvalidInput(
            f"module {module_name!r} has no {attribute!r}; point the worker at "
            "a dict of name -> function, e.g. myapp.tasks:functions"
        ) from None
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list | tuple) and all(callable(f) for f in value):
        return {f.__name__: f for f in value}
    raise InvalidInput(f"{target} must be a dict of name -> function or a list of functions")


_SCHEDULES_HELP = (
    "a list of schedules as mappings of rk.schedule's arguments, e.g. "
    '[{"cron": "0 3 * * *", "function": "cleanup", "queue": "maintenance"}], or a function '
    "that takes the connected Redkit and returns Schedules (rk.schedule(...))"
)


async def load_schedules(target: str, rk: redkit.Redkit) -> list[Schedule]:
    """``module:attribute`` (default attribute ``schedules``): a list of mappings of
    :meth:`Redkit.schedule <redkit.Redkit.schedule>`'s arguments (``cron``, ``function``,
    ``payload``, ``queue``, ``name``, ``tz``, ``priority``, ...), or a function (plain or
    async) that takes the connected ``rk`` and returns :class:`~redkit.jobs.Schedule`
    objects. A module cannot hold Schedules themselves: a Schedule needs the connection,
    which exists only once the worker runs."""
    module, attribute = _import(target, "schedules")
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise InvalidInput(
            f"module {module.__name__!r} has no {attribute!r}; point --schedules at "
            + _SCHEDULES_HELP
        ) from None
    if callable(value):
        made = value(rk)
        if inspect.isawaitable(made):
            made = await made
        items: Iterable[Any] = made
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise InvalidInput(f"{target} must be {_SCHEDULES_HELP}")
    out: list[Schedule] = []
    for item in items:
        if isinstance(item, Schedule):
            out.append(item)
        elif isinstance(item, Mapping):
            options = dict(item)
            try:
                cron, function = options.pop("cron"), options.pop("function")
            except KeyError as exc:
                raise InvalidInput(f"a schedule in {target} has no {exc.args[0]!r}") from None
            try:
                out.append(rk.schedule(cron, function, options.pop("payload", None), **options))
            except TypeError as exc:
                raise InvalidInput(f"bad schedule {item!r} in {target}: {exc}") from None
        else:
            raise InvalidInput(f"{target} holds {item!r}: it must be {_SCHEDULES_HELP}")
    return out


def _exit_before_start(signum: int, frame: object) -> None:
    raise SystemExit(0)


def worker_command(
    target: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:ATTR", help="module:attribute naming a dict of name -> job function."
        ),
    ],
    queue: Annotated[
        list[str] | None,
        typer.Option(
            "--queue", "-q", metavar="NAME", help="Queue to serve (repeat, in priority order)."
        ),
    ] = None,
    schedules: Annotated[
        str | None,
        typer.Option(
            "--schedules",
            "-s",
            metavar="MODULE:ATTR",
            help="Also run these cron schedules (each tick enqueued once, however many "
            "workers run them): module:attribute naming a list of rk.schedule() argument "
            "dicts, or a function of rk returning Schedules.",
            show_default=False,
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", metavar="N", help="Jobs at once.")
    ] = 10,
    lease: Annotated[
        float, typer.Option(metavar="SECONDS", help="Seconds a job stays leased per heartbeat.")
    ] = 30,
    grace: Annotated[
        float, typer.Option(metavar="SECONDS", help="Seconds running jobs get on shutdown.")
    ] = 30,
    keep_completed: Annotated[
        int, typer.Option(metavar="N", help="Completed jobs kept per queue (results readable).")
    ] = 1000,
    processes: Annotated[
        str,
        typer.Option(
            "--processes",
            "-p",
            metavar="N|auto",
            help="Worker processes under one supervisor (auto: one per CPU); each has its "
            "own event loop, connections and --concurrency; a crashed one is restarted.",
        ),
    ] = "1",
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Run jobs (and, with --schedules, cron schedules) until SIGTERM/SIGINT, then finish
    (or hand back) the running ones."""
    names = queue or ["default"]
    # A SIGTERM before the worker is up (importing, connecting) means "stop" as much as one
    # during its run: nothing is claimed yet, so exit cleanly (0), not killed by the signal.
    # Worker.run (or the supervisor) installs its own handler once it runs.
    signal.signal(signal.SIGTERM, _exit_before_start)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        n_processes = parse_processes(processes)
    except InvalidInput as exc:
        raise _fail(str(exc)) from None
    if n_processes > 1:
        argv = [sys.executable, "-m", "redkit.cli", "worker", target]
        for name in names:
            argv += ["--queue", name]
        if schedules:
            argv += ["--schedules", schedules]
        argv += ["--concurrency", str(concurrency), "--lease", str(lease), "--grace", str(grace)]
        argv += ["--keep-completed", str(keep_completed)]
        if url is not None:
            argv += ["--url", url]
        if namespace is not None:
            argv += ["--namespace", namespace]
        if data_dir is not None:
            argv += ["--data-dir", str(data_dir)]
        err_console.print(
            f"supervisor {os.getpid()}: {n_processes} worker processes", highlight=False
        )
        raise typer.Exit(Supervisor(argv, n_processes, grace).run())

    async def main() -> None:
        functions = load_functions(target)
        async with redkit.connect(url, namespace, data_dir=data_dir) as rk:
            crons = await load_schedules(schedules, rk) if schedules else []
            queues = [rk.queue(name, keep_completed=keep_completed) for name in names]
            worker = Worker(
                rk,
                queues=queues,
                functions=functions,
                concurrency=concurrency,
                lease=lease,
                grace=grace,
                schedules=crons,
            )
            err_console.print(
                f"worker {worker.id[:8]} on {rk.url} namespace {rk.namespace!r}: queues "
                f"{', '.join(names)}; functions {', '.join(sorted(functions))}; "
                f"concurrency {concurrency}",
                highlight=False,
            )
            for cron in crons:
                served = cron.queue.name in names
                err_console.print(
                    f"schedule {cron.name!r}: {cron.cron.text} ({cron.tz}) -> "
                    f"{cron.function} on queue {cron.queue.name!r}"
                    + ("" if served else " [yellow](a queue this worker does not serve)[/]"),
                    highlight=False,
                )
            await worker.run()
            s = worker.stats
            enqueued = sum(c.enqueued for c in crons)
            err_console.print(
                f"worker {worker.id[:8]} stopped: {s.completed} completed, {s.failed} failed "
                f"attempts, {s.lost} lost leases"
                + (f", {enqueued} scheduled ticks enqueued" if crons else ""),
                highlight=False,
            )

    run(main)


app.command("worker")(worker_command)
