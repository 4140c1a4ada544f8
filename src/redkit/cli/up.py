"""``redkit up``: the whole platform (or, with ``--role``, one part of it) in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from redkit._version import __version__
from redkit.cli.common import console, err_console
from redkit.errors import RedkitError

ROLE_NAMES = ("gateway", "auth", "projects", "worker")


def up(
    role: Annotated[
        str | None,
        typer.Option(
            "--role",
            help="Run one part only (gateway, auth, projects, worker) against REDIS_URL and "
            "DATABASE_URL, as on a machine of its own.",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        int, typer.Option("--port", help="The gateway's port (with --role: that part's port).")
    ] = 8000,
    host: Annotated[
        str, typer.Option("--host", help="The gateway's address (services stay on loopback).")
    ] = "127.0.0.1",
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            envvar="REDIS_URL",
            help="An existing Redis/Valkey (an admin user) instead of the embedded one.",
            show_default=False,
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="DATABASE_URL",
            help="An existing PostgreSQL (a superuser, or CREATEDB + CREATEROLE) instead of the "
            "embedded one.",
            show_default=False,
        ),
    ] = None,
    smtp_url: Annotated[
        str | None,
        typer.Option(
            "--smtp-url",
            envvar="REDKIT_SMTP_URL",
            help="A real relay (smtp://user:pass@host:port, smtps://...) instead of the sink.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes.")] = 1,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            envvar="REDKIT_PLATFORM_DIR",
            help="Where the embedded servers keep their data, secrets and logs.",
        ),
    ] = Path(".redkit"),
) -> None:
    """Run the platform: Valkey, PostgreSQL, an SMTP sink, the gateway, auth, projects and
    workers, each service its own process; Ctrl-C or SIGTERM stops everything."""
    try:
        if role is not None:
            _run_role(role, port, host)
            return
        from redkit.platform.supervisor import UpOptions, run

        options = UpOptions(
            data_dir=data_dir,
            port=port,
            host=host,
            redis_url=redis_url,
            database_url=database_url,
            smtp_url=smtp_url,
            workers=workers,
        )
        console.print(f"[bold]redkit {__version__}[/bold]: starting the platform ...")
        run(options, on_ready=_print_table)
        console.print("stopped")
    except RedkitError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    except ImportError as exc:
        err_console.print(
            f"[red]error:[/red] the platform needs its extra: pip install 'redkit[web,platform]'"
            f" ({exc})",
            highlight=False,
        )
        raise typer.Exit(1) from None


def _run_role(role: str, port: int, host: str) -> None:
    from redkit.platform.config import PlatformConfig
    from redkit.platform.services import ROLES, serve

    if role not in ROLES:
        err_console.print(f"[red]error:[/red] --role is one of {', '.join(ROLES)}", highlight=False)
        raise typer.Exit(2)
    # Services other than the gateway listen on loopback only: the gateway is the public face.
    serve(role, port, PlatformConfig.from_env(), host=host if role == "gateway" else "127.0.0.1")


def _print_table(parts: list[object]) -> None:
    table = Table(title="redkit up", title_justify="left")
    table.add_column("part", style="bold", no_wrap=True)
    table.add_column("URL", style="green", no_wrap=True, overflow="fold")
    table.add_column("pid", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    for part in parts:
        table.add_row(
            str(getattr(part, "name", "")),
            str(getattr(part, "url", "")),
            str(getattr(part, "pid", "") or ""),
            str(getattr(part, "note", "")),
        )
    # Piped (a log, a test), rich assumes 80 columns and would cut the URLs.
    out = console if console.is_terminal else Console(width=120)
    out.print(table)
    gateway = next((p for p in parts if getattr(p, "name", "") == "gateway"), None)
    if gateway is not None:
        url = str(getattr(gateway, "url", "")).rstrip("/")
        out.print(
            f"Open [bold]{url}/[/bold] (the dashboard: sign in as the admin), the API under "
            f"{url}/api and {url}/auth, live events at {url}/events. Ctrl-C stops everything.",
            highlight=False,
        )
