"""``redkit info``: what server this is, and what the namespace holds."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer
from rich.table import Table

import redkit
from redkit.cli.common import DataDirOption, NamespaceOption, UrlOption, connected, console
from redkit.client import ServerInfo


def info(
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Server version, mode, memory and the number of keys in the namespace."""

    async def fetch(rk: redkit.Redkit) -> ServerInfo:
        return await rk.server_info()

    result = connected(url, namespace, data_dir, fetch)
    if as_json:
        typer.echo(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title="redkit info", show_header=False, title_justify="left")
    table.add_column("field", style="bold cyan")
    table.add_column("value")
    table.add_row("url", result.url)
    table.add_row("server", f"{result.server} {result.version}")
    table.add_row(
        "mode", result.mode + (f" ({result.nodes} primaries)" if result.nodes > 1 else "")
    )
    table.add_row("memory", result.used_memory_human)
    table.add_row("namespace", result.namespace)
    table.add_row("keys in namespace", f"{result.keys_in_namespace:,}")
    if result.embedded:
        table.add_row("embedded data dir", str(result.data_dir))
    console.print(table)
