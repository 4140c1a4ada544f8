"""``redkit limits``: look at and reset the rate-limit state of one key."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

import redkit
from redkit.cli.common import DataDirOption, NamespaceOption, UrlOption, connected, console
from redkit.errors import translate_redis_errors

app = typer.Typer(help="Rate limits: show or reset the state of a key.", no_args_is_help=True)

KeyArgument = Annotated[str, typer.Argument(help="The limited key, e.g. user:42 or ip:1.2.3.4")]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


async def _states(rk: redkit.Redkit, key: str) -> list[dict[str, Any]]:
    """Every limiter's state for ``key``: its keys share the key's hash tag, so SCAN one slot."""
    prefix = rk.keys.group("rl", key).key("")
    found: list[dict[str, Any]] = []
    with translate_redis_errors("limits show"):
        async for raw in rk.redis.scan_iter(match=_glob_escape(prefix) + "*", count=500):
            name = _text(raw)
            kind = _text(await rk.redis.type(name))
            ttl_ms = await rk.redis.pttl(name)
            if kind == "hash":
                fields = await rk.redis.hgetall(name)
                value: Any = {_text(k): _text(v) for k, v in fields.items()}
            elif kind == "zset":
                value = {"units in window": await rk.redis.zcard(name)}
            else:
                raw_value = await rk.redis.get(name)
                value = _text(raw_value) if raw_value else None
            found.append(
                {
                    "limiter": name[len(prefix) :],
                    "type": kind,
                    "state": value,
                    "expires_in": ttl_ms / 1000 if ttl_ms > 0 else None,
                    "redis_key": name,
                }
            )
    return sorted(found, key=lambda item: str(item["limiter"]))


@app.command("show")
def show(
    key: KeyArgument,
    url: UrlOption = None,
    namespace: NamespaceOption = "rk",
    data_dir: DataDirOption = redkit.Settings.model_fields["data_dir"].default,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every limiter's stored state for KEY (counts, window, expiry)."""

    async def go(rk: redkit.Redkit) -> list[dict[str, Any]]:
        return await _states(rk, key)

    states = connected(url, namespace, data_dir, go)
    if as_json:
        typer.echo(orjson.dumps(states, option=orjson.OPT_INDENT_2).decode())
        return
    if not states:
        console.print(f"no rate-limit state for {key!r} (never limited, or expired)")
        return
    table = Table(title=f"rate limits of {key}")
    for column in ("limiter", "type", "state", "expires in"):
        table.add_column(column)
    for item in states:
        expires = f"{item['expires_in']:.1f}s" if item["expires_in"] else "-"
        table.add_row(item["limiter"], item["type"], str(item["state"]), expires)
    console.print(table)


@app.command("reset")
def reset(
    key: KeyArgument,
    url: UrlOption = None,
    namespace: NamespaceOption = "rk",
    data_dir: DataDirOption = redkit.Settings.model_fields["data_dir"].default,
) -> None:
    """Forget KEY's usage for every limiter (the next request starts fresh)."""

    async def go(rk: redkit.Redkit) -> int:
        states = await _states(rk, key)
        if not states:
            return 0
        with translate_redis_errors("limits reset"):
            return int(await rk.redis.unlink(*(s["redis_key"] for s in states)))

    removed = connected(url, namespace, data_dir, go)
    console.print(f"reset {removed} limiter state(s) of {key!r}")
