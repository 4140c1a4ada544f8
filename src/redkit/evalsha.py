"""Running one :class:`~redkit.scripts.Script`: ``EVALSHA``, and ``EVAL`` when the server
does not know it (``NOSCRIPT``); see :mod:`redkit.scripts` for why that is enough.

Kept apart from :mod:`redkit.scripts` (which reads and names the scripts, and has no I/O) so
that the sync API can be generated from this module alone: ``redkit._sync.evalsha``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis.exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from redkit._codegen import IS_ASYNC
from redkit.errors import LOST_ERRORS, ScriptError, connection_lost

if TYPE_CHECKING:
    from redkit.scripts import Script, ScriptArg

__all__ = ["call_script"]


async def call_script(
    script: Script,
    client: Redis | RedisCluster,
    keys: Sequence[str],
    args: Sequence[ScriptArg] = (),
) -> Any:
    """Run ``script`` atomically on the node that owns ``keys``; one round trip.

    ``keys`` must share a hash slot (see :mod:`redkit.keys`); a script needs at least one
    key so that a Cluster knows where to run it.
    """
    script.check_keys(keys)
    sent = script._sent
    # try/except rather than a context manager: this is every primitive's hot path.
    try:
        try:
            return await client.evalsha(script.sha, len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            return await _after_noscript(script, client, keys, args, sent)
    except LOST_ERRORS as exc:
        raise connection_lost(f"script {script.name}", exc) from exc
    except redis_errors.ResponseError as exc:
        raise ScriptError(f"script {script.name} failed in the server: {exc}") from exc


async def _after_noscript(
    script: Script,
    client: Redis | RedisCluster,
    keys: Sequence[str],
    args: Sequence[ScriptArg],
    sent: int,
) -> Any:
    """The server did not know the script when the ``EVALSHA`` sent after ``sent`` source
    sends ran: one caller per client sends the source (``EVAL`` both runs it and caches it
    on that node for the next ``EVALSHA``); the callers that meet NOSCRIPT meanwhile, or
    whose NOSCRIPT predates a send that has ended, retry by SHA."""
    if IS_ASYNC:
        # Sync: each thread that meets NOSCRIPT sends the source itself (a burst after a
        # restart costs one EVAL per waiting thread, bounded by the threads, not callers).
        if script._sent == sent:
            sending = script._sending.get(client)
            if sending is None:
                sending = asyncio.get_running_loop().create_future()
                script._sending[client] = sending
                try:
                    return await client.eval(script.source, len(keys), *keys, *args)
                finally:
                    script._sent += 1
                    if script._sending.get(client) is sending:
                        del script._sending[client]
                    sending.set_result(None)
            await sending
        try:
            return await client.evalsha(script.sha, len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            # Flushed again, or (on a Cluster) another node's keys: send the source.
            pass
    return await client.eval(script.source, len(keys), *keys, *args)
