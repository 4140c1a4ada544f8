"""``redkit cache list``, ``redkit cache stats`` and ``redkit cache invalidate TAG...``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

import redkit
from redkit.cache import CacheStats, list_caches
from redkit.cli.common import (
    DataDirOption,
    JsonOption,
    NamespaceOption,
    UrlOption,
    connected,
    console,
    echo_json,
    err_console,
    resolve_namespace,
)

app = typer.Typer(
    name="cache",
    help="List, inspect and invalidate caches.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

NameOption = Annotated[
    str,
    typer.Option(
        "--name", metavar="NAME", help="The cache's name (rk.cache(name=...)).", show_default=True
    ),
]
ShardsOption = Annotated[
    int | None,
    typer.Option(
        "--shards",
        metavar="N",
        help="The cache's shard count, if the application set one (default: 16 on a "
        "Cluster, 1 otherwise).",
        show_default=False,
    ),
]


def _ratio(stats: CacheStats) -> str:
    return f"{stats.as_dict()['hit_ratio']:.1%}"


@app.command("list")
def list_(
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """The namespace's caches (those that have counted a lookup) and their stats."""

    async def fetch(rk: redkit.Redkit) -> list[tuple[str, CacheStats]]:
        names = await list_caches(rk)
        return [(name, await rk.cache(name=name).stats()) for name in names]

    found = connected(url, namespace, data_dir, fetch)
    if as_json:
        echo_json([{"name": name, **stats.as_dict()} for name, stats in found])
        return
    where = resolve_namespace(namespace)
    if not found:
        console.print(f"no cache has counted a lookup in namespace {where!r} yet")
        return
    table = Table(title=f"caches in {where!r}", title_justify="left")
    for column in ("name", "hits", "misses", "hit ratio", "stale", "recomputes"):
        table.add_column(column, justify="left" if column == "name" else "right")
    for name, s in found:
        table.add_row(
            name, f"{s.hits:,}", f"{s.misses:,}", _ratio(s), f"{s.stale:,}", f"{s.recomputes:,}"
        )
    console.print(table)


@app.command("stats")
def stats(
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
    name: NameOption = "default",
    shards: ShardsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Hits, misses, stale serves, recomputes and early refreshes (all processes)."""

    async def fetch(rk: redkit.Redkit) -> tuple[CacheStats, list[str]]:
        return await rk.cache(name=name, shards=shards).stats(), await list_caches(rk)

    result, known = connected(url, namespace, data_dir, fetch)
    if name not in known:
        # Zeros alone would read as "an idle cache"; say that no such cache has counted.
        others = f"known caches: {', '.join(known)}" if known else "no cache has counted yet"
        err_console.print(
            f"[yellow]note:[/yellow] no cache named {name!r} has counted a lookup in "
            f"namespace {resolve_namespace(namespace)!r} ({others}; see redkit cache list)",
            highlight=False,
        )
    if as_json:
        echo_json(result.as_dict())
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
    tags: Annotated[
        list[str], typer.Argument(metavar="TAG...", help="Tags whose entries to delete.")
    ],
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
    name: NameOption = "default",
    shards: ShardsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete every entry stored under any of the TAGS (never KEYS or SCAN)."""

    async def go(rk: redkit.Redkit) -> int:
        return await rk.cache(name=name, shards=shards).invalidate(*tags)

    count = connected(url, namespace, data_dir, go)
    if as_json:
        echo_json({"cache": name, "tags": tags, "invalidated": count})
        return
    console.print(f"invalidated {count:,} entr{'y' if count == 1 else 'ies'}")
