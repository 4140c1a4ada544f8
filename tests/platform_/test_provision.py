"""A project's own PostgreSQL database and role, and its Valkey ACL user (an allow-list)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis.exceptions as redis_errors
from redis.asyncio import Redis

import redkit
from redkit.platform.provision import (
    ProjectCredentials,
    ProjectExists,
    ProjectNotFound,
    Provisioner,
    ProvisioningError,
    project_identifiers,
)

pytestmark = pytest.mark.standalone_only


@pytest.fixture
def provisioner(rk: redkit.Redkit, database_url: str, redis_url: str) -> Provisioner:
    return Provisioner(rk, database_url, redis_url, lock_timeout=20)


def _name() -> str:
    return "t" + secrets.token_hex(5)


@pytest.fixture
async def project(provisioner: Provisioner) -> AsyncIterator[ProjectCredentials]:
    creds = await provisioner.create(_name())
    yield creds
    with contextlib.suppress(ProjectNotFound):  # unless the test deleted it
        await provisioner.delete(creds.name)


@pytest.fixture
async def other_project(provisioner: Provisioner) -> AsyncIterator[ProjectCredentials]:
    creds = await provisioner.create(_name())
    yield creds
    await provisioner.delete(creds.name)


async def _pg_facts(database_url: str, ids: Any) -> tuple[int, int]:
    conn = await asyncpg.connect(database_url)
    try:
        dbs = await conn.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = $1", ids.database
        )
        roles = await conn.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", ids.role)
        return int(dbs), int(roles)
    finally:
        await conn.close()


async def _acl_users(rk: redkit.Redkit) -> list[str]:
    users = await rk.redis.execute_command("ACL", "USERS")
    return [u.decode() if isinstance(u, bytes) else str(u) for u in users]


# -- what a project may do ---------------------------------------------------------------


async def test_a_project_user_runs_every_redkit_primitive_in_its_namespace(
    project: ProjectCredentials, rk: redkit.Redkit
) -> None:
    # No script cached: each primitive's first EVALSHA gets NOSCRIPT and loads the script,
    # which the allow-list must permit (SCRIPT LOAD, not FLUSH).
    await rk.redis.execute_command("SCRIPT", "FLUSH")
    async with redkit.connect(project.redis_url, namespace=project.namespace) as prk:
        store = prk.sessions(idle_ttl=60, absolute_ttl=600)
        session = await store.create("u1", {"role": "owner"})
        got = await store.get(session.id)
        assert got is not None
        assert got.data == {"role": "owner"}
        assert await store.revoke_all("u1") == 1

        cache = prk.cache()
        await cache.set("page", {"v": 1}, ttl=60, tags=["user:1"])
        assert await cache.get("page") == {"v": 1}
        assert await cache.invalidate("user:1") == 1

        decision = await prk.rate_limiter(limit=2, window=60).hit("client")
        assert decision.allowed
        assert decision.remaining == 1

        async with prk.lock("deploy", ttl=5, timeout=2) as lock:
            assert lock.fencing_token is not None

        bus = prk.notifications()
        async with bus.subscribe("deployment:status") as sub:
            await bus.publish("deployment:status", {"status": "building"})
            event = await asyncio.wait_for(anext(aiter(sub)), 10)
        assert event.data == {"status": "building"}

        async def echo(payload: dict[str, Any]) -> dict[str, Any]:
            return payload

        job = await prk.queue("email").enqueue("echo", {"to": "a@example.com"})
        worker = prk.worker(queues=["email"], functions={"echo": echo}, concurrency=1)
        running = asyncio.create_task(worker.run())
        try:
            assert await job.result(timeout=20) == {"to": "a@example.com"}
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
    # Everything it wrote is under its namespace.
    async for key in rk.redis.scan_iter(match="*", count=1000):
        name = key.decode()
        assert name.startswith(f"{project.namespace}:") or not name.startswith("p-")


async def test_the_project_role_owns_its_database_and_cannot_enter_another(
    project: ProjectCredentials, other_project: ProjectCredentials
) -> None:
    conn = await asyncpg.connect(project.database_url)
    try:
        await conn.execute("CREATE TABLE notes (v text); INSERT INTO notes VALUES ('hi')")
        assert await conn.fetchval("SELECT v FROM notes") == "hi"
        assert not await conn.fetchval("SELECT rolsuper OR rolcreatedb OR rolcreaterole "
                                       "FROM pg_roles WHERE rolname = current_user")  # fmt: skip
    finally:
        await conn.close()
    foreign = project.database_url.rsplit("/", 1)[0] + "/" + other_project.database
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await asyncpg.connect(foreign)


# -- what a project may not do -----------------------------------------------------------

REFUSED = [
    pytest.param(("SCAN", "0"), id="SCAN"),
    pytest.param(("RANDOMKEY",), id="RANDOMKEY"),
    pytest.param(("DBSIZE",), id="DBSIZE"),
    pytest.param(("KEYS", "*"), id="KEYS"),
    pytest.param(("PUBSUB", "CHANNELS"), id="PUBSUB CHANNELS"),
    pytest.param(("PUBSUB", "NUMSUB", "x"), id="PUBSUB NUMSUB"),
    pytest.param(("PUBSUB", "SHARDCHANNELS"), id="PUBSUB SHARDCHANNELS"),
    pytest.param(("SCRIPT", "FLUSH"), id="SCRIPT FLUSH"),
    pytest.param(("SCRIPT", "KILL"), id="SCRIPT KILL"),
    pytest.param(
        (
            "FUNCTION",
            "LOAD",
            "REPLACE",
            "#!lua name=evil\nredis.register_function('f', function() return 1 end)",
        ),
        id="FUNCTION LOAD REPLACE",
    ),
    pytest.param(("FUNCTION", "FLUSH"), id="FUNCTION FLUSH"),
    pytest.param(("FUNCTION", "LIST"), id="FUNCTION LIST"),
    pytest.param(("INFO", "keyspace"), id="INFO"),
    pytest.param(("CONFIG", "GET", "*"), id="CONFIG GET"),
    pytest.param(("CLIENT", "LIST"), id="CLIENT LIST"),
    pytest.param(("ACL", "LIST"), id="ACL LIST"),
    pytest.param(("FLUSHALL",), id="FLUSHALL"),
    pytest.param(("OBJECT", "ENCODING", "x"), id="OBJECT"),
]


@pytest.mark.parametrize("command", REFUSED)
async def test_a_project_user_is_refused_what_reaches_beyond_its_namespace(
    project: ProjectCredentials, command: tuple[str, ...]
) -> None:
    client = Redis.from_url(project.redis_url)
    try:
        with pytest.raises(redis_errors.ResponseError) as refused:
            await client.execute_command(*command)
        # NOPERM; or, on a server too old to have the command (FUNCTION on Redis 6.2), unknown.
        assert (
            isinstance(refused.value, redis_errors.NoPermissionError)
            or "unknown" in str(refused.value).lower()
        )
    finally:
        await client.aclose()


async def test_a_project_cannot_read_write_or_publish_into_another_project(
    project: ProjectCredentials, other_project: ProjectCredentials
) -> None:
    theirs = f"{other_project.namespace}:secret"
    client = Redis.from_url(project.redis_url)
    try:
        calls: list[tuple[Any, ...]] = [
            ("GET", theirs),
            ("SET", theirs, "x"),
            ("DEL", theirs),
            ("PUBLISH", f"{other_project.namespace}:{{ch:x}}", "x"),
            # A script is held to the same key patterns, declared or not.
            ("EVAL", "return redis.call('GET', KEYS[1])", 1, theirs),
            ("EVAL", f"return redis.call('GET', '{theirs}')", 1, f"{project.namespace}:k"),
        ]
        for call in calls:
            with pytest.raises((redis_errors.NoPermissionError, redis_errors.ResponseError)):
                await client.execute_command(*call)
        pubsub = client.pubsub()
        await pubsub.subscribe(f"{other_project.namespace}:{{ch:x}}")
        with pytest.raises(redis_errors.NoPermissionError):
            await pubsub.get_message(timeout=5)
        await pubsub.aclose()
    finally:
        await client.aclose()


# -- create, concurrency, failure, delete ------------------------------------------------


async def test_two_concurrent_creates_of_one_name_make_one_project(
    provisioner: Provisioner, redis_url: str, database_url: str
) -> None:
    name = _name()
    async with redkit.connect(redis_url, namespace=provisioner.rk.namespace) as rk2:
        other = Provisioner(rk2, database_url, redis_url, lock_timeout=20)
        results = await asyncio.gather(
            provisioner.create(name), other.create(name), return_exceptions=True
        )
    try:
        created = [r for r in results if isinstance(r, ProjectCredentials)]
        refused = [r for r in results if isinstance(r, ProjectExists)]
        assert len(created) == 1, results
        assert len(refused) == 1, results
        assert await _pg_facts(database_url, project_identifiers(name)) == (1, 1)
    finally:
        await provisioner.delete(name)


async def test_a_create_that_fails_at_the_acl_step_leaves_nothing_behind(
    rk: redkit.Redkit, redis_url: str, database_url: str
) -> None:
    class BrokenAcl(Provisioner):
        async def acl_rules(self, namespace: str, password_sha256: str) -> list[str]:
            # A rule the server refuses: the ACL step fails after the database exists.
            return [*await super().acl_rules(namespace, password_sha256), "+nosuchcommand"]

    broken = BrokenAcl(rk, database_url, redis_url)
    name = _name()
    with pytest.raises(ProvisioningError, match="undone"):
        await broken.create(name)
    ids = project_identifiers(name)
    assert await _pg_facts(database_url, ids) == (0, 0)
    assert ids.redis_user not in await _acl_users(rk)


async def test_a_create_whose_last_step_raises_is_undone_and_the_error_kept(
    provisioner: Provisioner, database_url: str
) -> None:
    class RowNotWritten(Exception):
        pass

    async def fail(creds: ProjectCredentials) -> None:
        raise RowNotWritten(creds.name)

    name = _name()
    with pytest.raises(RowNotWritten):
        await provisioner.create(name, then=fail)
    ids = project_identifiers(name)
    assert await _pg_facts(database_url, ids) == (0, 0)
    assert ids.redis_user not in await _acl_users(provisioner.rk)
    # And the name is free again.
    await provisioner.create(name)
    await provisioner.delete(name)


async def test_a_second_create_of_a_name_is_refused(
    provisioner: Provisioner, project: ProjectCredentials
) -> None:
    with pytest.raises(ProjectExists):
        await provisioner.create(project.name)


async def test_delete_drops_the_database_role_acl_user_and_keys(
    provisioner: Provisioner, project: ProjectCredentials, database_url: str
) -> None:
    client = Redis.from_url(project.redis_url)
    await client.set(f"{project.namespace}:k", "v")
    await provisioner.delete(project.name)
    ids = project_identifiers(project.name)
    assert await _pg_facts(database_url, ids) == (0, 0)
    assert project.redis_user not in await _acl_users(provisioner.rk)
    assert await provisioner.rk.redis.exists(f"{project.namespace}:k") == 0
    # Its open connection was cut, and its password opens nothing any more.
    with pytest.raises((redis_errors.ConnectionError, redis_errors.AuthenticationError)):
        await client.get(f"{project.namespace}:k")
    await client.aclose()
    with pytest.raises(ProjectNotFound):
        await provisioner.delete(project.name)


async def test_the_acl_user_comes_back_from_its_stored_hash(
    provisioner: Provisioner, project: ProjectCredentials
) -> None:
    await provisioner.rk.redis.execute_command("ACL", "DELUSER", project.redis_user)
    await provisioner.restore_acl_user(project.name, project.redis_password_sha256)
    client = Redis.from_url(project.redis_url)
    try:
        assert await client.set(f"{project.namespace}:k", "v")
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "name", ["ab", "Upper", "under_score", "-dash", "dash-", 'q"; DROP', "x" * 41, "9lives"]
)
async def test_a_bad_project_name_is_refused_before_anything_is_created(
    provisioner: Provisioner, name: str
) -> None:
    with pytest.raises(redkit.InvalidInput):
        await provisioner.create(name)


async def test_later_reads_show_the_urls_without_passwords(project: ProjectCredentials) -> None:
    public = project.public()
    assert project.redis_url != public["redis_url"]
    assert ":" not in public["redis_url"].split("@")[0].removeprefix("redis://")
    assert ":" not in public["database_url"].split("@")[0].removeprefix("postgresql://")
