"""From a URL to a redis-py asyncio client, with bounded timeouts.

=================================================  =========================================
URL                                                client
=================================================  =========================================
``redis://[[user]:pass@]host[:port][/db]``         standalone (TCP)
``rediss://...``                                   standalone over TLS (``ssl_*`` query args)
``unix:///path/to/sock[?db=N]``                    standalone over a Unix socket
``redis+cluster://[[user]:pass@]h1:p1[,h2:p2]``    Cluster; the nodes are seeds, the rest is
                                                   discovered. ``rediss+cluster://`` for TLS.
``redis://host:port?cluster=true``                 the same, for tools that only take redis://
``redis+sentinel://[[user]:pass@]s1:p1[,s2:p2]``   the master of ``service`` found through
``/service[/db][?sentinel_password=...]``          Sentinel, followed across failovers
=================================================  =========================================

Every client gets the same bounds: ``connect_timeout`` to open a connection,
``command_timeout`` to wait for a reply, and at most one immediate retry, on a dropped
connection only (a pooled connection that died with a server restart), never on a timeout,
so that a dead or hung server surfaces as :class:`~redkit.errors.ConnectionLost` within
about the command timeout instead of after a chain of back-offs. Standalone, Sentinel and
Cluster clients queue callers beyond ``max_connections`` for a free connection instead of
failing; standalone connections also pack commands with hiredis and send without a Task
per write.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

from hiredis import pack_command as _hiredis_pack
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.credentials import StreamingCredentialProvider
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from redkit._codegen import IS_ASYNC, async_only
from redkit.errors import ConfigurationError

try:
    from redis.observability.providers import get_observability_instance
except ImportError:  # redis-py before observability: nothing to record

    def _observability_on() -> bool:
        return False

else:

    def _observability_on() -> bool:
        return get_observability_instance().get_provider_manager() is not None


__all__ = [
    "ConnectionOptions",
    "Mode",
    "ParsedURL",
    "QueueingConnectionPool",
    "QueueingRedisCluster",
    "QueueingSentinelConnectionPool",
    "create_client",
    "parse_url",
    "redact_url",
]

Mode = Literal["standalone", "cluster", "sentinel"]

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class ConnectionOptions:
    connect_timeout: float = 2.0
    command_timeout: float = 2.0
    max_connections: int = 64
    pool_timeout: float = 10.0
    client_name: str | None = None


@dataclass(frozen=True)
class ParsedURL:
    """What a redkit URL asks for, before any connection is made."""

    mode: Mode
    url: str
    """For standalone: the URL redis-py gets (redkit's own query arguments removed)."""
    hosts: tuple[tuple[str, int], ...] = ()
    """Cluster seed nodes or Sentinel addresses."""
    username: str | None = None
    password: str | None = None
    tls: bool = False
    service: str | None = None
    db: int = 0
    query: tuple[tuple[str, str], ...] = ()


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, fit for logs and banners."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    netloc = f"{user}:***@{hostinfo}" if ":" in userinfo else f"{user}@{hostinfo}"
    return urlunsplit(parts._replace(netloc=netloc))


def _hosts(hostinfo: str, default_port: int, url: str) -> tuple[tuple[str, int], ...]:
    hosts: list[tuple[str, int]] = []
    for item in hostinfo.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # [ipv6]:port
            host, _, rest = item[1:].partition("]")
            port_text = rest.lstrip(":")
        else:
            host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise ConfigurationError(f"bad port {port_text!r} in {redact_url(url)}") from None
        if not host or not 0 < port < 65536:
            raise ConfigurationError(f"bad host:port {item!r} in {redact_url(url)}")
        hosts.append((host, port))
    if not hosts:
        raise ConfigurationError(f"no host in {redact_url(url)}")
    return tuple(hosts)


def parse_url(url: str) -> ParsedURL:
    """Classify and check ``url`` (see the module's table); raise ConfigurationError if bad."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"{url!r} is not a Redis URL; expected e.g. redis://localhost:6379/0, "
            "rediss://..., unix:///path/to/socket, redis+cluster://h1:p1,h2:p2 or "
            "redis+sentinel://s1:26379/mymaster"
        )
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    cluster_flag = query.pop("cluster", "").lower() in _TRUE

    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if userinfo:
        user, sep, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if sep else None

    if scheme in ("redis", "rediss", "unix") and not cluster_flag:
        if scheme != "unix" and not parts.hostname:
            raise ConfigurationError(f"no host in {redact_url(url)}")
        if scheme == "unix" and not parts.path:
            raise ConfigurationError(f"no socket path in {redact_url(url)}")
        clean = urlunsplit(parts._replace(query=urlencode(query)))
        return ParsedURL(mode="standalone", url=clean, tls=scheme == "rediss")

    if scheme in ("redis+cluster", "rediss+cluster") or (
        cluster_flag and scheme in ("redis", "rediss")
    ):
        if parts.path not in ("", "/", "/0"):
            raise ConfigurationError("a Cluster has only database 0; remove the /db from the URL")
        return ParsedURL(
            mode="cluster",
            url=url,
            hosts=_hosts(hostinfo, 6379, url),
            username=username,
            password=password,
            tls=scheme.startswith("rediss"),
            query=tuple(query.items()),
        )

    if scheme in ("redis+sentinel", "rediss+sentinel"):
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ConfigurationError(
                f"{redact_url(url)} names no service: use redis+sentinel://host:26379/mymaster"
            )
        try:
            db = int(path[1]) if len(path) > 1 else 0
        except ValueError:
            raise ConfigurationError(f"bad database {path[1]!r} in {redact_url(url)}") from None
        return ParsedURL(
            mode="sentinel",
            url=url,
            hosts=_hosts(hostinfo, 26379, url),
            username=username,
            password=password,
            tls=scheme.startswith("rediss"),
            service=unquote(path[0]),
            db=db,
            query=tuple(query.items()),
        )

    raise ConfigurationError(
        f"unsupported URL scheme {scheme!r} in {redact_url(url)}; use redis, rediss, unix, "
        "redis+cluster (or ?cluster=true) or redis+sentinel"
    )


@async_only
class _FastConnectionMixin:
    """Pack commands in C and send them without a Task per write.

    redis-py's asyncio connection packs commands in Python even when hiredis is installed
    (its sync connection uses hiredis); with hiredis the packing of a script call costs a
    fraction as much.

    With a socket timeout, redis-py sends through ``asyncio.wait_for``, which on Python
    3.11 wraps every write in a new Task: three extra event-loop steps per command, about
    a tenth of a round trip. A write only blocks when the socket buffer is full, so here the
    bytes are handed to the transport at once and the timeout is armed only if ``drain()``
    really has to wait. Everything else (reconnect, health checks) stays redis-py's.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        # As redis-py does: 'CONFIG GET' is two words of the protocol (most names are one).
        if isinstance(first, str):
            if " " in first:
                args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [_hiredis_pack(args)]
        except TypeError:
            # Let redis-py's packer explain what it cannot encode (bytearray, memoryview...).
            return super().pack_command(*args)  # type: ignore[misc,no-any-return]

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        conn: Any = self
        writer = getattr(conn, "_writer", None)
        if not conn.socket_timeout or not conn.is_connected or writer is None:
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
            return
        if check_health:
            await conn.check_health()
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        try:
            writer.writelines(command)
            if writer.transport.get_write_buffer_size():
                async with asyncio.timeout(conn.socket_timeout):
                    await writer.drain()
        except TimeoutError:
            await conn.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await conn.disconnect(nowait=True)
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:
            await conn.disconnect(nowait=True)
            raise


_FAST_CLASSES: dict[type, type] = {}


@async_only
def _fast_connection(connection_class: type) -> type:
    """``connection_class`` with :class:`_FastConnectionMixin` in front (one per class)."""
    if issubclass(connection_class, _FastConnectionMixin):
        return connection_class  # a node pool made from a Cluster client's connection kwargs
    made = _FAST_CLASSES.get(connection_class)
    if made is None:
        made = type(connection_class.__name__, (_FastConnectionMixin, connection_class), {})
        _FAST_CLASSES[connection_class] = made
    return made


@async_only
async def _take_slot(slots: asyncio.Semaphore, pool_timeout: float, size: int) -> None:
    """Take one of ``size`` connection slots, waiting at most ``pool_timeout`` seconds.

    A free slot costs no suspension and no timer; only a caller that must wait arms one.
    """
    if not slots.locked():
        await slots.acquire()
        return
    try:
        async with asyncio.timeout(pool_timeout):
            await slots.acquire()
    except TimeoutError:
        raise RedisConnectionError(
            f"no free connection within {pool_timeout}s: all {size} are busy "
            "(raise REDKIT_MAX_CONNECTIONS or REDKIT_POOL_TIMEOUT)"
        ) from None


@async_only
class QueueingConnectionPool(ConnectionPool):
    """A pool of at most ``max_connections`` where further callers wait their turn.

    redis-py's own ``ConnectionPool`` raises "Too many connections" past its size, and its
    ``BlockingConnectionPool`` waits but costs ~13% of the round-trip rate (a Condition and a
    timeout on every checkout). Here a semaphore gates checkouts: when a connection is free,
    taking it costs no suspension and no timer; only a caller that must wait arms
    ``pool_timeout``.
    """

    def __init__(self, *, pool_timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connection_class = _fast_connection(self.connection_class)
        self.pool_timeout = pool_timeout
        self._slots = asyncio.Semaphore(self.max_connections)
        # Connections that hold a slot. A failed checkout hands its connection back through
        # release() before it was ever added here, so a slot is never returned twice.
        self._holding: set[Any] = set()

    def reset(self) -> None:
        super().reset()  # type: ignore[no-untyped-call]
        if hasattr(self, "_slots"):
            self._slots = asyncio.Semaphore(self.max_connections)
            self._holding = set()

    def _lean(self) -> bool:
        """May checkout and release skip redis-py's hooks?

        redis-py records OpenTelemetry connection counts and dispatches a re-authentication
        event on every checkout and release: about 6 of the 9 us they cost here, on every
        command. Both matter only with redis-py's observability initialised or a streaming
        credential provider; otherwise the same steps run without them.
        """
        if _observability_on():
            return False
        provider = self.connection_kwargs.get("credential_provider")
        return not isinstance(provider, StreamingCredentialProvider)

    async def get_connection(self, *args: Any, **options: Any) -> Any:
        return await self.checkout(None, *args, **options)

    async def checkout(
        self, watch: Callable[[Any], object] | None = None, *args: Any, **options: Any
    ) -> Any:
        """A connection, as :meth:`get_connection`; ``watch`` is told which one before it
        is set up (connected, handshake done), so that its caller can look into its socket
        meanwhile: a handshake reply that came while the event loop was busy is no silence.
        """
        await _take_slot(self._slots, self.pool_timeout, self.max_connections)
        try:
            if self._lean():
                connection = await self._lean_checkout(watch)
            else:
                connection = await super().get_connection(*args, **options)  # type: ignore[no-untyped-call]
        except BaseException:
            self._slots.release()
            raise
        self._holding.add(connection)
        return connection

    def lends_at_once(self) -> bool:
        """Would a checkout now hand out a connected connection, without waiting for a slot
        or opening one? (Then a caller need not arm a timer around it.)"""
        if self._slots.locked():
            return False
        available = self._available_connections
        return bool(available) and bool(available[-1].is_connected)

    async def ensure_connection(self, connection: Any) -> None:
        try:
            await super().ensure_connection(connection)
        except BaseException:
            # A set-up cut short (by a caller's time limit) may leave a handshake half done,
            # whose late reply would be read as the next command's: start afresh next time.
            await connection.disconnect(nowait=True)
            raise

    async def _lean_checkout(self, watch: Callable[[Any], object] | None = None) -> Any:
        # redis-py's steps: take an idle connection (or make one), mark it in use, make sure
        # it is connected and clean. Nothing awaits between the first two, so no lock is
        # needed for them (redis-py's lock guards the same two steps).
        connection = self.get_available_connection()  # type: ignore[no-untyped-call]
        if watch is not None:
            watch(connection)
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self._lean_checkin(connection)
            raise
        return connection

    async def _lean_checkin(self, connection: Any) -> None:
        self._in_use_connections.remove(connection)
        should_reconnect = getattr(connection, "should_reconnect", None)  # redis-py >= 7
        if should_reconnect is not None and should_reconnect():
            await connection.disconnect()
        self._available_connections.append(connection)

    async def release(self, connection: Any) -> None:
        try:
            if self._lean():
                await self._lean_checkin(connection)
            else:
                await super().release(connection)
        finally:
            if connection in self._holding:
                self._holding.discard(connection)
                self._slots.release()


@async_only
class QueueingSentinelConnectionPool(SentinelConnectionPool):
    """The master's pool of a Sentinel client, where callers beyond ``max_connections``
    wait their turn (as in :class:`QueueingConnectionPool`) instead of failing with "Too
    many connections". Each new connection still asks the Sentinels where the master is."""

    def __init__(self, *args: Any, pool_timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.pool_timeout = pool_timeout
        self._slots = asyncio.Semaphore(self.max_connections)
        self._holding: set[Any] = set()

    def reset(self) -> None:
        super().reset()  # type: ignore[no-untyped-call]
        if hasattr(self, "_slots"):
            self._slots = asyncio.Semaphore(self.max_connections)
            self._holding = set()

    async def get_connection(self, *args: Any, **options: Any) -> Any:
        await _take_slot(self._slots, self.pool_timeout, self.max_connections)
        try:
            connection = await super().get_connection(*args, **options)  # type: ignore[no-untyped-call]
        except BaseException:
            self._slots.release()
            raise
        self._holding.add(connection)
        return connection

    async def release(self, connection: Any) -> None:
        try:
            await super().release(connection)
        finally:
            if connection in self._holding:
                self._holding.discard(connection)
                self._slots.release()


@async_only
class QueueingRedisCluster(RedisCluster):
    """A Cluster client whose callers queue for a connection instead of failing.

    redis-py's Cluster client keeps a pool per node and raises ``MaxConnectionsError`` when
    one is exhausted (500 concurrent calls on one hot key would do it). A semaphore of
    ``max_connections`` in front of every command keeps the total, and so each node's share,
    within the per-node pool size; only a caller that must wait arms ``pool_timeout``.
    Pipelines bypass the gate (they take connections node by node themselves).
    """

    def __init__(self, *args: Any, pool_timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The lean connection of the standalone client (hiredis packing, no Task per write)
        # for every node: redis-py fixes the class in its constructor, so it is swapped here,
        # in the kwargs that nodes found later are made from and in the nodes made already.
        fast = _fast_connection(self.connection_kwargs["connection_class"])
        self.connection_kwargs["connection_class"] = fast
        for node in (*self.startup_nodes, *self.nodes_manager.startup_nodes.values()):
            node.connection_class = fast
        self.pool_timeout = pool_timeout
        self.max_connections = int(kwargs.get("max_connections", 100))
        self._slots = asyncio.Semaphore(self.max_connections)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        await _take_slot(self._slots, self.pool_timeout, self.max_connections)
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._slots.release()


if not IS_ASYNC:
    # Sync: the threads beyond max_connections queue here. redis-py's BlockingConnectionPool
    # queues them too, but through a queue and a condition on every checkout (about a fifth
    # of a lock pair's client time). Here the free slots are tokens in a SimpleQueue (C:
    # taking one is one call while a connection is free; threading.Semaphore is a Python
    # Condition, ~1.5 us a checkout), in front of the plain pool.

    class ThreadQueueingConnectionPool(ConnectionPool):
        """A pool of at most ``max_connections`` where further threads wait their turn
        (at most ``pool_timeout``) instead of failing with "Too many connections"."""

        def __init__(self, *, pool_timeout: float = 10.0, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.pool_timeout = pool_timeout
            self._slots = _free_slots(self.max_connections)
            # Connections that hold a slot: a slot is given back once, by its connection.
            self._holding: set[Any] = set()

        def reset(self) -> None:
            super().reset()
            if hasattr(self, "_slots"):  # a forked child starts with every slot free
                self._slots = _free_slots(self.max_connections)
                self._holding = set()

        def _lean(self) -> bool:
            """May checkout and release skip redis-py's hooks?

            redis-py records OpenTelemetry connection counts and dispatches a
            re-authentication event on every checkout and release: about 7 of the 10 us a
            checkout and release cost here, twice per lock pair. Both matter only with
            redis-py's observability initialised or a streaming credential provider, and
            the lean steps below are redis-py's without a client-side cache; otherwise
            redis-py's own steps run.
            """
            if _observability_on() or getattr(self, "cache", None) is not None:
                return False
            provider = self.connection_kwargs.get("credential_provider")
            return not isinstance(provider, StreamingCredentialProvider)

        def get_connection(self, *args: Any, **options: Any) -> Any:
            slots = self._slots
            try:
                slots.get_nowait()
            except queue.Empty:
                try:
                    slots.get(timeout=self.pool_timeout)
                except queue.Empty:
                    raise RedisConnectionError(
                        f"no free connection within {self.pool_timeout}s: all "
                        f"{self.max_connections} are busy (raise REDKIT_MAX_CONNECTIONS or "
                        "REDKIT_POOL_TIMEOUT)"
                    ) from None
            try:
                if self._lean():
                    connection = self._lean_checkout()
                else:
                    connection = super().get_connection(*args, **options)
            except BaseException:
                slots.put(None)
                raise
            self._holding.add(connection)
            return connection

        def _lean_checkout(self) -> Any:
            # redis-py's steps: after a fork, start afresh (the pid check); take an idle
            # connection (or make one) and mark it in use, under the pool's lock; make sure
            # it is connected and has nothing unread (else reconnect once), except where
            # redis-py lets pending maintenance notifications through.
            self._checkpid()
            with self._lock:
                try:
                    connection = self._available_connections.pop()
                except IndexError:
                    connection = self.make_connection()
                self._in_use_connections.add(connection)
            maintenance = getattr(self, "maint_notifications_enabled", None)
            try:
                connection.connect()
                try:
                    if connection.can_read() and not (maintenance and maintenance()):
                        raise RedisConnectionError("Connection has data")
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    connection.disconnect()
                    connection.connect()
                    if connection.can_read() and not (maintenance and maintenance()):
                        raise RedisConnectionError("Connection not ready") from None
            except BaseException:
                self._lean_checkin(connection)
                raise
            return connection

        def _lean_checkin(self, connection: Any) -> None:
            self._checkpid()
            with self._lock:
                try:
                    self._in_use_connections.remove(connection)
                except KeyError:
                    return  # not this pool's (or a forked child's reset pool)
                if not self.owns_connection(connection):
                    connection.disconnect()  # made in the parent before a fork
                    if connection.pid == self.pid:
                        self._created_connections -= 1
                    return
                should_reconnect = getattr(connection, "should_reconnect", None)
                if should_reconnect is not None and should_reconnect():
                    connection.disconnect()
                self._available_connections.append(connection)

        def release(self, connection: Any) -> None:
            try:
                if self._lean():
                    self._lean_checkin(connection)
                else:
                    super().release(connection)
            finally:
                if connection in self._holding:
                    self._holding.discard(connection)
                    self._slots.put(None)

    def _free_slots(size: int) -> queue.SimpleQueue[None]:
        """``size`` free slots: one token each, taken by a checkout and put back by its
        release. Bounded: at most ``size`` tokens (one per slot; a slot is given back once)."""
        slots: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(size):
            slots.put(None)
        return slots


def _retry() -> Retry:
    # One immediate retry, on a dropped connection only: it heals a pooled connection that
    # died with a server restart before the event loop noticed (the command then never ran).
    # Timeouts are not retried, so a hung server costs one command timeout. The price: if a
    # server executes a command and dies before its reply leaves, the retry runs it again on
    # the restarted server (at-least-once, like every client that retries).
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def create_client(url: str, options: ConnectionOptions) -> tuple[Redis | RedisCluster, Mode]:
    """A redis-py asyncio client for ``url`` (no I/O happens until the first command)."""
    parsed = parse_url(url)
    common: dict[str, Any] = {
        "socket_connect_timeout": options.connect_timeout,
        "socket_timeout": options.command_timeout,
        "client_name": options.client_name,
    }
    if parsed.mode == "standalone":
        if IS_ASYNC:
            pool: ConnectionPool = QueueingConnectionPool.from_url(
                parsed.url,
                max_connections=options.max_connections,
                pool_timeout=options.pool_timeout,
                retry=_retry(),
                **common,
            )
        else:
            pool = ThreadQueueingConnectionPool.from_url(
                parsed.url,
                max_connections=options.max_connections,
                pool_timeout=options.pool_timeout,
                retry=_retry(),
                **common,
            )
        return Redis.from_pool(pool), "standalone"

    extra: dict[str, Any] = dict(parsed.query)
    if parsed.mode == "cluster":
        # Sync: redis-py's RedisCluster; its per-node pools hold max_connections each (a
        # thread beyond that gets an error, not a wait: size it to the threads).
        if IS_ASYNC:
            extra["pool_timeout"] = options.pool_timeout
        cluster = QueueingRedisCluster if IS_ASYNC else RedisCluster
        client = cluster(
            startup_nodes=[ClusterNode(host, port) for host, port in parsed.hosts],
            username=parsed.username,
            password=parsed.password,
            ssl=parsed.tls,
            max_connections=options.max_connections,
            # No cluster-level retry: it would retry a timeout too and double the bound; a
            # dropped connection makes the client re-read the topology for the next call.
            retry=_no_retry(),
            **common,
            **extra,
        )
        return client, "cluster"

    sentinel_password = extra.pop("sentinel_password", None)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(parsed.hosts),
        sentinel_kwargs={
            "password": sentinel_password,
            "socket_connect_timeout": options.connect_timeout,
            "socket_timeout": options.command_timeout,
        },
        username=parsed.username,
        password=parsed.password,
        ssl=parsed.tls,
        db=parsed.db,
        retry=_retry(),
        **common,
        **extra,
    )
    assert parsed.service is not None
    # Sync: redis-py's own Sentinel pool (threads beyond max_connections fail, as on a sync
    # Cluster); async callers queue for the master's connections.
    master = sentinel.master_for(
        parsed.service,
        connection_pool_class=QueueingSentinelConnectionPool
        if IS_ASYNC
        else SentinelConnectionPool,
        max_connections=options.max_connections,
        **({"pool_timeout": options.pool_timeout} if IS_ASYNC else {}),  # type: ignore[arg-type]
    )
    return master, "sentinel"
