"""Automatic pipelining: concurrent script calls share round trips.

A lone caller runs its script directly, one round trip, no extra hop. Callers that arrive
while calls are in flight are queued, and everything queued is written as one pipeline when
a connection is free (at most ``max_in_flight`` pipelines at once). Under load each round
trip then carries many calls: 50 tasks checking rate limits no longer pay 50 round trips
of latency each, and the event loop does one read and one write per batch instead of per call.
This is what ioredis and node-redis do for Node; redis-py has no equivalent.

Order is kept per batch (a pipeline runs its commands in order), and each call is still one
atomic script. A call cancelled before its batch is written is dropped; one cancelled later
still runs (as a direct call would once sent).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.exceptions as redis_errors
from redis.asyncio import Redis

from redkit.errors import LOST_ERRORS, ScriptError, connection_lost
from redkit.scripts import Script, ScriptArg

__all__ = ["AutoPipeline"]

_Call = tuple[Script, Sequence[str], Sequence[ScriptArg], "asyncio.Future[Any]"]


class AutoPipeline:
    """Batches concurrent :class:`~redkit.scripts.Script` calls on one standalone client."""

    def __init__(self, client: Redis, *, max_batch: int = 256, max_in_flight: int = 2) -> None:
        self.client = client
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._pending: list[_Call] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        """Pipelines written so far (for tests and benchmarks)."""
        self.batched_calls = 0

    def __repr__(self) -> str:
        return (
            f"<AutoPipeline in_flight={self._in_flight} pending={len(self._pending)} "
            f"batches={self.batches}>"
        )

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[ScriptArg] = ()) -> Any:
        """Run ``script`` like ``script(client, keys, args)``, sharing a round trip if busy."""
        if self._in_flight == 0 and not self._pending:
            self._in_flight += 1
            try:
                return await script(self.client, keys, args)
            finally:
                self._in_flight -= 1
                self._schedule()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((script, keys, args, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if self._pending and not self._scheduled and self._in_flight < self.max_in_flight:
            # call_soon: every caller that runs in this loop iteration joins the batch.
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._in_flight >= self.max_in_flight:
            return
        batch = [call for call in self._pending[: self.max_batch] if not call[3].cancelled()]
        del self._pending[: self.max_batch]
        if not batch:
            self._schedule()
            return
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            if len(batch) == 1:
                script, keys, args, future = batch[0]
                await self._settle(future, script, keys, args)
                return
            self.batches += 1
            self.batched_calls += len(batch)
            pipe = self.client.pipeline(transaction=False)
            for script, keys, args, _ in batch:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            results = await pipe.execute(raise_on_error=False)
            for (script, keys, args, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, redis_errors.NoScriptError):
                    # This server has not seen the script: the direct call loads it (EVAL).
                    await self._settle(future, script, keys, args)
                elif isinstance(result, LOST_ERRORS):
                    future.set_exception(connection_lost(f"script {script.name}", result))
                elif isinstance(result, redis_errors.ResponseError):
                    future.set_exception(
                        ScriptError(f"script {script.name} failed in the server: {result}")
                    )
                else:
                    future.set_result(result)
        except BaseException as exc:
            # Nobody may wait forever: whatever broke the batch is every unsettled caller's.
            for script, _, _, future in batch:
                if not future.done():
                    error = (
                        connection_lost(f"script {script.name}", exc)
                        if isinstance(exc, LOST_ERRORS)
                        else exc
                    )
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._in_flight -= 1
            self._schedule()

    async def _settle(
        self,
        future: asyncio.Future[Any],
        script: Script,
        keys: Sequence[str],
        args: Sequence[ScriptArg],
    ) -> None:
        try:
            result = await script(self.client, keys, args)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(result)
