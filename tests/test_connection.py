"""connect(): URL schemes, settings from the environment, and the server check."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

import redkit
from redkit.connection import parse_url, redact_url
from redkit.embedded import ValkeyProcess
from servers import TEST_CONFIG, Cluster


@pytest.mark.parametrize(
    ("url", "mode", "tls"),
    [
        ("redis://localhost:6380/2", "standalone", False),
        ("redis://:secret@localhost", "standalone", False),
        ("rediss://user:pw@cache.example:6380/0?ssl_cert_reqs=none", "standalone", True),
        ("unix:///run/valkey.sock?db=3", "standalone", False),
        ("redis+cluster://a:7000,b:7001,c:7002", "cluster", False),
        ("rediss+cluster://:pw@a:7000", "cluster", True),
        ("redis://a:7000?cluster=true", "cluster", False),
        ("redis+sentinel://s1:26379,s2:26380/mymaster/1", "sentinel", False),
    ],
)
def test_urls_are_classified(url: str, mode: str, tls: bool) -> None:
    parsed = parse_url(url)
    assert parsed.mode == mode
    assert parsed.tls is tls


def test_cluster_seeds_and_credentials_are_read() -> None:
    parsed = parse_url("redis+cluster://alice:s%40cret@h1:7000,h2,[::1]:7002")
    assert parsed.hosts == (("h1", 7000), ("h2", 6379), ("::1", 7002))
    assert (parsed.username, parsed.password) == ("alice", "s@cret")


def test_sentinel_service_db_and_password() -> None:
    parsed = parse_url("redis+sentinel://:pw@s1,s2:26380/mymaster/2?sentinel_password=sp")
    assert parsed.hosts == (("s1", 26379), ("s2", 26380))
    assert (parsed.service, parsed.db, parsed.password) == ("mymaster", 2, "pw")
    assert dict(parsed.query) == {"sentinel_password": "sp"}


def test_the_cluster_flag_is_not_passed_on_to_redis_py() -> None:
    parsed = parse_url("redis://h:1?cluster=no&health_check_interval=5")
    assert parsed.mode == "standalone"
    assert "cluster" not in parsed.url
    assert "health_check_interval=5" in parsed.url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("localhost:6379", "not a Redis URL"),
        ("http://localhost", "unsupported URL scheme"),
        ("redis+sentinel://s1:26379", "names no service"),
        ("redis+cluster://h:notaport", "bad port"),
        ("redis+cluster://h:7000/3", "only database 0"),
        ("redis+cluster://", "no host"),
        ("unix://", "no socket path"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(redkit.ConfigurationError, match=message):
        parse_url(url)


def test_passwords_never_reach_logs() -> None:
    assert redact_url("redis://bob:hunter2@h:1/0") == "redis://bob:***@h:1/0"
    assert redact_url("redis://h:1") == "redis://h:1"
    assert "hunter2" not in repr(parse_url("redis://:hunter2@h").url.replace("hunter2", "***"))


async def test_bad_input_to_connect_raises_before_any_io() -> None:
    with pytest.raises(redkit.ConfigurationError):
        redkit.connect("redis://localhost:1", namespace="bad namespace")
    with pytest.raises(redkit.ConfigurationError, match="command_timeout must be"):
        redkit.connect("redis://localhost:1", command_timeout=0)


@pytest.mark.cluster
async def test_connect_gives_the_right_client_for_the_server(
    redis_url: str, server_kind: str
) -> None:
    async with redkit.connect(redis_url, "conn") as rk:
        if server_kind == "cluster":
            assert isinstance(rk.redis, RedisCluster)
            assert rk.mode == "cluster"
        elif server_kind == "standalone":
            assert isinstance(rk.redis, Redis)
            assert rk.mode == "standalone"
        assert await rk.ping() > 0
        info = await rk.server_info()
        assert info.server == "valkey" or server_kind == "external"
        assert info.nodes == (3 if server_kind == "cluster" else info.nodes)
        assert info.namespace == "conn"
        assert "conn" in repr(rk)


async def test_await_and_async_with_both_work(redis_url: str) -> None:
    rk = await redkit.connect(redis_url)
    try:
        assert rk.namespace == "rk"
    finally:
        await rk.close()
        await rk.close()  # closing twice is harmless


async def test_redis_url_with_cluster_flag_connects_to_a_cluster(cluster: Cluster) -> None:
    first = cluster.nodes[0]
    async with redkit.connect(f"redis://{first.host}:{first.port}?cluster=true") as rk:
        assert rk.mode == "cluster"
        await rk.ping()


async def test_keys_in_namespace_are_counted_without_keys_command(
    rk: redkit.Redkit,
) -> None:
    for i in range(25):
        await rk.redis.set(rk.keys.key("k", i), i)
    await rk.redis.set("other-app:key", 1)
    try:
        info = await rk.server_info()
        assert info.keys_in_namespace == 25
    finally:
        await rk.redis.delete("other-app:key")


async def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REDKIT_NAMESPACE", "from-env")
    monkeypatch.setenv("REDKIT_COMMAND_TIMEOUT", "1.5")
    async with redkit.connect() as rk:
        assert rk.namespace == "from-env"
        assert rk.settings.command_timeout == 1.5
        assert rk.embedded is None  # REDIS_URL given: nothing embedded was started
    # An explicit argument beats the environment.
    async with redkit.connect(namespace="explicit") as rk:
        assert rk.namespace == "explicit"


def test_bad_settings_in_the_environment_are_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDKIT_COMMAND_TIMEOUT", "soon")
    with pytest.raises(redkit.ConfigurationError, match="command_timeout"):
        redkit.connect("redis://localhost:1")


async def test_unix_socket_urls_connect(tmp_path: Path) -> None:
    sock = Path("/tmp") / f"redkit-test-{tmp_path.name[-20:]}.sock"
    server = ValkeyProcess(
        tmp_path / "unix", config={**TEST_CONFIG, "unixsocket": str(sock), "unixsocketperm": "700"}
    ).start()
    try:
        async with redkit.connect(f"unix://{sock}") as rk:
            await rk.redis.set(rk.keys.key("via"), "unix")
            assert await rk.redis.get(rk.keys.key("via")) == b"unix"
    finally:
        server.stop()


async def test_sentinel_urls_find_the_master(
    tmp_path: Path, standalone_server: ValkeyProcess
) -> None:
    """A real Sentinel (the same binary in sentinel mode) monitoring the suite's server."""
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"sentinel monitor suite {standalone_server.host} {standalone_server.port} 1\n"
        "sentinel down-after-milliseconds suite 5000\n"
    )
    sentinel = ValkeyProcess(tmp_path / "sentinel", config_file=conf, sentinel=True).start()
    try:
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/suite"
        async with redkit.connect(url, "sent") as rk:
            assert rk.mode == "sentinel"
            await rk.redis.set(rk.keys.key("k"), "v")
            assert await rk.redis.get(rk.keys.key("k")) == b"v"
            await rk.redis.delete(rk.keys.key("k"))
    finally:
        sentinel.stop()


@pytest.mark.cluster
async def test_five_hundred_concurrent_calls_queue_for_connections(redis_url: str) -> None:
    async with redkit.connect(redis_url, "many", max_connections=8) as rk:
        results = await asyncio.gather(*(rk.redis.incr(rk.keys.key("n")) for _ in range(500)))
        assert sorted(results) == list(range(1, 501))
        await rk.redis.delete(rk.keys.key("n"))


@pytest.mark.cluster
async def test_every_connection_is_the_lean_one_on_standalone_and_cluster(
    rk: redkit.Redkit,
) -> None:
    from redkit.connection import _FastConnectionMixin

    key = rk.keys.group("test", "lean").key("k")
    await rk.redis.set(key, "v")
    assert await rk.redis.get(key) == b"v"
    used: list[object] = []
    if isinstance(rk.redis, RedisCluster):
        nodes = rk.redis.get_nodes()
        assert nodes
        for node in nodes:
            assert issubclass(node.connection_class, _FastConnectionMixin)
            used += node._connections
    else:
        pool = rk.redis.connection_pool
        assert issubclass(pool.connection_class, _FastConnectionMixin)
        used += [*pool._available_connections, *pool._in_use_connections]
    assert used
    assert all(isinstance(c, _FastConnectionMixin) for c in used)
    await rk.redis.delete(key)


@pytest.mark.parametrize("observability", [False, True])
async def test_the_pool_keeps_its_books_with_and_without_redis_py_hooks(
    standalone_server: ValkeyProcess, monkeypatch: pytest.MonkeyPatch, observability: bool
) -> None:
    # Without redis-py's observability (the usual case) checkout and release skip its hooks;
    # with it they go through redis-py's own methods. Either way every connection comes back,
    # every slot is freed, and a connection the server dropped is replaced on checkout.
    import redkit.connection as connection

    monkeypatch.setattr(connection, "_observability_on", lambda: observability)
    async with redkit.connect(standalone_server.url, "books", max_connections=8) as rk:
        assert isinstance(rk.redis, Redis)
        pool = rk.redis.connection_pool
        assert isinstance(pool, connection.QueueingConnectionPool)
        assert pool._lean() is not observability
        key = rk.keys.key("n")
        results = await asyncio.gather(*(rk.redis.incr(key) for _ in range(200)))
        assert sorted(results) == list(range(1, 201))
        assert not pool._in_use_connections
        assert not pool._holding
        assert 1 <= len(pool._available_connections) <= 8
        assert pool._slots._value == 8
        await rk.redis.client_kill_filter(_type="normal", skipme=True)
        assert await rk.redis.incr(key) == 201
        await rk.redis.delete(key)
