"""Options and helpers shared by the sub-commands."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup, TyperOption

import redkit
from redkit.errors import RedkitError

T = TypeVar("T")

console = Console()
# Error lines are never folded: they are read by people and grep alike.
err_console = Console(stderr=True, soft_wrap=True)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        metavar="URL",
        envvar="REDIS_URL",
        help="Server URL (redis://, rediss://, unix://, redis+cluster://, redis+sentinel://). "
        "Unset: the embedded server of --data-dir.",
        show_default=False,
    ),
]
# Namespace and data directory default to None: then redkit's Settings fill them in from the
# environment *and* the .env file, as they do for REDIS_URL and for the library itself.
NamespaceOption = Annotated[
    str | None,
    typer.Option(
        "--namespace",
        "-n",
        metavar="NAME",
        envvar="REDKIT_NAMESPACE",
        help="Key namespace (REDKIT_NAMESPACE, also from .env; default rk).",
        show_default=False,
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        metavar="DIR",
        envvar="REDKIT_DATA_DIR",
        help="Embedded server's data directory (REDKIT_DATA_DIR, also from .env; default "
        ".redkit/data).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _settings() -> redkit.Settings:
    try:
        return redkit.Settings()
    except ValueError as exc:  # pydantic's ValidationError: a bad REDKIT_* variable
        err_console.print(f"[red]error:[/red] invalid redkit settings: {exc}", highlight=False)
        raise typer.Exit(1) from None


def resolve_namespace(namespace: str | None) -> str:
    """The namespace a command works in: the option, else REDKIT_NAMESPACE (env or .env)."""
    return namespace if namespace is not None else _settings().namespace


def resolve_data_dir(data_dir: Path | None) -> Path:
    """The embedded server's data directory: the option, else REDKIT_DATA_DIR (env or .env)."""
    return data_dir if data_dir is not None else _settings().data_dir


def run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; a RedkitError becomes one red line and exit code 1, not a traceback."""
    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except RedkitError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None


def connected(
    url: str | None,
    namespace: str | None,
    data_dir: Path | None,
    action: Callable[[redkit.Redkit], Awaitable[T]],
) -> T:
    """Connect, run ``action(rk)``, close; a RedkitError is one red line and exit code 1.

    ``None`` for namespace or data directory: from the environment or .env (Settings)."""

    async def go() -> T:
        async with redkit.connect(url, namespace, data_dir=data_dir) as rk:
            return await action(rk)

    return run(go)


def echo_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout."""
    typer.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def plain_flags(command: Any, ctx: Any) -> None:
    """Show flags in help as ``--json``, not ``--json <bool>``: typer's rich help prints a
    type for every option, flags included, and an empty metavar prints none. Walks the
    sub-commands too (get_help_option makes each command's help option once and keeps it)."""
    params: list[Any] = list(command.params)
    help_option = command.get_help_option(ctx)
    if help_option is not None:
        params.append(help_option)
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            plain_flags(sub, ctx)


class RedkitGroup(TyperGroup):
    """The root command: its help and every sub-command's show flags without a type."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if isinstance(command, TyperCommand | TyperGroup):
            plain_flags(command, ctx)
        return command

    def get_params(self, ctx: Any) -> Any:
        plain_flags(self, ctx)
        return super().get_params(ctx)
