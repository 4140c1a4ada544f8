"""Automatic pipelining: concurrent script calls (and plain reads) share round trips.

A lone caller runs its script directly, one round trip, no extra hop. Callers that arrive
while calls are in flight are queued, and everything queued is written as one pipeline when
a connection is free (at most ``max_in_flight`` pipelines at once). Under load each round
trip then carries many calls: 50 tasks checking rate limits no longer pay 50 round trips
of latency each, and the event loop does one read and one write per batch instead of per call.
This is what ioredis and node-redis do for Node; redis-py has no equivalent.

Order is kept per batch (a pipeline runs its commands in order), and each call is still one
atomic script. A call of plain commands (:meth:`AutoPipeline.execute`: a read such as
``HMGET`` + ``TIME``) travels the same way; its commands are not atomic as a group, which is
why state changes go through scripts. A call cancelled before its batch is written is
dropped; one cancelled later still runs (as a direct call would once sent).

A time limit measures the server's silence, not the client's backlog: a call fails by its
limit only when the server owed an answer and said nothing for that long. Before it fails a
call, the watchdog looks at the sockets of the exchanges in flight, so a reply that came while
the event loop was busy elsewhere (and waits unread) still counts. A script the server has
forgotten (``NOSCRIPT``: a restart, a failover, ``SCRIPT FLUSH``) is loaded once, however many
calls met it at once, and those calls are sent again by SHA.

On a Cluster (:class:`ClusterAutoPipeline`) each primary node has a pipeline of its own, fed
by the slot of each call's keys: calls for one node share its round trips and its kept
connections, under the same rules, and a call the node redirects (a slot that moved, or is
moving) follows the redirection without running twice.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import select
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import redis.exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from redkit.connection import QueueingConnectionPool
from redkit.errors import (
    LOST_ERRORS,
    ConnectionLost,
    ScriptError,
    ServerError,
    connection_lost,
    translate_redis_errors,
)
from redkit.keys import key_slot
from redkit.scripts import Script, ScriptArg

__all__ = ["AutoPipeline", "ClusterAutoPipeline"]

_PARTIAL = "redkit_replies_read"
"""Set on a ConnectionError that cut an exchange after some replies had come: no retry."""

KEEP_FROM_POOL_SIZE = 8
"""The pipeline keeps connections between calls only from a pool at least this large."""

HELD_LOOP = 0.01
"""Seconds a watchdog may fire late before the event loop counts as held: then a connection
being opened (whose handshake steps redis-py reads out of the watchdog's sight) gets the
benefit of the doubt."""

Command = tuple[Any, ...]
T = TypeVar("T")


class _Expired(OSError):
    """Put in a connection's stream by the watchdog: the exchange ran out of time."""


class _Deadlines(Generic[T]):
    """Items with a deadline (event-loop time), watched by one timer for all of them.

    When an item's deadline passes, ``expire(item, now)`` decides: it returns ``None`` (the
    item is done with and forgotten) or a later deadline to wait for. A timer per item
    (``asyncio.timeout``) costs about 5 us here, a tenth of a spun round trip; this one is
    moved only for a deadline earlier than the one it waits for. An infinite deadline arms
    no timer (the item is only held). Bounded by what its owner adds and removes (items in
    flight).
    """

    def __init__(self, expire: Callable[[T, float], float | None]) -> None:
        self._expire = expire
        self._items: dict[T, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.late = 0.0
        """How late the timer fired this turn: the event loop was held that long just now."""

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    def add(self, item: T, deadline: float) -> None:
        self._items[item] = deadline
        timer = self._timer
        if (timer is None or deadline < timer.when()) and deadline != math.inf:
            if timer is not None:
                timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(deadline, self._fire)

    def discard(self, item: T) -> None:
        self._items.pop(item, None)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._timer is not None:
            self.late = now - self._timer.when()
        self._timer = None
        nearest = math.inf
        items = self._items
        for item, deadline in list(items.items()):
            if deadline <= now:
                del items[item]
                later = self._expire(item, now)
                if later is None:
                    continue
                items[item] = deadline = later
            if deadline < nearest:
                nearest = deadline
        if nearest != math.inf:
            self._timer = loop.call_at(nearest, self._fire)


class _Exchange:
    """One write and its replies on a connection, while in flight: what the watchdog needs
    to tell a silent server from a busy client."""

    __slots__ = ("bound", "conn", "connecting", "expired", "results", "seen", "since")

    def __init__(self, bound: float) -> None:
        self.bound = bound
        """Seconds of silence allowed (``math.inf``: no bound of the pipeline's own)."""
        self.conn: Any = None
        """None until the pool names the connection it sets up for this exchange (the set-up
        is bounded on its own: a lone call's time limit, else the connect and command
        timeouts)."""
        self.since = 0.0
        """Event-loop time since which the server has owed this exchange a word: its write,
        or the last time the watchdog found that something had come."""
        self.results: list[Any] = []
        self.seen = 0
        """How many replies the watchdog had seen read at its last look."""
        self.expired = False
        self.connecting = False
        """True while its connection is opened and its handshake runs."""


class _Redirected(ServerError):
    """The node that got a call does not serve its slot now (``MOVED``, ``ASK``,
    ``TRYAGAIN``): nothing ran, and the Cluster router sends the call again where the server
    said. Reaches a caller only from a standalone client pointed at a Cluster node."""

    def __init__(self, what: str, reply: redis_errors.ResponseError) -> None:
        super().__init__(f"{what}: the server redirected it ({reply})")
        self.reply = reply


_REDIRECTS = (redis_errors.AskError, redis_errors.TryAgainError)
"""Replies that say a command did not run here (MovedError is an AskError)."""


class _Call:
    """One caller's request: a script call, or plain commands, and where its answer goes."""

    __slots__ = (
        "args",
        "commands",
        "future",
        "keys",
        "lead",
        "limit",
        "reloaded",
        "script",
        "tail",
    )

    def __init__(
        self,
        script: Script | None,
        keys: Sequence[str],
        args: Sequence[ScriptArg],
        commands: list[Command],
        asking: bool = False,
        then: Sequence[Command] = (),
    ) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.tail = len(then)
        """Commands sent right after a script on the same connection (``WAIT``), whose
        replies come back with the script's."""
        if then:
            commands = [*commands, *then]
        self.lead = 0
        """Commands sent before the caller's own (``ASKING``), whose replies are not its."""
        if asking:
            # ASKING lets the node importing the slot serve the next command on this
            # connection: the pair travels together (a batch keeps order on one connection).
            commands = [("ASKING",), *commands]
            self.lead = 1
        self.commands = commands
        self.future: asyncio.Future[Any] | None = None
        self.limit: float | None = None
        """Seconds of server silence this call accepts (None: the command timeout's)."""
        self.reloaded = False
        """Sent again after a NOSCRIPT: a second NOSCRIPT sends the source (EVAL)."""

    @property
    def what(self) -> str:
        if self.script is not None:
            return f"script {self.script.name}"
        return " + ".join(str(command[0]) for command in self.commands)

    def expire(self) -> None:
        """The server stayed silent past its time limit, queued or sent: the caller gets
        ConnectionLost."""
        if self.future is not None and not self.future.done():
            self.future.set_exception(
                connection_lost(self.what, TimeoutError("no answer within its time limit"))
            )

    def send_source(self) -> None:
        """Send the script itself (``EVAL``) instead of its SHA: the server lost it twice."""
        assert self.script is not None
        self.commands = [
            *self.commands[: self.lead],
            ("EVAL", self.script.source, len(self.keys), *self.keys, *self.args),
            *self.commands[len(self.commands) - self.tail :],
        ]

    def script_reply(self, replies: list[Any]) -> Any:
        """The script's own reply among the call's (after ``ASKING``, before the tail)."""
        return replies[self.lead]

    def result(self, replies: list[Any]) -> Any:
        """The caller's answer from its replies (errors in place), or the error to raise."""
        if self.lead:
            replies = replies[self.lead :]
        if self.script is not None:
            reply = replies[0]
            if isinstance(reply, LOST_ERRORS):
                raise connection_lost(self.what, reply)
            if isinstance(reply, _REDIRECTS):
                raise _Redirected(self.what, reply)
            if isinstance(reply, redis_errors.ResponseError):
                raise ScriptError(f"script {self.script.name} failed in the server: {reply}")
            if not self.tail:
                return reply
            for command, after in zip(self.commands[-self.tail :], replies[1:], strict=True):
                if isinstance(after, LOST_ERRORS):
                    raise connection_lost(self.what, after)
                if isinstance(after, redis_errors.ResponseError):
                    raise ServerError(f"{command[0]} failed in the server: {after}")
            return [reply, *replies[1:]]
        for reply in replies:
            if isinstance(reply, _REDIRECTS):
                raise _Redirected(self.what, reply)  # none of them ran: all go again
        for command, reply in zip(self.commands[self.lead :], replies, strict=True):
            if isinstance(reply, LOST_ERRORS):
                raise connection_lost(self.what, reply)
            if isinstance(reply, redis_errors.ResponseError):
                raise ServerError(f"{command[0]} failed in the server: {reply}")
        return replies


class _Activity:
    """Exchanges in flight across a group of pipelines (one, or a Cluster's per node)."""

    __slots__ = ("busy",)

    def __init__(self) -> None:
        self.busy = 0


class AutoPipeline:
    """Batches concurrent script calls (and plain reads) on one standalone client."""

    def __init__(
        self,
        client: Redis,
        *,
        max_batch: int = 256,
        max_in_flight: int = 2,
        spin_wait: float = 0.0,
        activity: _Activity | None = None,
    ) -> None:
        self.client = client
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        # A lone call goes directly only when nothing is in flight in its whole group (its
        # Cluster's node pipelines): else other calls are about to come, and the call waits
        # one turn of the event loop to share their round trip.
        self._activity = activity if activity is not None else _Activity()
        self._pending: list[_Call] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        # Calls with a time limit, until they are settled: a batch takes its calls out as it
        # settles them, so this holds the calls in flight, not every call of the last
        # time-limit's worth (bounded by what is pending and in flight).
        self._timed: _Deadlines[_Call] = _Deadlines(self._expire_call)
        # Connections this pipeline keeps checked out between exchanges, so that a call does
        # not pay the pool's checkout and release (a lock, health probes and metrics hooks in
        # redis-py: a tenth of a round trip). Bounded: at most ``max_in_flight`` exchanges
        # run at once, so at most that many connections are ever kept here; and none from a
        # small pool, where kept connections would starve every other command.
        self._idle: list[Any] = []
        pool = client.connection_pool
        pool_size = getattr(pool, "max_connections", 0)
        self._keep = max_in_flight if pool_size >= KEEP_FROM_POOL_SIZE else 0
        timeout = getattr(pool, "connection_kwargs", {}).get("socket_timeout")
        self._command_timeout: float = timeout if timeout else math.inf
        # Exchanges in flight, connections being set up included: each removes its own
        # entry when it ends (bounded by max_in_flight, plus script loads).
        self._exchanges: _Deadlines[_Exchange] = _Deadlines(self._expire_exchange)
        self._heard_at = -math.inf
        """Event-loop time of the server's last answer (an exchange completed)."""
        self._silence: tuple[float, float | None] = (math.nan, None)
        # Single-flight script loads: the load under way for a SHA, and the count of loads
        # done when each script was last loaded. Both bounded by the package's scripts.
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._loaded: dict[str, int] = {}
        self._loads = 0
        self.batches = 0
        """Pipelines written so far (for tests and benchmarks)."""
        self.batched_calls = 0
        self.spin_wait = spin_wait
        """Seconds an exchange keeps the event loop turning for its reply (see
        :func:`_spin_for_reply`); 0 sleeps at once."""
        self.round_trips = 0
        """Exchanges with the server so far (a lone call or a batch is one)."""
        self.script_loads = 0
        """``SCRIPT LOAD``s sent after a ``NOSCRIPT`` (one per script per storm)."""

    def __repr__(self) -> str:
        return (
            f"<AutoPipeline in_flight={self._in_flight} pending={len(self._pending)} "
            f"batches={self.batches}>"
        )

    async def run(
        self,
        script: Script,
        keys: Sequence[str],
        args: Sequence[ScriptArg] = (),
        time_limit: float | None = None,
        then: Sequence[Command] = (),
    ) -> Any:
        """Run ``script`` like ``script(client, keys, args)``, sharing a round trip if busy.

        ``then``: commands sent right after the script on the same connection (``WAIT``,
        which counts the replicas that have this connection's writes); the call then
        returns ``[script reply, *their replies]``.

        ``time_limit`` (seconds) bounds the server's silence: past it without a word from
        the server while the call waits (queued behind exchanges in flight, or sent), the
        call raises :class:`~redkit.errors.ConnectionLost`. Time the client spends on its own
        backlog does not count, and a reply that already came counts even if the event loop
        has not read it yet. Setting up a new connection is bounded by the limit as well.
        Calls with a limit share one timer instead of a timer each. A limit ends only its
        own call: the batch it travels in goes on under the connection's command timeout, so
        a call without a limit is never cut short by a neighbour's. A call that expired
        after it was sent may still run on the server (as any call whose answer was lost).
        """
        script.check_keys(keys)
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        return await self._call(_Call(script, keys, args, [command], then=then), time_limit)

    async def execute(self, commands: list[Command], time_limit: float | None = None) -> list[Any]:
        """Send plain ``commands`` in one round trip, shared like a script call; return their
        replies. Not atomic as a group (other clients' commands may run between them): for
        reads. A command the server refuses raises :class:`~redkit.errors.ServerError`."""
        if not commands:
            return []
        replies: list[Any] = await self._call(_Call(None, (), (), commands), time_limit)
        return replies

    async def read_at_server_time(self, command: Command) -> tuple[Any, int]:
        """``command``'s reply and the server's clock (``TIME``, in microseconds since the
        epoch) in one round trip: for a read that decides in Python, on the server's time,
        what a script would decide, when nothing needs writing."""
        reply, (secs, micros) = await self.execute([command, ("TIME",)])
        return reply, int(secs) * 1_000_000 + int(micros)

    async def _call(self, call: _Call, time_limit: float | None) -> Any:
        if self._activity.busy == 0 and not self._pending:
            self._in_flight += 1
            self._activity.busy += 1
            try:
                return await self._direct(call, time_limit)
            finally:
                self._in_flight -= 1
                self._activity.busy -= 1
                self._schedule()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        call.future = future
        self._pending.append(call)
        if time_limit is not None:
            call.limit = time_limit
            self._timed.add(call, loop.time() + time_limit)
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
        # A call cancelled or expired while queued is dropped: it was never sent.
        batch = []
        for call in self._pending[: self.max_batch]:
            if call.future is not None and not call.future.done():
                batch.append(call)
            elif call.limit is not None:
                self._timed.discard(call)
        del self._pending[: self.max_batch]
        if not batch:
            self._schedule()
            return
        self._in_flight += 1
        self._activity.busy += 1
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            if len(batch) > 1:
                self.batches += 1
                self.batched_calls += len(batch)
            commands = [command for call in batch for command in call.commands]
            loads = self._loads
            results = await self._exchange_retried(commands)
            at = 0
            timed = self._timed
            forgotten: list[_Call] = []
            for call in batch:
                replies = results[at : at + len(call.commands)]
                at += len(call.commands)
                future = call.future
                assert future is not None
                if (
                    call.script is not None
                    and isinstance(call.script_reply(replies), redis_errors.NoScriptError)
                    and not future.done()
                ):
                    # Not run: sent again once the script is back (its limit still runs).
                    forgotten.append(call)
                    continue
                if call.limit is not None:
                    timed.discard(call)
                if future.done():
                    continue
                try:
                    future.set_result(call.result(replies))
                except Exception as exc:
                    future.set_exception(exc)
            if forgotten:
                await self._resend(forgotten, loads)
        except BaseException as exc:
            # Nobody may wait forever: whatever broke the batch is every unsettled caller's.
            for call in batch:
                self._timed.discard(call)
                if call.future is not None and not call.future.done():
                    error = connection_lost(call.what, exc) if isinstance(exc, LOST_ERRORS) else exc
                    call.future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._in_flight -= 1
            self._activity.busy -= 1
            self._schedule()

    async def _resend(self, calls: list[_Call], loads: int) -> None:
        """Queue ``calls`` again, first in line, once the scripts they met NOSCRIPT for are
        loaded: one ``SCRIPT LOAD`` for the whole storm, then ``EVALSHA`` in batches as
        usual. A call that meets NOSCRIPT a second time sends the script's source."""
        scripts = {
            call.script.sha: call.script
            for call in calls
            if call.script is not None and not call.reloaded
        }
        for script in scripts.values():
            await self._reload(script, loads)
        for call in calls:
            if call.reloaded:
                call.send_source()
            call.reloaded = True
        self._pending[:0] = calls

    async def _direct(self, call: _Call, time_limit: float | None) -> Any:
        """A lone call: the same exchange as a batch of one, bounded by ``time_limit``."""
        script = call.script
        try:
            loads = self._loads
            replies = await self._exchange_retried(call.commands, time_limit)
            if script is not None and isinstance(
                call.script_reply(replies), redis_errors.NoScriptError
            ):
                # The server does not know the script (yet, or any more): load it once for
                # every caller that met the same, then send the call again by SHA.
                await self._reload(script, loads, time_limit)
                replies = await self._exchange_retried(call.commands, time_limit)
                if isinstance(call.script_reply(replies), redis_errors.NoScriptError):
                    call.send_source()
                    replies = await self._exchange_retried(call.commands, time_limit)
        except LOST_ERRORS as exc:
            raise connection_lost(call.what, exc) from exc
        return call.result(replies)

    async def _reload(self, script: Script, loads: int, time_limit: float | None = None) -> None:
        """Make sure the server knows ``script`` after NOSCRIPT answered an exchange sent
        when ``loads`` loads were done: one ``SCRIPT LOAD`` however many calls ask at once."""
        if self._loaded.get(script.sha, -1) > loads:
            return  # loaded since that exchange was sent
        task = self._loading.get(script.sha)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(script, time_limit))
            self._loading[script.sha] = task
            task.add_done_callback(self._loaded_one)
        # Shielded: a caller that gives up does not take the load from the others.
        await asyncio.shield(task)

    async def _load(self, script: Script, time_limit: float | None) -> None:
        self.script_loads += 1
        (reply,) = await self._exchange_retried([("SCRIPT", "LOAD", script.source)], time_limit)
        if isinstance(reply, redis_errors.ResponseError):
            raise ScriptError(f"script {script.name} could not be loaded: {reply}")
        self._loads += 1
        self._loaded[script.sha] = self._loads

    def _loaded_one(self, task: asyncio.Task[None]) -> None:
        for sha, loading in list(self._loading.items()):
            if loading is task:
                del self._loading[sha]
        if not task.cancelled():
            task.exception()  # retrieved: its waiters got it, or none was left to

    async def _exchange_retried(
        self, commands: list[Command], time_limit: float | None = None
    ) -> list[Any]:
        """:meth:`_exchange`, retried once on a fresh connection when the pooled one turned
        out dead before any reply (a server restart the loop had not noticed yet), as
        redis-py does for single commands. Not once replies came: those commands ran."""
        try:
            return await self._exchange(commands, time_limit)
        except redis_errors.ConnectionError as exc:
            if getattr(exc, _PARTIAL, False):
                raise
            return await self._exchange(commands, time_limit)

    async def _exchange(
        self, commands: list[Command], time_limit: float | None = None
    ) -> list[Any]:
        """Write ``commands`` in one go and read their replies, errors in place.

        Leaner than redis-py's pipeline: one timer for the whole exchange instead of one per
        reply, no per-command bookkeeping, and a connection kept from one exchange to the
        next instead of a pool checkout each time. The bound (the command timeout, or a lone
        call's time limit) starts when the bytes are written and measures the server's
        silence; a new connection's set-up is bounded on its own. A failure midway drops the
        connection (its unread replies would poison the next user).
        """
        loop = asyncio.get_running_loop()
        bound = self._command_timeout
        if time_limit is not None and time_limit < bound:
            bound = time_limit
        exchange = _Exchange(bound)
        exchanges = self._exchanges
        conn = None
        idle = self._idle
        while idle:
            kept = idle.pop()
            if _sound(kept):
                conn = kept
                break
            await self._discard(kept)
        if conn is None:
            # Held while the connection is set up: calls queued behind it wait for the server
            # (its handshake) as much as for a reply.
            exchange.since = loop.time()
            exchange.connecting = True
            exchanges.add(exchange, math.inf)
            try:
                conn = await self._connect(exchange, time_limit)
            except BaseException:
                exchanges.discard(exchange)
                raise
            exchange.connecting = False
        exchange.conn = conn
        exchange.since = now = loop.time()
        exchanges.add(exchange, now + bound)
        self.round_trips += 1
        results = exchange.results
        try:
            # Packed command by command: redis-py's pack_commands re-joins the buffers. The
            # write bounds its own wait (socket timeout) when the socket buffer is full.
            await conn.send_packed_command([p for c in commands for p in conn.pack_command(*c)])
            if self.spin_wait > 0:
                await _spin_for_reply(conn, self.spin_wait)
            for _ in commands:
                try:
                    # math.inf: no timer per reply; the watchdog bounds the whole exchange.
                    results.append(await conn.read_response(timeout=math.inf))
                except redis_errors.ResponseError as exc:
                    results.append(exc)
        except BaseException as exc:
            exchanges.discard(exchange)
            await self._discard(conn)
            if exchange.expired:
                raise TimeoutError(f"the server was silent for {bound:g} s") from exc
            if isinstance(exc, redis_errors.ConnectionError) and results:
                setattr(exc, _PARTIAL, True)  # some commands ran: a retry would repeat them
            if isinstance(exc, redis_errors.ConnectionError):
                # What broke this connection (a restart, a failover, CLIENT KILL) most
                # likely broke its kept siblings too: the retry must not meet one of them.
                idle, self._idle = self._idle, []
                for other in idle:
                    await self._discard(other)
            raise
        exchanges.discard(exchange)
        self._heard_at = loop.time()
        if len(self._idle) < self._keep:
            self._idle.append(conn)
        else:
            await self.client.connection_pool.release(conn)
        return results

    async def _connect(self, exchange: _Exchange, time_limit: float | None) -> Any:
        """A connection from the pool for ``exchange``, which holds it while it is set up
        (where the pool says which it is), so that the watchdog can see its handshake's
        replies. Under a time limit, a checkout that may have to wait (for a free
        connection, or a new one's handshake with a hung server) is bounded by it: without
        that a hung server costs the connect and command timeouts first."""
        pool: Any = self.client.connection_pool
        checkout = getattr(pool, "checkout", None)

        def watch(conn: Any) -> None:
            exchange.conn = conn

        async def take() -> Any:
            if checkout is not None:
                return await checkout(watch)
            return await pool.get_connection()

        if time_limit is None or _lends_at_once(pool):
            return await take()
        async with asyncio.timeout(time_limit):
            return await take()

    def _silent_since(self, now: float) -> float | None:
        """Since when the server has owed an exchange an answer without a word, or None
        when nothing is in flight (then any wait is the client's own). A reply that came
        but was not read yet (the event loop busy elsewhere) is a word: looked for here, in
        the reader's buffer and in the socket, only when a deadline is about to fail."""
        checked, since = self._silence
        if checked == now:
            return since  # every deadline of one watchdog turn shares one look
        since = None
        held = self._timed.late > HELD_LOOP
        for exchange in self._exchanges:
            conn = exchange.conn
            if exchange.connecting:
                # A connection being opened: its handshake's steps are read by redis-py,
                # unseen here. If the loop was held, they may have been held up by it: the
                # benefit of the doubt; else only an unread reply is a sign of life.
                if held or (getattr(conn, "_reader", None) is not None and _has_unread(conn)):
                    exchange.since = now
            elif _progressed(exchange):
                exchange.since = self._heard_at = now
            if since is None or exchange.since < since:
                since = exchange.since
        if since is not None and self._heard_at > since:
            since = self._heard_at
        self._silence = (now, since)
        return since

    def _expire_call(self, call: _Call, now: float) -> float | None:
        """A timed call's deadline passed: fail it if the server has been silent for its
        whole limit, else wait until it would have been."""
        limit = call.limit
        if limit is None or call.future is None or call.future.done():
            return None  # settled, or cancelled by its caller: nothing left to watch
        since = self._silent_since(now)
        if since is None:
            return now + limit  # nothing sent yet: the wait is the client's
        if since + limit > now:
            return since + limit
        call.expire()
        return None

    def _expire_exchange(self, exchange: _Exchange, now: float) -> float | None:
        """``exchange`` ran past its bound: if nothing came, put an error in its stream, so
        that its pending read raises; the exchange then drops the connection (its reply may
        still come) and raises ``TimeoutError``. Not a ``TimeoutError`` in the stream:
        redis-py's read turns that into a ``None`` reply when a read timeout was passed
        (``math.inf``). If something came, wait again: the server is answering."""
        conn = exchange.conn
        if conn is None:
            return now + exchange.bound  # being set up: bounded by the set-up's own timeout
        if _progressed(exchange):
            exchange.since = self._heard_at = now
        if exchange.since + exchange.bound > now:
            return exchange.since + exchange.bound
        exchange.expired = True
        reader = getattr(conn, "_reader", None)
        if reader is not None:
            reader.set_exception(_Expired("no reply within the time allowed"))
        return None

    async def _discard(self, conn: Any) -> None:
        """Close ``conn`` and hand it back to the pool, which reconnects it when next used."""
        try:
            await conn.disconnect(nowait=True)
        finally:
            await self.client.connection_pool.release(conn)

    async def aclose(self) -> None:
        """Hand the kept connections back to the pool (before the pool is closed); an
        exchange still in flight hands its connection back when it ends, instead of keeping
        it."""
        self._keep = 0
        if not self._exchanges:
            self._exchanges.close()
        idle, self._idle = self._idle, []
        for conn in idle:
            await self.client.connection_pool.release(conn)


def _lends_at_once(pool: Any) -> bool:
    """Would ``pool`` hand out a connected connection now, without waiting or connecting?"""
    lends = getattr(pool, "lends_at_once", None)
    return lends is not None and bool(lends())


def _progressed(exchange: _Exchange) -> bool:
    """Has the server said something to ``exchange`` since the watchdog last looked?"""
    read = len(exchange.results)
    if read != exchange.seen:
        exchange.seen = read
        return True
    return _has_unread(exchange.conn)


def _has_unread(conn: Any) -> bool:
    """Bytes from the server that nobody has read yet: in the stream reader's buffer (the
    event loop fed it, the reading task has not run since) or still in the socket (the
    event loop has not looked since they came). A closed stream counts: its read fails at
    once, on its own."""
    reader = getattr(conn, "_reader", None)
    if reader is None:
        return False
    if reader._buffer or reader.at_eof() or reader.exception() is not None:
        return True
    writer = getattr(conn, "_writer", None)
    sock = writer.get_extra_info("socket") if writer is not None else None
    if sock is None:
        return False
    try:
        fd = sock.fileno()
        if fd < 0:
            return True  # closed under the read, which fails at once
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([fd], [], [], 0)
        return bool(readable)
    except (OSError, ValueError):
        return False  # the watchdog must never fail: no sign of life, then


def _sound(conn: Any) -> bool:
    """Can ``conn`` carry an exchange? The pool's own check reads the socket (an extra
    event-loop step); the stream reader already knows whether the server closed it or sent
    something nobody asked for, because the event loop feeds it as bytes arrive."""
    reader = getattr(conn, "_reader", None)
    return (
        conn.is_connected
        and reader is not None
        and not reader.at_eof()
        and reader.exception() is None
        and not reader._buffer
        and not conn.should_reconnect()
    )


async def _spin_for_reply(conn: Any, budget: float) -> None:
    """Keep the event loop turning until ``conn``'s reply starts to arrive, at most
    ``budget`` seconds; then the caller reads (and sleeps if it must).

    A reply takes tens of microseconds. A process that sleeps in ``epoll_wait`` for it has to
    be woken when it comes, and on a virtual machine waking an idle vCPU costs about as much
    as the round trip itself (measured here: sequential calls 1.3-1.7 times as fast with the wait
    spun). Each turn yields (``sleep(0)``), so other tasks run meanwhile and a busy loop
    loses nothing; an idle one spends up to ``budget`` of CPU per call instead of sleeping.
    """
    stream = getattr(conn, "_reader", None)
    if stream is None:
        return
    loop = asyncio.get_running_loop()
    give_up = loop.time() + budget
    # _buffer: asyncio's StreamReader fills it as bytes arrive (no public peek exists).
    # Polling on purpose, bounded by the budget (an Event would sleep, which is the point).
    while not stream._buffer and not stream.at_eof() and loop.time() < give_up:  # noqa: ASYNC110
        await asyncio.sleep(0)


MAX_REDIRECTS = 16
"""Redirections (MOVED, ASK, TRYAGAIN) one call follows before it fails, as redis-py's own
Cluster client does: a slot moves once, so more means a Cluster in trouble."""

TRY_AGAIN_PAUSE = 0.005
"""Seconds before a call answered ``TRYAGAIN`` (its slot's keys half moved) goes again,
times the number of tries so far."""

REFRESH_EVERY = 1.0
"""Seconds between slot-map refreshes after lost connections (a failover may have moved
the slots; a dead node must not cost every call a refresh)."""


class ClusterAutoPipeline:
    """Automatic pipelining on a Cluster: one :class:`AutoPipeline` per primary node.

    A call goes to the node that owns its keys' slot (every redkit script's keys share one
    slot), found in the slot map redis-py's ``RedisCluster`` keeps; concurrent calls for
    one node travel in one pipeline on a connection kept for that node, as on a standalone
    server, with the same time limits, retries and NOSCRIPT handling (each node loads a
    script it lacks once). A node that no longer serves the slot says so, and nothing ran:
    ``MOVED`` updates the slot map and the call goes to the new owner; ``ASK`` (a slot being
    migrated) sends it to the importing node after ``ASKING``; ``TRYAGAIN`` (the slot's keys
    half moved) sends it again shortly. So a migration in the middle of a batch loses and
    repeats nothing. A time limit counts per node asked (an answer that redirects is a word
    from the server), at most :data:`MAX_REDIRECTS` of them.
    """

    def __init__(
        self,
        client: RedisCluster,
        *,
        max_batch: int = 256,
        max_in_flight: int = 2,
        spin_wait: float = 0.0,
    ) -> None:
        self.client = client
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._spin_wait = spin_wait
        # One pipeline (and pool) per node it was asked to reach, by "host:port". Bounded by
        # the Cluster's nodes: a refresh drops the idle ones of nodes no longer in the map.
        self._nodes: dict[str, AutoPipeline] = {}
        self._activity = _Activity()
        self._closed = False
        self._refresh: asyncio.Task[None] | None = None
        self._refreshed_at = -math.inf
        self.redirected = {"MOVED": 0, "ASK": 0, "TRYAGAIN": 0}
        """Redirections followed so far, by kind (for tests and benchmarks)."""

    def __repr__(self) -> str:
        return f"<ClusterAutoPipeline nodes={len(self._nodes)} batches={self.batches}>"

    # -- the figures of the node pipelines, summed --------------------------------------------

    @property
    def batches(self) -> int:
        return sum(p.batches for p in self._nodes.values())

    @property
    def batched_calls(self) -> int:
        return sum(p.batched_calls for p in self._nodes.values())

    @property
    def round_trips(self) -> int:
        return sum(p.round_trips for p in self._nodes.values())

    @property
    def script_loads(self) -> int:
        return sum(p.script_loads for p in self._nodes.values())

    @property
    def spin_wait(self) -> float:
        return self._spin_wait

    @spin_wait.setter
    def spin_wait(self, value: float) -> None:
        self._spin_wait = value
        for pipeline in self._nodes.values():
            pipeline.spin_wait = value

    # -- calls ----------------------------------------------------------------------------------

    async def run(
        self,
        script: Script,
        keys: Sequence[str],
        args: Sequence[ScriptArg] = (),
        time_limit: float | None = None,
        then: Sequence[Command] = (),
    ) -> Any:
        """Run ``script`` on the node of its keys' slot, sharing a round trip with the
        calls for that node (see :meth:`AutoPipeline.run`, and for ``then``)."""
        script.check_keys(keys)
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)

        def make(asking: bool) -> _Call:
            return _Call(script, keys, args, [command], asking, then)

        return await self._routed(keys[0] if keys else None, make, time_limit)

    async def execute(self, commands: list[Command], time_limit: float | None = None) -> list[Any]:
        """Send plain ``commands`` in one round trip to the node of the first command's first
        argument, its key (the keys of all of them must share its slot; keyless commands
        go to any node). Not atomic as a group: for reads."""
        if not commands:
            return []
        first = commands[0]
        key = first[1] if len(first) > 1 else None

        def make(asking: bool) -> _Call:
            return _Call(None, (), (), list(commands), asking)

        replies: list[Any] = await self._routed(key, make, time_limit)
        return replies

    async def read_at_server_time(self, command: Command) -> tuple[Any, int]:
        """``command``'s reply and its node's clock (``TIME``, microseconds) in one round
        trip (see :meth:`AutoPipeline.read_at_server_time`)."""
        reply, (secs, micros) = await self.execute([command, ("TIME",)])
        return reply, int(secs) * 1_000_000 + int(micros)

    async def _routed(
        self, key: Any, make: Callable[[bool], _Call], time_limit: float | None
    ) -> Any:
        slot = key_slot(key) if isinstance(key, str | bytes) else None
        asked: Any = None  # the node an ASK named, for the next try only
        tries = 0
        while True:
            if asked is not None:
                node = asked
            elif slot is not None and self.client.nodes_manager.slots_cache:
                node = self._owner(slot)  # the usual path: no await, the map is in memory
            else:
                node = await self._node_for(slot)
            call = make(asked is not None)
            pipeline = self._pipeline(node)
            try:
                return await pipeline._call(call, time_limit)
            except _Redirected as exc:
                tries += 1
                reply = exc.reply
                if tries >= MAX_REDIRECTS:
                    raise connection_lost(call.what, reply) from None
                if isinstance(reply, redis_errors.MovedError):
                    self.redirected["MOVED"] += 1
                    await self._moved(reply)
                    asked = None
                elif isinstance(reply, redis_errors.AskError):
                    self.redirected["ASK"] += 1
                    asked = self._node_at(reply.host, reply.port)
                else:  # TRYAGAIN: the same node again, after a pause
                    self.redirected["TRYAGAIN"] += 1
                    asked = node if asked is not None else None
                    await asyncio.sleep(TRY_AGAIN_PAUSE * tries)
            except ConnectionLost:
                # A dead node, or a failover under way: the slot map may be stale.
                self._refresh_soon()
                raise

    async def _node_for(self, slot: int | None) -> Any:
        manager = self.client.nodes_manager
        if not manager.slots_cache:
            with translate_redis_errors("Cluster topology"):
                await self.client.initialize()
        if slot is None:
            return self.client.get_default_node()
        return self._owner(slot)

    def _owner(self, slot: int) -> Any:
        """The primary that serves ``slot``, from the slot map in memory."""
        try:
            return self.client.nodes_manager.get_node_from_slot(slot)
        except redis_errors.SlotNotCoveredError as exc:
            self._refresh_soon()
            raise connection_lost(f"slot {slot}", exc) from exc

    def _node_at(self, host: str, port: int) -> Any:
        node = self.client.nodes_manager.get_node(host=host, port=port)
        if node is None:
            node = ClusterNode(host, port)
        return node

    async def _moved(self, reply: redis_errors.MovedError) -> None:
        """Record in redis-py's slot map that ``reply``'s slot is served elsewhere now, so
        that every later call (ours and redis-py's) goes there at once."""
        manager: Any = self.client.nodes_manager
        move = getattr(manager, "move_slot", None)
        if move is None:  # older redis-py: re-read the whole map
            with translate_redis_errors("Cluster topology"):
                await manager.initialize()
            return
        moved = move(reply)
        if inspect.isawaitable(moved):
            await moved

    def _refresh_soon(self) -> None:
        """Re-read the slot map in the background (one at a time, at most every
        :data:`REFRESH_EVERY` seconds): the caller already has its answer (ConnectionLost)."""
        loop = asyncio.get_running_loop()
        if self._closed or self._refresh is not None:
            return
        if loop.time() - self._refreshed_at < REFRESH_EVERY:
            return
        self._refreshed_at = loop.time()
        self._refresh = loop.create_task(self._refresh_map())

    async def _refresh_map(self) -> None:
        try:
            await self.client.nodes_manager.initialize()
        except Exception:  # noqa: S110 - the next failure asks again
            pass
        finally:
            self._refresh = None
        # Idle pipelines of nodes gone from the map are dropped (their pools closed).
        known = self.client.nodes_manager.nodes_cache
        for name, pipeline in list(self._nodes.items()):
            if name not in known and pipeline._in_flight == 0 and not pipeline._pending:
                del self._nodes[name]
                await _close_node_pipeline(pipeline)

    def _pipeline(self, node: Any) -> AutoPipeline:
        pipeline = self._nodes.get(node.name)
        if pipeline is None:
            if self._closed:
                raise ConnectionLost("the client is closed")
            pipeline = AutoPipeline(
                self._node_client(node.host, node.port),
                max_batch=self.max_batch,
                max_in_flight=self.max_in_flight,
                spin_wait=self._spin_wait,
                activity=self._activity,
            )
            self._nodes[node.name] = pipeline
        return pipeline

    def _node_client(self, host: str, port: int) -> Redis:
        """A standalone client of one node, with a pool of its own (the kept connections of
        its pipeline come from it), made as the Cluster client's are (credentials, TLS,
        timeouts, client name)."""
        kwargs = dict(self.client.connection_kwargs)
        for cluster_only in _CLUSTER_ONLY_KWARGS:
            kwargs.pop(cluster_only, None)
        connection_class = kwargs.pop("connection_class")
        size = int(getattr(self.client, "max_connections", 0) or kwargs.get("max_connections", 64))
        kwargs.pop("max_connections", None)
        pool = QueueingConnectionPool(
            host=host,
            port=port,
            connection_class=connection_class,
            max_connections=size,
            pool_timeout=float(getattr(self.client, "pool_timeout", 10.0)),
            **kwargs,
        )
        return Redis(connection_pool=pool)

    async def aclose(self) -> None:
        """Close every node's kept connections and pool."""
        self._closed = True
        if self._refresh is not None:
            self._refresh.cancel()
        nodes, self._nodes = self._nodes, {}
        for pipeline in nodes.values():
            await _close_node_pipeline(pipeline)


_CLUSTER_ONLY_KWARGS = (
    "response_callbacks",  # redkit's pipeline reads raw replies
    "oss_cluster_maint_notifications_handler",  # the Cluster client's, tied to its node map
)


async def _close_node_pipeline(pipeline: AutoPipeline) -> None:
    await pipeline.aclose()
    await pipeline.client.aclose()
