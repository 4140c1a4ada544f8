"""``redkit limits``: look at and reset the rate-limit state of one key.

``show`` answers with the :class:`~redkit.ratelimit.Decision` of each limiter that has state
for the key (limit, remaining, reset, retry after), read with ``peek`` (nothing consumed).
A limiter's settings come from its name when it has the default one
(``sliding_window:100/60s``) or a tier's (``premium:2/1s``, or a tier of the default table
such as ``anonymous``), and its algorithm from the shape of its state; for other names pass
``--limit`` and ``--window``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

import redkit
from redkit.cli.common import DataDirOption, NamespaceOption, UrlOption, connected, console
from redkit.codec import seconds as as_seconds
from redkit.errors import InvalidInput, translate_redis_errors
from redkit.ratelimit import Algorithm, Decision, RateLimiter
from redkit.ratelimit.policy import DEFAULT_TIERS

app = typer.Typer(help="Rate limits: show or reset the state of a key.", no_args_is_help=True)

KeyArgument = Annotated[str, typer.Argument(help="The limited key, e.g. user:42 or ip:1.2.3.4")]


# A limiter name that carries its settings: "<algorithm or tier>:<limit>/<window>[:b<burst>]".
_SETTINGS = re.compile(
    r"(?:(?P<head>[^:]*):)?(?P<limit>\d+)/(?P<window>\d+(?:\.\d+)?)(?P<unit>ms|s)"
    r"(?::b(?P<burst>\d+))?"
)


def _algorithm_of(kind: str, fields: dict[str, str]) -> Algorithm | None:
    """Which algorithm wrote a state, from its shape (see check.lua)."""
    if kind == "zset":
        return Algorithm.SLIDING_LOG
    if kind == "string":
        return Algorithm.GCRA
    if kind == "hash":
        return Algorithm.SLIDING_WINDOW if "c" in fields else Algorithm.FIXED_WINDOW
    return None


def _settings(
    name: str, limit: int | None, window: float | None
) -> tuple[int, float, int | None, str] | None:
    """(limit, window, burst, where the settings came from) of a stored limiter name."""
    found = _SETTINGS.fullmatch(name)
    if found:
        scale = 1000 if found["unit"] == "ms" else 1
        burst = int(found["burst"]) if found["burst"] else None
        return int(found["limit"]), float(found["window"]) / scale, burst, "name"
    pairs = DEFAULT_TIERS.get(name)
    if limit is None and window is None and pairs and len(pairs) == 1:
        tier_limit, tier_window = pairs[0]
        return tier_limit, as_seconds(tier_window), None, "default tier table"
    if limit is not None and window is not None:
        return limit, window, None, "--limit/--window"
    return None


async def _decision(
    rk: redkit.Redkit, key: str, item: dict[str, Any], limit: int | None, window: float | None
) -> tuple[Decision | None, str]:
    state = item["state"] if isinstance(item["state"], dict) else {}
    algorithm = _algorithm_of(item["type"], state)
    settings = _settings(item["limiter"], limit, window)
    if algorithm is None or settings is None:
        return None, "settings unknown: pass --limit and --window"
    capacity, seconds, burst, source = settings
    try:
        limiter = RateLimiter(
            rk,
            capacity,
            seconds,
            algorithm,
            burst if algorithm is Algorithm.GCRA else None,
            name=item["limiter"],
            fail="raise",
            timeout=5,
        )
    except InvalidInput as exc:
        return None, f"settings unusable: {exc}"
    return await limiter.peek(key), f"{algorithm.value}, settings from the {source}"


def _decision_json(decision: Decision | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    return {
        "allowed": decision.allowed,
        "limit": decision.limit,
        "remaining": decision.remaining,
        "reset_after": round(decision.reset_after, 3),
        "retry_after": round(decision.retry_after, 3),
        "window": decision.window,
    }


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
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
    limit: Annotated[
        int | None, typer.Option(help="The limit of limiters whose name does not say it.")
    ] = None,
    window: Annotated[
        float | None, typer.Option(help="Their window, in seconds (with --limit).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every limiter's decision for KEY now (limit, remaining, reset, retry after)."""
    if (limit is None) != (window is None):
        console.print("[red]error:[/] --limit and --window go together")
        raise typer.Exit(2)

    async def go(rk: redkit.Redkit) -> list[dict[str, Any]]:
        states = await _states(rk, key)
        for item in states:
            decision, note = await _decision(rk, key, item, limit, window)
            item["decision"] = _decision_json(decision)
            item["note"] = note
        return states

    states = connected(url, namespace, data_dir, go)
    if as_json:
        typer.echo(orjson.dumps(states, option=orjson.OPT_INDENT_2).decode())
        return
    if not states:
        console.print(f"no rate-limit state for {key!r} (never limited, or expired)")
        return
    table = Table(title=f"rate limits of {key}")
    for column in ("limiter", "limit", "remaining", "reset in", "retry after", "expires in"):
        table.add_column(column, overflow="fold")
    notes = []
    for item in states:
        expires = f"{item['expires_in']:.1f}s" if item["expires_in"] else "-"
        d = item["decision"]
        if d is None:
            table.add_row(item["limiter"], "?", "?", "?", "?", expires)
        else:
            retry = f"{d['retry_after']:.1f}s" if not d["allowed"] else "-"
            table.add_row(
                item["limiter"],
                f"{d['limit']}/{_window_text(d['window'])}",
                str(d["remaining"]),
                f"{d['reset_after']:.1f}s",
                retry,
                expires,
            )
        notes.append(f"{item['limiter']}: {item['note']}")
    console.print(table)
    for note in notes:
        console.print(f"[dim]{note}[/]", highlight=False)


def _window_text(window: float) -> str:
    return f"{window:g}s" if window >= 1 else f"{window * 1000:g}ms"


@app.command("reset")
def reset(
    key: KeyArgument,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
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
