"""Lua scripts: one ``.lua`` file per atomic operation, beside the module that runs it.

A module declares its scripts once, at import::

    SCRIPTS = ScriptSet(__package__)        # reads every *.lua file of the package
    await SCRIPTS["acquire"](rk.redis, keys=[...], args=[...])

A call is one round trip: ``EVALSHA``. When the server answers ``NOSCRIPT`` (it restarted,
failed over, or ran ``SCRIPT FLUSH``; on a Cluster, the node that owns the keys has not seen the
script yet) the call is re-sent once as ``EVAL``, which runs the script and caches it on that
node, so the next call is an ``EVALSHA`` again. No separate ``SCRIPT LOAD`` round trip, and no
node-by-node loading on a Cluster: each node learns a script the first time it needs it. Calls
that meet ``NOSCRIPT`` while one of them is sending the source wait for it and retry by SHA,
so a burst after a restart sends the source once, not once per call. (Through
:class:`~redkit.pipelining.AutoPipeline`, which ``rk.run`` uses on standalone servers, the
same storm costs one ``SCRIPT LOAD`` and the waiting calls travel in batches.)

Every script starts with a comment naming its KEYS, ARGV and return value; a test checks it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import weakref
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any, TypeAlias

import redis.exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from redkit.errors import LOST_ERRORS, InvalidInput, ScriptError, connection_lost
from redkit.keys import check_same_slot

__all__ = ["AnyRedis", "Script", "ScriptSet", "check_header"]

AnyRedis: TypeAlias = "Redis | RedisCluster"
ScriptArg: TypeAlias = str | bytes | int | float


class Script:
    """One Lua script, identified by the SHA1 of its source."""

    __slots__ = ("_passed", "_sending", "_sent", "name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        # Per client, the EVAL under way after a NOSCRIPT, which other callers wait for
        # (weak: a closed client leaves nothing behind; at most one entry per live client).
        self._sending: weakref.WeakKeyDictionary[Any, asyncio.Future[None]] = (
            weakref.WeakKeyDictionary()
        )
        # How many such EVALs have ended: a NOSCRIPT for an EVALSHA sent before the last one
        # ended is stale (the script is back), and needs no EVAL of its own.
        self._sent = 0
        # The last tuple of keys that passed check_keys. A tuple cannot change, and holding
        # it keeps its id from being reused, so the same tuple again needs no second check:
        # primitives build their keys once and pass that tuple on every call.
        self._passed: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        return f"<Script {self.name} sha={self.sha[:12]}>"

    def check_keys(self, keys: Sequence[str]) -> None:
        """Raise InvalidInput without a key, CrossSlotKeys for keys in different slots."""
        if keys is self._passed:
            return
        if not keys:
            raise InvalidInput(f"script {self.name}: at least one key is required")
        if len(keys) > 1:
            check_same_slot(keys)
        if type(keys) is tuple:
            self._passed = keys

    async def __call__(
        self,
        client: AnyRedis,
        keys: Sequence[str],
        args: Sequence[ScriptArg] = (),
    ) -> Any:
        """Run the script atomically on the node that owns ``keys``; one round trip.

        ``keys`` must share a hash slot (see :mod:`redkit.keys`); a script needs at least one
        key so that a Cluster knows where to run it.
        """
        self.check_keys(keys)
        sent = self._sent
        # try/except rather than a context manager: this is every primitive's hot path.
        try:
            try:
                return await client.evalsha(self.sha, len(keys), *keys, *args)
            except redis_errors.NoScriptError:
                return await self._after_noscript(client, keys, args, sent)
        except LOST_ERRORS as exc:
            raise connection_lost(f"script {self.name}", exc) from exc
        except redis_errors.ResponseError as exc:
            raise ScriptError(f"script {self.name} failed in the server: {exc}") from exc

    async def _after_noscript(
        self, client: AnyRedis, keys: Sequence[str], args: Sequence[ScriptArg], sent: int
    ) -> Any:
        """The server did not know the script when the ``EVALSHA`` sent after ``sent``
        source sends ran: one caller per client sends the source (``EVAL`` both runs it and
        caches it on that node for the next ``EVALSHA``); the callers that meet NOSCRIPT
        meanwhile, or whose NOSCRIPT predates a send that has ended, retry by SHA."""
        if self._sent == sent:
            sending = self._sending.get(client)
            if sending is None:
                sending = asyncio.get_running_loop().create_future()
                self._sending[client] = sending
                try:
                    return await client.eval(self.source, len(keys), *keys, *args)
                finally:
                    self._sent += 1
                    if self._sending.get(client) is sending:
                        del self._sending[client]
                    sending.set_result(None)
            await sending
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            # Flushed again, or (on a Cluster) another node's keys: send the source.
            return await client.eval(self.source, len(keys), *keys, *args)


def check_header(name: str, source: str) -> None:
    """Raise InvalidInput unless ``source`` opens with a comment naming KEYS, ARGV, Returns."""
    header: list[str] = []
    for line in source.splitlines():
        if not line.startswith("--"):
            break
        header.append(line.lower())
    text = "\n".join(header)
    missing = [word for word in ("keys", "argv", "returns") if word not in text]
    if missing:
        raise InvalidInput(
            f"{name}.lua must open with a comment that documents its {', '.join(missing)} "
            "(lines like '-- KEYS[1]: ...', '-- ARGV[1]: ...', '-- Returns: ...')"
        )


_INCLUDE = re.compile(r"^-- @include (_\w+)$", re.MULTILINE)


def _expand(name: str, source: str, files: dict[str, str]) -> str:
    """``source`` with each ``-- @include _piece`` line replaced by ``_piece.lua``.

    Lua scripts cannot import one another, and steps that several operations share (a lock
    hand-over, say) must not be written twice; a piece is pasted in where the line stands,
    so it can come after a script's fast path. One level deep: a piece includes nothing.
    """

    def paste(match: re.Match[str]) -> str:
        piece = files.get(match.group(1))
        if piece is None:
            raise InvalidInput(f"{name}.lua includes {match.group(1)}.lua, which is not there")
        if _INCLUDE.search(piece):
            raise InvalidInput(f"{match.group(1)}.lua includes another piece: keep it flat")
        return piece.rstrip("\n")

    return _INCLUDE.sub(paste, source)


class ScriptSet:
    """The scripts of one package, read from its ``*.lua`` files once, at import."""

    def __init__(self, package: str | None) -> None:
        if not package:
            raise InvalidInput("ScriptSet needs the package name (pass __package__)")
        self.package = package
        self._scripts: dict[str, Script] = {}
        files = {
            entry.name[: -len(".lua")]: entry.read_text(encoding="utf-8")
            for entry in resources.files(package).iterdir()
            if entry.name.endswith(".lua") and entry.is_file()
        }
        for name, source in files.items():
            if name.startswith("_"):
                continue  # a piece for -- @include, not a script
            check_header(name, source)
            self._scripts[name] = Script(name, _expand(name, source, files))

    def __getitem__(self, name: str) -> Script:
        try:
            return self._scripts[name]
        except KeyError:
            raise KeyError(
                f"no script {name}.lua in package {self.package}; "
                f"it has: {', '.join(sorted(self._scripts)) or 'none'}"
            ) from None

    def __iter__(self) -> Iterator[Script]:
        return iter(self._scripts.values())

    def __len__(self) -> int:
        return len(self._scripts)

    def __repr__(self) -> str:
        return f"<ScriptSet {self.package}: {', '.join(sorted(self._scripts))}>"
