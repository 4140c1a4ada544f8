"""``redkit``: the root command; each sub-command lives in its own module."""

from __future__ import annotations

from typing import Annotated

import typer

from redkit._version import __version__
from redkit.cli import cache, info, jobs, limits, locks, notify, server, sessions, up
from redkit.cli.common import RedkitGroup

app = typer.Typer(
    name="redkit",
    cls=RedkitGroup,
    help="redkit: sessions, cache, rate limits, notifications, locks and jobs on Redis/Valkey.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("server")(server.server)
app.command("up")(up.up)
app.command("info")(info.info)
app.command("worker")(jobs.worker_command)
app.add_typer(cache.app, name="cache")
app.add_typer(jobs.app, name="jobs")
app.add_typer(limits.app, name="limits")
app.add_typer(locks.app, name="locks")
app.add_typer(notify.app, name="notify")
app.add_typer(sessions.app, name="sessions")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"redkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """redkit: sessions, cache, rate limits, notifications, locks and jobs on Redis/Valkey."""


def main() -> None:
    app()
