"""``redkit locks``: see who holds what, and free a lock whose holder is stuck."""

from __future__ import annotations

from typing import Annotated

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
    resolve_namespace,
)
from redkit.locks import LockInfo, force_release, list_locks

app = typer.Typer(
    name="locks",
    help="Inspect locks, read-write locks and semaphores; free a stuck lock.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("list")
def list_(
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """Held locks, read-write locks and semaphores of the namespace (walks it with SCAN: an
    admin's view)."""

    async def fetch(rk: redkit.Redkit) -> list[LockInfo]:
        return await list_locks(rk)

    found = connected(url, namespace, data_dir, fetch)
    if as_json:
        rows = [info.__dict__ for info in found]
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if not found:
        console.print(f"no lock or semaphore is held in namespace {resolve_namespace(namespace)!r}")
        return
    table = Table(title=f"locks in {resolve_namespace(namespace)!r}", title_justify="left")
    for column in ("kind", "name", "holders", "expires in", "fencing token", "waiters"):
        table.add_column(column, justify="left" if column in ("kind", "name") else "right")
    for info in found:
        table.add_row(
            info.kind if info.mode is None else f"{info.kind} ({info.mode})",
            info.name,
            str(info.holders),
            f"{info.ttl:.1f} s",
            "" if info.fencing_token is None else str(info.fencing_token),
            str(info.waiters),
        )
    console.print(table)


@app.command("release")
def release(
    name: Annotated[str, typer.Argument(help="The lock's name, as given to rk.lock(NAME).")],
    force: Annotated[
        bool, typer.Option("--force", help="Required: the holder may still be running.")
    ] = False,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Free a lock (rk.lock) whoever holds it; its first waiter takes it at once.

    Semaphore permits and read-write leases are not freed here: they end with their leases.
    """
    if not force:
        err_console.print(
            f"[red]error:[/red] releasing lock {name!r} takes it from a holder that may still "
            "be running; its work is then unprotected (it learns of the loss at its next "
            "renewal). Pass --force if you are sure.",
            highlight=False,
        )
        raise typer.Exit(1)

    async def free(rk: redkit.Redkit) -> bool:
        return await force_release(rk, name)

    if connected(url, namespace, data_dir, free):
        console.print(f"released lock {name!r}")
    else:
        console.print(f"lock {name!r} was not held")
