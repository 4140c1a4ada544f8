"""``redkit.connect()`` and :class:`Redkit`, the handle every primitive hangs from."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Generator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import redis.exceptions as redis_errors
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from redkit._codegen import IS_ASYNC, async_only
from redkit.codec import seconds
from redkit.connection import ConnectionOptions, Mode, create_client, redact_url
from redkit.durability import Replication
from redkit.embedded import EmbeddedValkey, follow_embedded
from redkit.errors import (
    ConfigurationError,
    InvalidInput,
    NotReplicated,
    connection_lost,
    translate_redis_errors,
)
from redkit.evalsha import call_script
from redkit.keys import Keyspace
from redkit.pipelining import AutoPipeline, ClusterAutoPipeline
from redkit.scripts import Script, ScriptArg
from redkit.settings import Settings

if TYPE_CHECKING:
    from redkit.cache import Cache
    from redkit.jobs import Queue, Schedule, Worker
    from redkit.locks import Lock, ReadWriteLock, Semaphore
    from redkit.notify import NotificationBus
    from redkit.otel import Tracing
    from redkit.ratelimit import Algorithm, RateLimiter, RateLimits
    from redkit.sessions import SessionStore

__all__ = ["MIN_REDIS", "MIN_VALKEY", "Redkit", "ServerInfo", "connect", "connect_settings"]

MIN_REDIS = (6, 2)
MIN_VALKEY = (7, 2)


@dataclass(frozen=True)
class ServerInfo:
    """What ``redkit info`` shows."""

    url: str
    mode: Mode
    server: str
    """``valkey`` or ``redis``."""
    version: str
    nodes: int
    used_memory: int
    """Bytes, summed over the Cluster's primaries."""
    used_memory_human: str
    namespace: str
    keys_in_namespace: int
    embedded: bool
    data_dir: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _version_tuple(text: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in text.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def _server_and_version(info: dict[str, Any]) -> tuple[str, str]:
    # Valkey reports both redis_version (compatibility, 7.2.4) and valkey_version.
    if "valkey_version" in info:
        return "valkey", str(info["valkey_version"])
    if str(info.get("server_name", "")).lower() == "valkey":
        return "valkey", str(info.get("redis_version", "0"))
    return "redis", str(info.get("redis_version", "0"))


def _hello_info(reply: Any) -> dict[str, Any]:
    """``HELLO``'s reply (a map, or a flat list in RESP2) as INFO's server and version keys."""
    if isinstance(reply, list | tuple):
        reply = dict(zip(reply[::2], reply[1::2], strict=True))
    fields = {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else v
        )
        for k, v in dict(reply).items()
    }
    return {"server_name": fields.get("server", ""), "redis_version": fields.get("version", "0")}


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if size < 1024 or unit == "T":
            return f"{size:.2f}{unit}" if unit != "B" else f"{int(size)}B"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


class Redkit:
    """A connection to one server (or Cluster), bound to one namespace.

    Make one with :func:`connect`. The primitives (``rk.sessions()``, ``rk.lock()``, ...) are
    methods of this object and share its client.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        mode: Mode,
        url: str,
        settings: Settings,
        embedded: EmbeddedValkey | None = None,
    ) -> None:
        self.redis = client
        """The redis-py asyncio client underneath (``Redis`` or ``RedisCluster``)."""
        self.mode: Mode = mode
        self.server_kind = "valkey"
        """``redis`` or ``valkey``, as the server said when redkit connected."""
        self.server_version = "0"
        """The server's version, as it said when redkit connected."""
        self.url = redact_url(url)
        self.settings = settings
        self.namespace = settings.namespace
        self.keys = Keyspace(settings.namespace)
        self.embedded = embedded
        self.tracing: Tracing | None = None
        """OpenTelemetry spans of this client's operations, or None (the default): see
        :mod:`redkit.otel` (``connect(tracing=True)``, ``redkit.otel.instrument(rk)``)."""
        self._closed = False
        if IS_ASYNC:
            # Sync: no automatic pipeline. A sync call holds its connection for one plain
            # round trip and returns; there are no callers waiting on the same connection
            # whose calls could travel together (threads each take a pooled connection).
            self.pipeline: AutoPipeline | ClusterAutoPipeline | None = None
            """The automatic pipeline script calls go through (None with
            ``auto_pipeline=False``). On a Cluster, one per primary node, fed by the slot of
            each call's keys."""
            if settings.auto_pipeline and isinstance(client, RedisCluster):
                self.pipeline = ClusterAutoPipeline(client, spin_wait=settings.spin_wait)
            elif settings.auto_pipeline and isinstance(client, Redis):
                self.pipeline = AutoPipeline(client, spin_wait=settings.spin_wait)

    def _embedded_moved(self, handle: EmbeddedValkey) -> None:
        """The embedded server was replaced; the client follows it (see follow_embedded)."""
        self.embedded = handle
        self.url = redact_url(handle.url)

    def __repr__(self) -> str:
        where = "embedded " if self.embedded else ""
        return f"<Redkit {where}{self.mode} {self.url} namespace={self.namespace!r}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (background tasks use it to stop reconnecting)."""
        return self._closed

    @property
    def is_cluster(self) -> bool:
        return self.mode == "cluster"

    @property
    def has_sharded_pubsub(self) -> bool:
        """Whether the server has sharded pub/sub (``SPUBLISH``): Valkey, or Redis >= 7.0."""
        return self.server_kind == "valkey" or _version_tuple(self.server_version)[:2] >= (7, 0)

    async def close(self) -> None:
        """Close the client's connections. The embedded server keeps running until exit."""
        if self._closed:
            return
        self._closed = True
        if IS_ASYNC and self.pipeline is not None:
            await self.pipeline.aclose()
        await self.redis.aclose()

    async def run(
        self,
        script: Script,
        keys: Sequence[str],
        args: Sequence[ScriptArg] = (),
        time_limit: float | None = None,
    ) -> Any:
        """Run one of redkit's scripts: one round trip, shared with concurrent callers.

        With automatic pipelining on (the default), calls made while others are in flight
        travel together in one pipeline (on a Cluster: one per node, for the calls whose
        keys that node serves); see :mod:`redkit.pipelining`. ``time_limit`` (seconds)
        bounds the call, shorter than the command timeout: past it the call raises
        :class:`~redkit.errors.ConnectionLost`. Through the pipeline the limit measures the
        server's silence (a reply that came while the event loop was busy counts, however
        late it is read); without it (``auto_pipeline=False``) it bounds the whole call.
        """
        if IS_ASYNC:
            # Sync: one plain round trip, and ``time_limit`` is not applied: the call is
            # bounded by the client's command timeout (redis-py's sync client has no
            # per-call deadline to give it).
            if self.pipeline is not None:
                return await self.pipeline.run(script, keys, args, time_limit)
            if time_limit is not None:
                try:
                    async with asyncio.timeout(time_limit):
                        return await call_script(script, self.redis, keys, args)
                except TimeoutError as exc:
                    raise connection_lost(f"script {script.name}", exc) from exc
        return await call_script(script, self.redis, keys, args)

    async def run_replicated(
        self,
        script: Script,
        keys: Sequence[str],
        args: Sequence[ScriptArg],
        replication: Replication,
    ) -> Any:
        """Run ``script``, then ``WAIT`` for ``replication.replicas`` replicas on the same
        connection (see :mod:`redkit.durability`); return the script's reply.

        Raises :class:`~redkit.errors.NotReplicated` when fewer replicas confirmed the
        write within ``replication.timeout`` (the write stays done on the master)."""
        wait = ("WAIT", replication.replicas, replication.timeout_ms)
        if IS_ASYNC and self.pipeline is not None:
            reply, confirmed = await self.pipeline.run(script, keys, args, then=[wait])
        else:
            # No pipeline (auto_pipeline=False, standalone or Sentinel): a redis-py pipeline
            # keeps both commands on one connection; EVAL needs no NOSCRIPT round.
            with translate_redis_errors(f"script {script.name}"):
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.execute_command("EVAL", script.source, len(keys), *keys, *args)
                    pipe.execute_command(*wait)
                    reply, confirmed = await pipe.execute()
        if int(confirmed) < replication.replicas:
            raise NotReplicated(
                f"script {script.name}: done on the master, but {int(confirmed)} of "
                f"{replication.replicas} replica(s) confirmed it within "
                f"{replication.timeout:g} s; a failover now may lose it",
                confirmed=int(confirmed),
                wanted=replication.replicas,
            )
        return reply

    async def ping(self) -> float:
        """Seconds for one ``PING`` round trip; raises ConnectionLost if there is no answer."""
        began = time.perf_counter()
        with translate_redis_errors("PING"):
            await self.redis.ping()
        return time.perf_counter() - began

    async def _infos(self, section: str) -> list[dict[str, Any]]:
        """``INFO section`` of each primary (one entry on a standalone server)."""
        if isinstance(self.redis, RedisCluster):
            nodes = self.redis.get_primaries()
            results = await asyncio.gather(
                *(self.redis.info(section, target_nodes=node) for node in nodes)
            )
            return [dict(r) for r in results]
        return [dict(await self.redis.info(section))]

    async def server_info(self, *, count_keys: bool = True) -> ServerInfo:
        """Server kind, version, memory and the number of keys in this namespace.

        Counting keys walks the namespace with ``SCAN`` (never ``KEYS``): an admin's view,
        proportional to the size of the database; pass ``count_keys=False`` to skip it.
        """
        with translate_redis_errors("INFO"):
            servers = await self._infos("server")
            memory = await self._infos("memory")
            keys = 0
            if count_keys:
                async for _ in self.redis.scan_iter(match=self.keys.pattern, count=1000):
                    keys += 1
        kind, version = _server_and_version(servers[0])
        used = sum(int(m.get("used_memory", 0)) for m in memory)
        return ServerInfo(
            url=self.url,
            mode=self.mode,
            server=kind,
            version=version,
            nodes=len(servers),
            used_memory=used,
            used_memory_human=_human_bytes(used),
            namespace=self.namespace,
            keys_in_namespace=keys,
            embedded=self.embedded is not None,
            data_dir=str(self.embedded.data_dir) if self.embedded else None,
        )

    # -- the primitives: each is a small object over this client and keyspace ---------------

    def lock(
        self,
        name: str,
        ttl: float | timedelta = 30,
        timeout: float | timedelta | None = None,
        auto_renew: bool = True,
        **options: Any,
    ) -> Lock:
        """A distributed lock (see :class:`redkit.locks.Lock`)."""
        from redkit.locks import Lock

        return Lock(self, name, ttl=ttl, timeout=timeout, auto_renew=auto_renew, **options)

    def semaphore(
        self, name: str, limit: int, ttl: float | timedelta = 30, **options: Any
    ) -> Semaphore:
        """At most ``limit`` holders at once (see :class:`redkit.locks.Semaphore`)."""
        from redkit.locks import Semaphore

        return Semaphore(self, name, limit=limit, ttl=ttl, **options)

    def read_write_lock(
        self,
        name: str,
        ttl: float | timedelta = 30,
        timeout: float | timedelta | None = None,
        auto_renew: bool = True,
        **options: Any,
    ) -> ReadWriteLock:
        """Many readers or one writer (see :class:`redkit.locks.ReadWriteLock`)."""
        from redkit.locks import ReadWriteLock

        return ReadWriteLock(self, name, ttl=ttl, timeout=timeout, auto_renew=auto_renew, **options)

    def sessions(
        self,
        idle_ttl: float | timedelta = timedelta(days=7),
        absolute_ttl: float | timedelta = timedelta(days=30),
        max_per_user: int | None = None,
        touch_every: float | timedelta | None = None,
        **options: Any,
    ) -> SessionStore:
        """A session store (see :class:`redkit.sessions.SessionStore`)."""
        from redkit.sessions import SessionStore

        return SessionStore(
            self,
            idle_ttl=idle_ttl,
            absolute_ttl=absolute_ttl,
            max_per_user=max_per_user,
            touch_every=touch_every,
            **options,
        )

    def cache(self, default_ttl: float | timedelta = 300, **options: Any) -> Cache:
        """A response/value cache (see :class:`redkit.cache.Cache`)."""
        from redkit.cache import Cache

        return Cache(self, default_ttl=default_ttl, **options)

    def rate_limiter(
        self,
        limit: int,
        window: float | timedelta,
        algorithm: Algorithm | str = "sliding_window",
        burst: int | None = None,
        **options: Any,
    ) -> RateLimiter:
        """``limit`` units per ``window`` per key (see :class:`redkit.ratelimit.RateLimiter`)."""
        from redkit.ratelimit import RateLimiter

        return RateLimiter(self, limit, window, algorithm, burst, **options)

    def rate_limits(self, limiters: list[RateLimiter], **options: Any) -> RateLimits:
        """Several limiters checked and consumed together (all or nothing) in one script."""
        from redkit.ratelimit import RateLimits

        return RateLimits(self, limiters, **options)

    def notifications(self, history: int = 100, **options: Any) -> NotificationBus:
        """Pub/sub with history and resume (see :class:`redkit.notify.NotificationBus`)."""
        from redkit.notify import NotificationBus

        return NotificationBus(self, history=history, **options)

    def queue(self, name: str, **options: Any) -> Queue:
        """A job queue (see :class:`redkit.jobs.Queue`)."""
        from redkit.jobs import Queue

        return Queue(self, name, **options)

    @async_only  # the worker is async: a plain `def` job runs in its threads
    def worker(
        self,
        queues: Sequence[str | Queue] | str,
        functions: Mapping[str, Callable[..., Any]],
        concurrency: int = 10,
        **options: Any,
    ) -> Worker:
        """A worker that runs jobs of ``queues`` (see :class:`redkit.jobs.Worker`)."""
        from redkit.jobs import Worker

        return Worker(self, queues=queues, functions=functions, concurrency=concurrency, **options)

    @async_only  # schedules are created beside the worker that runs them
    def schedule(self, cron: str, function: str, payload: Any = None, **options: Any) -> Schedule:
        """A cron entry, each tick enqueued exactly once (see :class:`redkit.jobs.Schedule`)."""
        from redkit.jobs import Schedule

        return Schedule(self, cron=cron, function=function, payload=payload, **options)

    async def _check_server(self) -> None:
        with translate_redis_errors("connect"):
            # Sync: redis-py's sync RedisCluster reads the topology in its constructor.
            if IS_ASYNC and isinstance(self.redis, RedisCluster):
                await self.redis.initialize()
            try:
                info = (await self._infos("server"))[0]
            except redis_errors.NoPermissionError:
                # An ACL user limited to its namespace (a platform project's) may not run
                # INFO: INFO keyspace counts every tenant's keys. HELLO names the server and
                # its version to every user.
                info = _hello_info(await self.redis.execute_command("HELLO"))
        kind, version = _server_and_version(info)
        self.server_kind, self.server_version = kind, version
        need = MIN_VALKEY if kind == "valkey" else MIN_REDIS
        if _version_tuple(version)[:2] < need:
            raise ConfigurationError(
                f"{kind} {version} at {self.url} is too old: redkit needs Redis >= 6.2 or "
                "Valkey >= 7.2"
            )


def connect_settings(
    url: str | None = None,
    namespace: str | None = None,
    data_dir: str | Path | None = None,
    connect_timeout: float | timedelta | None = None,
    command_timeout: float | timedelta | None = None,
    max_connections: int | None = None,
    auto_pipeline: bool | None = None,
    tracing: bool | None = None,
) -> Settings:
    """The :class:`~redkit.settings.Settings` that :func:`connect` would use given these
    arguments: those given win, the environment (and ``.env``) fills in the rest.

    Nothing connects: integrations call it to report a bad URL, namespace or timeout where
    the application is configured, long before it connects. Raises
    :class:`~redkit.errors.ConfigurationError`.
    """
    overrides: dict[str, Any] = {}
    if url is not None:
        overrides["redis_url"] = url
    if namespace is not None:
        overrides["namespace"] = namespace
    if data_dir is not None:
        overrides["data_dir"] = Path(data_dir)
    try:
        if connect_timeout is not None:
            overrides["connect_timeout"] = seconds(connect_timeout, "connect_timeout")
        if command_timeout is not None:
            overrides["command_timeout"] = seconds(command_timeout, "command_timeout")
    except InvalidInput as exc:
        raise ConfigurationError(str(exc)) from None
    if max_connections is not None:
        overrides["max_connections"] = max_connections
    if auto_pipeline is not None:
        overrides["auto_pipeline"] = auto_pipeline
    if tracing is not None:
        overrides["tracing"] = tracing
    try:
        # Arguments given here win; the environment (and .env) fills in the rest.
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(f"invalid redkit settings: {exc}") from exc


async def _connect(settings: Settings) -> Redkit:
    embedded: EmbeddedValkey | None = None
    url = settings.redis_url
    if url is None:
        embedded = await asyncio.to_thread(EmbeddedValkey.acquire, settings.data_dir)
        url = embedded.url
    client, mode = create_client(
        url,
        ConnectionOptions(
            connect_timeout=settings.connect_timeout,
            command_timeout=settings.command_timeout,
            max_connections=settings.max_connections,
            pool_timeout=settings.pool_timeout,
            client_name=f"redkit:{settings.namespace}",
        ),
    )
    rk = Redkit(client, mode=mode, url=url, settings=settings, embedded=embedded)
    # Sync: the client stays on the embedded server's port it started with (following a
    # replaced server hooks redis-py's asyncio connection).
    if IS_ASYNC and embedded is not None:
        # The directory's server may be replaced (redkit server --stop, a crash) on a new
        # port: the client then reconnects to the current one instead of the dead port.
        follow_embedded(client, embedded, rk._embedded_moved)
    try:
        await rk._check_server()
        if settings.tracing:
            _instrument(rk)
    except BaseException:
        await rk.close()
        raise
    return rk


def _instrument(rk: Redkit) -> None:
    try:
        from redkit.otel import instrument
    except ImportError as exc:
        raise ConfigurationError(
            "tracing is on (tracing=True or REDKIT_TRACING) but OpenTelemetry is not "
            "installed: pip install 'redkit[otel]', or switch tracing off"
        ) from exc
    instrument(rk)


@async_only
class _Connecting(Coroutine[Any, Any, Redkit]):
    """What :func:`connect` returns: a coroutine (``await`` it, ``asyncio.run`` it) that is
    also an async context manager (``async with connect() as rk``), which closes the client."""

    __slots__ = ("_coro", "_rk")

    def __init__(self, settings: Settings) -> None:
        self._coro = _connect(settings)
        self._rk: Redkit | None = None

    def send(self, value: Any) -> Any:
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Redkit]:
        return self._coro.__await__()

    async def __aenter__(self) -> Redkit:
        self._rk = await self._coro
        return self._rk

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._rk is not None:
            await self._rk.close()


def connect(
    url: str | None = None,
    namespace: str | None = None,
    *,
    data_dir: str | Path | None = None,
    connect_timeout: float | timedelta | None = None,
    command_timeout: float | timedelta | None = None,
    max_connections: int | None = None,
    auto_pipeline: bool | None = None,
    tracing: bool | None = None,
) -> _Connecting:
    """Connect to Redis/Valkey and return a :class:`Redkit` bound to ``namespace``.

    ``rk = await redkit.connect()`` or ``async with redkit.connect() as rk: ...``

    With no ``url`` and no ``REDIS_URL`` in the environment, redkit starts (or reuses) the
    embedded Valkey server of ``data_dir`` (default ``./.redkit/data``, or
    ``REDKIT_DATA_DIR``). Arguments left as ``None`` come from the environment
    (see :class:`redkit.settings.Settings`). The server must be Redis >= 6.2 or Valkey >= 7.2.

    Raises :class:`~redkit.errors.ConnectionLost` if the server does not answer within the
    connect timeout and :class:`~redkit.errors.ConfigurationError` for a bad URL or setting.
    ``auto_pipeline`` (default on) lets concurrent script calls share round trips.
    ``tracing`` (default off; needs ``redkit[otel]``) makes OpenTelemetry spans of every
    operation through the global tracer provider: see :mod:`redkit.otel`.
    """
    settings = connect_settings(
        url,
        namespace,
        data_dir,
        connect_timeout,
        command_timeout,
        max_connections,
        auto_pipeline,
        tracing,
    )
    if IS_ASYNC:
        # Sync: connect() connects and returns the Redkit, itself a context manager.
        return _Connecting(settings)
    else:  # noqa: RET505 (the marker's sync branch)
        return _connect(settings)
