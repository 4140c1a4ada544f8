"""Options and helpers shared by the sub-commands."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

import redkit
from redkit.errors import RedkitError

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="REDIS_URL",
        help="Server URL (redis://, rediss://, unix://, redis+cluster://, redis+sentinel://). "
        "Unset: the embedded server of --data-dir.",
        show_default=False,
    ),
]
NamespaceOption = Annotated[
    str, typer.Option("--namespace", "-n", envvar="REDKIT_NAMESPACE", help="Key namespace.")
]
DataDirOption = Annotated[
    Path,
    typer.Option("--data-dir", envvar="REDKIT_DATA_DIR", help="Embedded server's data directory."),
]


def run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; a RedkitError becomes one red line and exit code 1, not a traceback."""
    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except RedkitError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None


def connected(
    url: str | None,
    namespace: str,
    data_dir: Path,
    action: Callable[[redkit.Redkit], Awaitable[T]],
) -> T:
    """Connect, run ``action(rk)``, close; a RedkitError is one red line and exit code 1."""

    async def go() -> T:
        async with redkit.connect(url, namespace, data_dir=data_dir) as rk:
            return await action(rk)

    return run(go)
