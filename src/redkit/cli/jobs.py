"""``redkit jobs stats | list STATE | show ID | retry ID | cancel ID`` and ``redkit worker``."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

import redkit
from redkit.cli.common import (
    DataDirOption,
    NamespaceOption,
    UrlOption,
    connected,
    console,
    err_console,
    run,
)
from redkit.errors import InvalidInput
from redkit.jobs import Job, JobState, QueueStats, Worker, list_queues

app = typer.Typer(
    name="jobs",
    help="Inspect job queues; retry and cancel jobs.",
    no_args_is_help=True,
    add_completion=False,
)

_DATA_DIR = redkit.Settings.model_fields["data_dir"].default

QueueOption = Annotated[str, typer.Option("--queue", "-q", help="Queue name.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


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


def _echo_json(value: Any) -> None:
    typer.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


@app.command("stats")
def stats(
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", "-q", help="Queue name (repeat; default: every queue)."),
    ] = None,
    url: UrlOption = None,
    namespace: NamespaceOption = "rk",
    data_dir: DataDirOption = _DATA_DIR,
    as_json: JsonOption = False,
) -> None:
    """Jobs by state, per queue."""

    async def fetch(rk: redkit.Redkit) -> list[QueueStats]:
        names = queue or await list_queues(rk)
        return [await rk.queue(name).stats() for name in names]

    found = connected(url, namespace, data_dir, fetch)
    if as_json:
        _echo_json([s.as_dict() for s in found])
        return
    if not found:
        console.print(f"no job queue in namespace {namespace!r} yet")
        return
    table = Table(title=f"job queues in {namespace!r}", title_justify="left")
    columns = ("queue", "waiting", "delayed", "active", "completed", "failed", "paused")
    for column in columns:
        table.add_column(column, justify="left" if column == "queue" else "right")
    for s in found:
        table.add_row(
            s.queue,
            str(s.waiting),
            str(s.delayed),
            str(s.active),
            str(s.completed),
            str(s.failed),
            "yes" if s.paused else "",
        )
    console.print(table)


@app.command("list")
def list_(
    state: Annotated[str, typer.Argument(help="waiting, delayed, active, completed or failed.")],
    queue: QueueOption = "default",
    offset: Annotated[int, typer.Option(help="Skip this many.")] = 0,
    limit: Annotated[int, typer.Option(help="Show at most this many (1-1000).")] = 50,
    url: UrlOption = None,
    namespace: NamespaceOption = "rk",
    data_dir: DataDirOption = _DATA_DIR,
    as_json: JsonOption = False,
) -> None:
    """Jobs in one state (failed ones newest first)."""

    async def fetch(rk: redkit.Redkit) -> list[Job]:
        newest = state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
        return await rk.queue(queue).jobs(state, offset, limit, newest_first=newest)

    found = connected(url, namespace, data_dir, fetch)
    if as_json:
        _echo_json([_job_dict(j) for j in found])
        return
    if not found:
        console.print(f"no {state} job on queue {queue!r}")
        return
    table = Table(title=f"{state} jobs on {queue!r}", title_justify="left")
    table.add_column("id", no_wrap=True)
    for column in ("function", "state", "priority", "attempts", "created", "error"):
        table.add_column(column, justify="right" if column in ("priority", "attempts") else "left")
    for job in found:
        table.add_row(
            job.id,
            job.function,
            job.state.value,
            str(job.priority),
            f"{job.attempts}/{job.max_attempts}",
            _when(job.created_at),
            (job.error or "")[:60],
        )
    console.print(table)


@app.command("show")
def show(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    queue: QueueOption = "default",
    url: UrlOption = None,
    namespace: NamespaceOption = "rk",
    data_dir: DataDirOption = _DATA_DIR,
    as_json: JsonOption = False,
) -> None:
    """Everything about one job, its error and traceback included."""

    async def fetch(rk: redkit.Redkit) -> Job | None:
        return await rk.queue(queue).get(job_id)

    job = connected(url, namespace, data_dir, fetch)
    if job is None:
        err_console.print(f"[red]error:[/red] no job {job_id!r} on queue {queue!r}")
        raise typer.Exit(1)
    data = _job_dict(job)
    if as_json:
        _echo_json(data)
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
    job_id: Annotated[str, typer.Argument(help="The failed or cancelled job's id.")],
    queue: QueueOption = "default",
    url: UrlOption = None,
    namespace: NamespaceOption = "rk",
    data_dir: DataDirOption = _DATA_DIR,
) -> None:
    """Queue a failed (or cancelled) job again, its attempts back to zero."""

    async def go(rk: redkit.Redkit) -> bool:
        return await rk.queue(queue).retry(job_id)

    if connected(url, namespace, data_dir, go):
        console.print(f"job {job_id} is waiting again")
    else:
        err_console.print(f"[red]error:[/red] job {job_id} is not failed or cancelled")
        raise typer.Exit(1)


@app.command("cancel")
def cancel(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    queue: QueueOption = "default",
    url: UrlOption = None,
    namespace: NamespaceOption = "rk",
    data_dir: DataDirOption = _DATA_DIR,
) -> None:
    """Cancel a pending job now, or an active one at its worker's next heartbeat."""

    async def go(rk: redkit.Redkit) -> JobState | None:
        return await rk.queue(queue).cancel(job_id)

    before = connected(url, namespace, data_dir, go)
    if before is None:
        err_console.print(f"[red]error:[/red] no job {job_id!r} on queue {queue!r}")
        raise typer.Exit(1)
    if before is JobState.ACTIVE:
        console.print(f"job {job_id} is running: its worker stops it at its next heartbeat")
    elif before.pending:
        console.print(f"job {job_id} cancelled (it was {before.value})")
    else:
        console.print(f"job {job_id} had already finished ({before.value}); nothing to cancel")


def load_functions(target: str) -> dict[str, Callable[..., Any]]:
    """``module:attribute`` (default attribute ``functions``): a mapping of name -> function,
    or a list of functions (named by ``__name__``). The current directory is importable."""
    module_name, _, attribute = target.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(f"cannot import {module_name!r} (from {target!r}): {exc}") from exc
    try:
        value = getattr(module, attribute or "functions")
    except AttributeError:
        raise InvalidInput(
            f"module {module_name!r} has no {attribute or 'functions'!r}; point the worker at "
            "a dict of name -> function, e.g. myapp.tasks:functions"
        ) from None
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list | tuple) and all(callable(f) for f in value):
        return {f.__name__: f for f in value}
    raise InvalidInput(f"{target} must be a dict of name -> function or a list of functions")


def worker_command(
    target: Annotated[
        str, typer.Argument(help="module:attribute naming a dict of name -> job function.")
    ],
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", "-q", help="Queue to serve (repeat, in priority order)."),
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Jobs at once.")] = 10,
    lease: Annotated[float, typer.Option(help="Seconds a job stays leased per heartbeat.")] = 30,
    grace: Annotated[float, typer.Option(help="Seconds running jobs get on shutdown.")] = 30,
    keep_completed: Annotated[
        int, typer.Option(help="Completed jobs kept per queue (results readable).")
    ] = 1000,
    url: UrlOption = None,
    namespace: NamespaceOption = "rk",
    data_dir: DataDirOption = _DATA_DIR,
) -> None:
    """Run jobs until SIGTERM/SIGINT, then finish (or hand back) the running ones."""
    names = queue or ["default"]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def main() -> None:
        functions = load_functions(target)
        async with redkit.connect(url, namespace, data_dir=data_dir) as rk:
            queues = [rk.queue(name, keep_completed=keep_completed) for name in names]
            worker = Worker(
                rk,
                queues=queues,
                functions=functions,
                concurrency=concurrency,
                lease=lease,
                grace=grace,
            )
            err_console.print(
                f"worker {worker.id[:8]} on {rk.url} namespace {namespace!r}: queues "
                f"{', '.join(names)}; functions {', '.join(sorted(functions))}; "
                f"concurrency {concurrency}",
                highlight=False,
            )
            await worker.run()
            s = worker.stats
            err_console.print(
                f"worker {worker.id[:8]} stopped: {s.completed} completed, {s.failed} failed "
                f"attempts, {s.lost} lost leases",
                highlight=False,
            )

    run(main)


app.command("worker")(worker_command)
