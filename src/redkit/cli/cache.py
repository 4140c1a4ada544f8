"""``redkit cache stats`` and ``redkit cache invalidate TAG...``."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer
from rich.table import Table

import redkit
from redkit.cache import CacheStats
from redkit.cli.common import (
    DataDirOption,
    NamespaceOption,
    UrlOption,
    connected,
    console,
    resolve_namespace,
)

app = typer.Typer(
    name="cache",
    help="Inspect and invalidate the cache.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

NameOption = Annotated[
    str, typer.Option("--name", help="The cache's name (rk.cache(name=...)).", show_default=True)
]
ShardsOption = Annotated[
    int | None,
    typer.Option(
        "--shards",
        help="The cache's shard count, if the application set one (default: 16 on a "
        "Cluster, 1 otherwise).",
        show_default=False,
    ),
]


@app.command("stats")
def stats(
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
    name: NameOption = "default",
    shards: ShardsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Hits, misses, stale serves, recomputes and early refreshes (all processes)."""

    async def fetch(rk: redkit.Redkit) -> CacheStats:
        return await rk.cache(name=name, shards=shards).stats()

    result = connected(url, namespace, data_dir, fetch)
    if as_json:
        typer.echo(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title=f"cache {name!r} in {resolve_namespace(namespace)!r}", show_header=False)
    table.add_column("counter", style="bold cyan")
    table.add_column("value", justify="right")
    for field, value in result.as_dict().items():
        text = f"{value:.1%}" if field == "hit_ratio" else f"{int(value):,}"
        table.add_row(field.replace("_", " "), text)
    console.print(table)


@app.command("invalidate")
def invalidate(
    tags: Annotated[list[str], typer.Argument(help="Tags whose entries to delete.")],
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
    name: NameOption = "default",
    shards: ShardsOption = None,
) -> None:
    """Delete every entry stored under any of the TAGS (never KEYS or SCAN)."""

    async def go(rk: redkit.Redkit) -> int:
        return await rk.cache(name=name, shards=shards).invalidate(*tags)

    count = connected(url, namespace, data_dir, go)
    console.print(f"invalidated {count:,} entr{'y' if count == 1 else 'ies'}")
