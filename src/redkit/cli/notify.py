"""``redkit notify``: publish an event, follow channels live, read a channel's history."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer

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
from redkit.notify import Event
from redkit.notify.events import has_glob

app = typer.Typer(
    name="notify",
    help="Publish notifications, follow channels live, read history.",
    no_args_is_help=True,
    add_completion=False,
)


HistoryOption = Annotated[
    int, typer.Option("--history", help="Events kept per channel (as the app's bus keeps).")
]


def _line(event: Event, as_json: bool) -> str:
    if as_json:
        body = {"type": event.type, "id": event.id, "channel": event.channel}
        return orjson.dumps({**body, "time": event.time, "data": event.data}).decode()
    data = orjson.dumps(event.data).decode()
    if event.is_gap:
        return f"{event.id}  {event.channel}  GAP {data}"
    return f"{event.id}  {event.channel}  {data}"


@app.command("publish")
def publish(
    channel: Annotated[str, typer.Argument(help="Channel name, e.g. deployment:status.")],
    data: Annotated[str, typer.Argument(help="The event's data as JSON, e.g. '{\"a\": 1}'.")],
    history: HistoryOption = 100,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"id", "channel"} as JSON.')
    ] = False,
) -> None:
    """Publish one event (JSON data); prints its event id."""
    try:
        value: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        err_console.print(f"[red]error:[/red] DATA is not valid JSON: {exc}", highlight=False)
        raise typer.Exit(1) from None

    async def send(rk: redkit.Redkit) -> str:
        return await rk.notifications(history=history).publish(channel, value)

    event_id = connected(url, namespace, data_dir, send)
    if as_json:
        typer.echo(orjson.dumps({"id": event_id, "channel": channel}).decode())
    else:
        typer.echo(event_id)


@app.command("history")
def history(
    channel: Annotated[str, typer.Argument(help="Channel name.")],
    count: Annotated[int, typer.Option("--count", "-c", help="How many, newest last.")] = 20,
    after: Annotated[
        str | None, typer.Option("--after", help="Only events after this event id.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """The channel's kept events, oldest first."""

    async def fetch(rk: redkit.Redkit) -> list[Event]:
        return await rk.notifications().history(channel, count=count, after=after)

    events = connected(url, namespace, data_dir, fetch)
    if not events and not as_json:
        console.print(
            f"no events kept for channel {channel!r} in namespace {resolve_namespace(namespace)!r}"
        )
    for event in events:
        typer.echo(_line(event, as_json))


@app.command("tail")
def tail(
    pattern: Annotated[
        str, typer.Argument(help="A channel name, or a glob pattern such as 'deployment:*'.")
    ],
    count: Annotated[
        int | None, typer.Option("--count", "-c", help="Stop after this many events.")
    ] = None,
    last_event_id: Annotated[
        str | None,
        typer.Option("--last-event-id", help="First replay what came after this id (cursor)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Print events as they are published, like ``tail -f`` (Ctrl-C to stop).

    On a Cluster, a glob pattern only sees events of publishers that use
    ``cluster_patterns=True`` (sharded pub/sub has no patterns).
    """
    if count is not None and count < 1:
        raise typer.BadParameter("--count must be at least 1")

    async def follow(rk: redkit.Redkit) -> None:
        bus = rk.notifications(cluster_patterns=True)
        glob = has_glob(pattern)
        sub = bus.subscribe(
            *(() if glob else (pattern,)),
            patterns=[pattern] if glob else [],
            last_event_id=last_event_id,
        )
        seen = 0
        async with sub:
            err_console.print(f"following {pattern!r} in namespace {rk.namespace!r}")
            async for event in sub:
                typer.echo(_line(event, as_json))
                seen += event.type == "event"
                if count is not None and seen >= count:
                    return

    try:
        connected(url, namespace, data_dir, follow)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
