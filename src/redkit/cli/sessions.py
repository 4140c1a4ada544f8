"""``redkit sessions``: see a user's live sessions, end one of them, end them all."""

from __future__ import annotations

import datetime
from typing import Annotated

import orjson
import typer
from rich.table import Table

import redkit
from redkit.cli.common import DataDirOption, NamespaceOption, UrlOption, connected, console
from redkit.sessions import SessionInfo

app = typer.Typer(
    name="sessions",
    help="Sessions: list a user's live sessions, end one, sign a user out everywhere.",
    no_args_is_help=True,
)

UserArgument = Annotated[str, typer.Argument(help="The user ID.", show_default=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
StoreOption = Annotated[
    str,
    typer.Option(
        "--store",
        "-s",
        help="The session store's name (rk.sessions(name=...)); stores are kept apart.",
    ),
]


def _when(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@app.command("list")
def list_sessions(
    user: UserArgument,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
    store: StoreOption = "default",
    as_json: JsonOption = False,
) -> None:
    """The live sessions of USER (ID prefix, IP, user agent, created, last seen, expires)."""

    async def fetch(rk: redkit.Redkit) -> list[SessionInfo]:
        return await rk.sessions(name=store).list(user)

    sessions = connected(url, namespace, data_dir, fetch)
    if as_json:
        rows = [info.as_dict() for info in sessions]
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    where = "" if store == "default" else f" in store {store!r}"
    table = Table(title=f"sessions of {user}{where}: {len(sessions)}", title_justify="left")
    for column in ("id prefix", "ip", "user agent", "created", "last seen", "expires"):
        table.add_column(column)
    for info in sessions:
        table.add_row(
            info.id_prefix + "…",
            info.ip or "-",
            info.user_agent or "-",
            _when(info.created_at),
            _when(info.last_seen_at),
            _when(info.expires_at),
        )
    console.print(table)


@app.command("revoke")
def revoke(
    user: UserArgument,
    prefix: Annotated[
        str,
        typer.Argument(
            help="The session's ID prefix as `list` shows it (4 to 8 characters; one that "
            "starts with '-' goes after `--`: `redkit sessions revoke -- USER -Ab3`).",
            show_default=False,
        ),
    ],
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
    store: StoreOption = "default",
    as_json: JsonOption = False,
) -> None:
    """End the one session of USER whose ID starts with PREFIX (only USER's sessions are
    searched; a prefix that names several ends none)."""

    async def end(rk: redkit.Redkit) -> SessionInfo:
        return await rk.sessions(name=store).revoke_prefix(user, prefix)

    info = connected(url, namespace, data_dir, end)
    if as_json:
        typer.echo(orjson.dumps({"store": store, "revoked": info.as_dict()}).decode())
        return
    where = "" if store == "default" else f" in store {store!r}"
    console.print(
        f"revoked session {info.id_prefix}… of {user}{where} "
        f"({info.user_agent or 'unknown agent'}, {info.ip or 'no IP'})"
    )


@app.command("revoke-all")
def revoke_all(
    user: UserArgument,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
    store: StoreOption = "default",
    as_json: JsonOption = False,
) -> None:
    """End every session of USER in one store (and drop their cached permissions),
    atomically."""

    async def revoke(rk: redkit.Redkit) -> int:
        return await rk.sessions(name=store).revoke_all(user)

    ended = connected(url, namespace, data_dir, revoke)
    if as_json:
        typer.echo(orjson.dumps({"user": user, "store": store, "revoked": ended}).decode())
        return
    where = "" if store == "default" else f" in store {store!r}"
    console.print(f"revoked {ended} session{'s' if ended != 1 else ''} of {user}{where}")
