"""``redkit server``: the embedded Valkey in the foreground."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.panel import Panel

from redkit._version import __version__
from redkit.cli.common import DataDirOption, console, err_console, resolve_data_dir
from redkit.embedded import EmbeddedValkey, StopReport
from redkit.errors import EmbeddedServerError


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT/SIGTERM set the event instead of killing the process; the old handlers come
    back on exit. Installed before anything is printed: a script that reads the URL line and
    sends SIGINT at once must get the orderly stop, not a KeyboardInterrupt (exit 130)."""
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield done
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _describe_stop(data_dir: Path, report: StopReport | None) -> str:
    if report is None:
        return f"no embedded server runs in {data_dir}"
    text = (
        f"stopped the embedded server of {report.data_dir} (pid {report.pid}, port {report.port})"
    )
    if not report.users:
        return text + "; no process was using it"
    pids = ", ".join(str(pid) for pid in report.users)
    return (
        f"{text}; {len(report.users)} process(es) were still using it (pid {pids}; "
        f"{report.clients} client connections in all). They follow the directory's server: "
        "their next call starts it again (or finds the one another process started), on a "
        "new port; stop them too to keep it down"
    )


def server(
    data_dir: DataDirOption = None,
    port: Annotated[
        int | None,
        typer.Option("--port", metavar="N", help="Port for a new server (default: a free one)."),
    ] = None,
    stop: Annotated[
        bool, typer.Option("--stop", help="Stop the data directory's server, whoever runs it.")
    ] = False,
) -> None:
    """Run the embedded Valkey server in the foreground until Ctrl-C (AOF persistence on).

    If the data directory's server is already running (started by another redkit process),
    this shares it instead of starting a second one.
    """
    directory = resolve_data_dir(data_dir)
    if stop:
        console.print(_describe_stop(directory, EmbeddedValkey.stop_directory(directory)))
        return
    with _stop_on_signals() as done:
        try:
            handle = EmbeddedValkey.acquire(directory, port=port)
        except EmbeddedServerError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
        try:
            outcome = _serve(handle, done)
        finally:
            handle.release()
        console.print(outcome)


def _serve(handle: EmbeddedValkey, done: threading.Event) -> str:
    """Wait for a signal or the server's end; return the line to print once released."""
    how = (
        f"started in {handle.start_seconds * 1000:.0f} ms"
        if handle.started_here
        else "already running: shared"
    )
    console.print(
        Panel.fit(
            f"[bold]redkit {__version__}[/bold] embedded Valkey ({how})\n\n"
            f"  URL       [bold green]{handle.url}[/bold green]\n"
            f"  data dir  {handle.data_dir}\n"
            f"  pid       {handle.pid}\n\n"
            f"  export REDIS_URL={handle.url}\n\n"
            "Ctrl-C stops it (unless another process still uses it).",
            title="redkit server",
        )
    )
    # The URL alone on the last line, for scripts that read it.
    typer.echo(handle.url)
    while not done.wait(0.5):
        exit_code = handle.exit_code()
        if exit_code is None:
            continue
        if exit_code == 0:
            # SHUTDOWN (`redkit server --stop`, another client) or SIGTERM: an orderly stop
            # that someone asked for, not a failure of this command.
            return (
                f"the server (pid {handle.pid}) was shut down from outside (redkit server "
                "--stop, SHUTDOWN or SIGTERM); its data stays in the data directory"
            )
        err_console.print(
            f"[red]error:[/red] the server exited with code {exit_code}; its log ends with:"
        )
        err_console.print(handle.log_tail(), highlight=False)
        raise typer.Exit(1)
    return "stopped" if handle.started_here else "released"
