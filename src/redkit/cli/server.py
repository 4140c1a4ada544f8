"""``redkit server``: the embedded Valkey in the foreground."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated

import typer
from rich.panel import Panel

from redkit._version import __version__
from redkit.cli.common import DataDirOption, console, err_console
from redkit.embedded import EmbeddedValkey
from redkit.errors import EmbeddedServerError
from redkit.settings import Settings


def server(
    data_dir: DataDirOption = Settings.model_fields["data_dir"].default,
    port: Annotated[
        int | None, typer.Option("--port", help="Port for a new server (default: a free one).")
    ] = None,
    stop: Annotated[
        bool, typer.Option("--stop", help="Stop the data directory's server, whoever runs it.")
    ] = False,
) -> None:
    """Run the embedded Valkey server in the foreground until Ctrl-C (AOF persistence on).

    If the data directory's server is already running (started by another redkit process),
    this shares it instead of starting a second one.
    """
    if stop:
        stopped = EmbeddedValkey.stop_directory(data_dir)
        console.print("stopped" if stopped else f"no embedded server runs in {data_dir}")
        return
    try:
        handle = EmbeddedValkey.acquire(data_dir, port=port)
    except EmbeddedServerError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None

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

    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not done.wait(0.5):
            if handle.process is not None and not handle.process.running():
                err_console.print("[red]error:[/red] the server exited; its log ends with:")
                err_console.print(handle.process.log_tail(), highlight=False)
                raise typer.Exit(1)
    finally:
        handle.release()
        console.print("stopped" if handle.started_here else "released")
