"""A project's own resources: a PostgreSQL database and role, and a Valkey ACL user.

``Provisioner(rk, database_url, redis_url)`` creates and deletes them, each under
``rk.lock("project-db:<name>")`` so that two creates (or a create and a delete) of one name,
in any processes, never run at once:

- **PostgreSQL**: a role ``p_<name>`` (LOGIN, a random password, nothing else: no superuser,
  no CREATEDB, no CREATEROLE, a connection limit) and a database ``p_<name>`` it owns, with
  ``CONNECT`` revoked from ``PUBLIC``, so no other project's role may even connect to it;
- **Valkey**: an ACL user ``p_<name>`` limited to the keys ``<ns>:*`` and the channels
  ``<ns>:*`` of the project's namespace, and to :data:`PROJECT_COMMANDS`, an allow-list of what
  redkit's primitives send. An allow-list, not ``+@all -@dangerous``: that rule still lets a
  tenant list every project's key names (``SCAN``, ``RANDOMKEY``, ``DBSIZE``) and channels
  (``PUBSUB CHANNELS``/``NUMSUB``), and run ``SCRIPT FLUSH`` and ``FUNCTION LOAD REPLACE`` /
  ``FUNCTION FLUSH``, which every tenant shares. Scripts: redkit runs them by ``EVALSHA`` and
  loads one on ``NOSCRIPT``, so a project may ``SCRIPT LOAD`` (the cache is keyed by SHA: a
  load changes nothing another tenant runs) but not ``SCRIPT FLUSH``/``KILL``; a script's
  ``redis.call`` is checked against the same allow-list and key patterns.

Names are validated (:data:`PROJECT_NAME`) before anything is created, and every identifier
is double-quoted in SQL; the password is generated here (URL-safe alphabet), never taken from
the caller. A step that fails part-way undoes the steps before it, in reverse, so a project is
either fully created or not at all. The ACL user's password is kept only as its SHA-256
(:attr:`ProjectCredentials.redis_password_sha256`, what Valkey itself stores): the platform
re-applies the ACL users from it at start (:meth:`Provisioner.restore_acl_user`), because an
embedded Valkey without an ACL file forgets them when it restarts.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import redis.exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster

from redkit import Redkit
from redkit.errors import InvalidInput, LockNotAcquired, RedkitError

__all__ = [
    "PROJECT_COMMANDS",
    "PROJECT_NAME",
    "ProjectBusy",
    "ProjectCredentials",
    "ProjectExists",
    "ProjectNotFound",
    "Provisioner",
    "ProvisioningError",
    "project_identifiers",
]

PROJECT_NAME = re.compile(r"[a-z][a-z0-9-]{1,38}[a-z0-9]")
"""3-40 characters: lower-case letters, digits and inner dashes, starting with a letter. No
underscore, so ``a-b`` -> ``p_a_b`` is one-to-one."""

# What redkit's primitives send, read from their Lua scripts (a script's redis.call is checked
# too) and their Python calls; tests/platform_/test_provision.py runs every primitive under it.
PROJECT_COMMANDS: tuple[str, ...] = (
    # connection set-up and health: redis-py names the connection (CLIENT SETNAME/SETINFO);
    # redkit.connect asks HELLO for the server's version (INFO is refused: INFO keyspace
    # counts every tenant's keys, as DBSIZE does).
    "ping", "hello", "client|setname", "client|setinfo", "client|id", "echo",
    # a Cluster client learns the slots and command table (no key names in either)
    "cluster|slots", "cluster|shards", "readonly", "command",
    # scripts: SCRIPT LOAD only (redkit loads a script once on NOSCRIPT; the cache is keyed by
    # SHA, so loading changes nothing another tenant runs); SCRIPT FLUSH and KILL act on all
    "evalsha", "eval", "evalsha_ro", "eval_ro", "script|load", "time",
    # strings, hashes, lists, sets, sorted sets, keys
    "get", "set", "setnx", "mget", "incr", "incrby", "del", "unlink", "exists", "type",
    "pexpire", "pexpireat", "pttl", "persist", "rename",
    "hget", "hset", "hdel", "hgetall", "hmget", "hincrby",
    "llen", "lpush", "rpush", "ltrim", "lrange", "blpop",
    "sadd", "srem", "smembers",
    "zadd", "zcard", "zcount", "zpopmin", "zrange", "zrangebyscore", "zrank", "zrem",
    "zremrangebyrank", "zremrangebyscore", "zrevrange", "zscore",
    # streams (notification history, job events)
    "xadd", "xrange", "xrevrange", "xread", "xlen", "xtrim",
    # pub/sub, checked against the channel pattern
    "publish", "spublish", "subscribe", "ssubscribe", "psubscribe",
    "unsubscribe", "sunsubscribe", "punsubscribe",
)  # fmt: skip


class ProvisioningError(RedkitError):
    """Creating or deleting a project's resources failed (what was created is undone)."""


class ProjectExists(ProvisioningError):
    """A project of that name exists already (HTTP 409)."""


class ProjectNotFound(ProvisioningError):
    """No project of that name."""


class ProjectBusy(ProvisioningError):
    """Another create or delete of the same name holds the lock past the wait (HTTP 409)."""


# "Error in ACL SETUSER modifier '+eval_ro': Unknown command" (Redis 7, Valkey), or 6.2's
# "Unknown command or category name in ACL" with the modifier quoted the same way.
_UNKNOWN_RULE = re.compile(r"modifier '\+([a-z_|]+)'.*[Uu]nknown")

# What the create steps themselves raise (turned into ProvisioningError once undone).
_STEP_ERRORS = (asyncpg.PostgresError, redis_errors.RedisError, RedkitError, OSError)


@dataclass(frozen=True)
class ProjectCredentials:
    """What a project owns. The passwords are shown once, to its owner (``database_url``,
    ``redis_url``); :meth:`public` is what later reads show."""

    name: str
    namespace: str
    database: str
    db_role: str
    redis_user: str
    database_url: str
    redis_url: str
    redis_password_sha256: str

    def public(self) -> dict[str, str]:
        """The URLs without their passwords."""
        return {
            "name": self.name,
            "namespace": self.namespace,
            "database_url": _without_password(self.database_url),
            "redis_url": _without_password(self.redis_url),
        }


@dataclass(frozen=True)
class _Identifiers:
    namespace: str
    database: str
    role: str
    redis_user: str


def project_identifiers(name: str) -> _Identifiers:
    """The namespace, database, role and ACL user names of project ``name`` (validated)."""
    if not isinstance(name, str) or not PROJECT_NAME.fullmatch(name):
        raise InvalidInput(
            "a project name is 3-40 characters: lower-case letters, digits and inner dashes, "
            "starting with a letter"
        )
    ident = "p_" + name.replace("-", "_")
    return _Identifiers(namespace=f"p-{name}", database=ident, role=ident, redis_user=ident)


def _quote_ident(name: str) -> str:
    # Names reach here validated; quoting is the second guard (and keeps case as given).
    return '"' + name.replace('"', '""') + '"'


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}@{netloc}"))


def _with_credentials(url: str, user: str, password: str, path: str | None = None) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(
        parts._replace(netloc=netloc, path=parts.path if path is None else "/" + path)
    )


def _plain_pg(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"postgresql://{rest}" if sep and scheme.startswith("postgresql+") else url


class Provisioner:
    """Creates and deletes projects' databases, roles and ACL users.

    ``rk`` is the platform's own (admin) client: it takes the locks and runs ``ACL``.
    ``database_url`` is a PostgreSQL superuser URL (or a role with CREATEDB and CREATEROLE).
    ``redis_url`` is the URL the projects' clients use (the ACL user goes into it).
    """

    def __init__(
        self,
        rk: Redkit,
        database_url: str,
        redis_url: str,
        *,
        lock_timeout: float = 30.0,
        commands: tuple[str, ...] = PROJECT_COMMANDS,
        connection_limit: int = 20,
    ) -> None:
        self.rk = rk
        self.database_url = _plain_pg(database_url)
        self.redis_url = redis_url
        self.lock_timeout = lock_timeout
        self.commands = commands
        self.connection_limit = connection_limit
        self._server_commands: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        return f"<Provisioner {urlsplit(self.database_url).hostname} {self.rk!r}>"

    # -- Valkey ACL ----------------------------------------------------------------------

    async def _acl(self, *args: str) -> Any:
        if isinstance(self.rk.redis, RedisCluster):
            # ACL users are per node: every primary and replica must know them.
            return await self.rk.redis.execute_command(
                "ACL", *args, target_nodes=RedisCluster.ALL_NODES
            )
        return await self.rk.redis.execute_command("ACL", *args)  # type: ignore[no-untyped-call]

    async def server_commands(self) -> tuple[str, ...]:
        """:attr:`commands` less those this server does not know (``EVAL_RO`` and
        ``CLUSTER SHARDS`` are 7.0+, ``CLIENT SETINFO`` 7.2+), found once with a throw-away
        ACL user: ``ACL SETUSER`` names the first unknown rule; it is dropped and the rest
        tried again (at most once per command)."""
        if self._server_commands is not None:
            return self._server_commands
        commands = list(self.commands)
        probe = "redkit-probe-" + secrets.token_hex(8)
        try:
            for _ in range(len(self.commands) + 1):
                try:
                    await self._acl("SETUSER", probe, "reset", "off", *(f"+{c}" for c in commands))
                    break
                except redis_errors.ResponseError as exc:
                    unknown = _UNKNOWN_RULE.search(str(exc))
                    name = unknown.group(1).lower() if unknown else None
                    if name is None or name not in commands:
                        raise
                    commands.remove(name)
        finally:
            with contextlib.suppress(redis_errors.RedisError):
                await self._acl("DELUSER", probe)
        self._server_commands = tuple(commands)
        return self._server_commands

    async def acl_rules(self, namespace: str, password_sha256: str) -> list[str]:
        """The ``ACL SETUSER`` rules of a project user (after ``reset``: no access at all)."""
        return [
            "reset",
            "resetchannels",
            "on",
            f"#{password_sha256}",
            f"~{namespace}:*",
            f"&{namespace}:*",
            *(f"+{command}" for command in await self.server_commands()),
        ]

    async def _acl_user_exists(self, user: str) -> bool:
        reply = await self._acl("GETUSER", user)
        if isinstance(self.rk.redis, RedisCluster) and isinstance(reply, dict):
            return any(v is not None for v in reply.values())  # one answer per node
        return reply is not None

    async def restore_acl_user(self, name: str, password_sha256: str) -> None:
        """Re-apply a project's ACL user (after a Valkey restart forgot it)."""
        ids = project_identifiers(name)
        rules = await self.acl_rules(ids.namespace, password_sha256)
        await self._acl("SETUSER", ids.redis_user, *rules)

    # -- PostgreSQL ----------------------------------------------------------------------

    async def _pg(self) -> Any:
        try:
            return await asyncpg.connect(self.database_url, timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            raise ProvisioningError(f"cannot reach PostgreSQL: {exc}") from exc

    # -- create / delete -----------------------------------------------------------------

    def _lock(self, name: str) -> Any:
        return self.rk.lock(f"project-db:{name}", ttl=30, timeout=self.lock_timeout)

    async def create(
        self,
        name: str,
        *,
        then: Callable[[ProjectCredentials], Awaitable[None]] | None = None,
    ) -> ProjectCredentials:
        """Create project ``name``'s database, role and ACL user; return the credentials.

        ``then`` runs under the same lock once everything exists (the projects service writes
        its row there); if it raises, everything created is dropped again and the error
        propagates. Raises :class:`ProjectExists` if the name is taken,
        :class:`ProjectBusy` if another create or delete holds the name past the wait.
        """
        ids = project_identifiers(name)
        try:
            async with self._lock(name):
                return await self._create_locked(name, ids, then)
        except LockNotAcquired as exc:
            raise ProjectBusy(f"project {name!r} is being created or deleted; retry") from exc

    async def _create_locked(
        self,
        name: str,
        ids: _Identifiers,
        then: Callable[[ProjectCredentials], Awaitable[None]] | None,
    ) -> ProjectCredentials:
        undo: list[Callable[[], Awaitable[Any]]] = []
        conn = await self._pg()
        try:
            taken = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)"
                " OR EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2)",
                ids.database,
                ids.role,
            )
            if taken or await self._acl_user_exists(ids.redis_user):
                raise ProjectExists(f"a project named {name!r} exists already")
            db_password = secrets.token_urlsafe(24)
            redis_password = secrets.token_urlsafe(32)
            redis_sha = hashlib.sha256(redis_password.encode()).hexdigest()
            role, database = _quote_ident(ids.role), _quote_ident(ids.database)
            try:
                # Utility statements take no bind parameters; the password is ours (URL-safe
                # alphabet, no quote can occur), the identifiers validated and quoted.
                await conn.execute(
                    f"CREATE ROLE {role} LOGIN PASSWORD '{db_password}' NOSUPERUSER NOCREATEDB "
                    f"NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                    f"CONNECTION LIMIT {int(self.connection_limit)}"
                )
                undo.append(lambda: conn.execute(f"DROP ROLE IF EXISTS {role}"))
                await conn.execute(f"CREATE DATABASE {database} OWNER {role}")
                undo.append(
                    lambda: conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
                )
                await conn.execute(f"REVOKE ALL ON DATABASE {database} FROM PUBLIC")
                await conn.execute(f"GRANT ALL ON DATABASE {database} TO {role}")
                rules = await self.acl_rules(ids.namespace, redis_sha)
                await self._acl("SETUSER", ids.redis_user, *rules)
                undo.append(lambda: self._acl("DELUSER", ids.redis_user))
                creds = ProjectCredentials(
                    name=name,
                    namespace=ids.namespace,
                    database=ids.database,
                    db_role=ids.role,
                    redis_user=ids.redis_user,
                    database_url=_with_credentials(
                        self.database_url, ids.role, db_password, ids.database
                    ),
                    redis_url=_with_credentials(self.redis_url, ids.redis_user, redis_password),
                    redis_password_sha256=redis_sha,
                )
                if then is not None:
                    await then(creds)
                return creds
            except BaseException as exc:
                for step in reversed(undo):
                    # Best effort: one undo failing must not keep the others from running.
                    with contextlib.suppress(Exception):
                        await step()
                if isinstance(exc, _STEP_ERRORS) and not isinstance(exc, ProvisioningError):
                    raise ProvisioningError(
                        f"creating project {name!r} failed (undone): {exc}"
                    ) from exc
                raise  # ours already, or the caller's own error from ``then``
        finally:
            await conn.close()

    async def delete(
        self,
        name: str,
        *,
        then: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Drop project ``name``'s database (its connections cut), role and ACL user (its
        clients disconnected), and its keys; under the same lock as :meth:`create`.

        ``then`` runs under the lock after the drops (the projects service deletes its row).
        Raises :class:`ProjectNotFound` if nothing of the project exists.
        """
        ids = project_identifiers(name)
        try:
            async with self._lock(name):
                conn = await self._pg()
                try:
                    found = await conn.fetchval(
                        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)"
                        " OR EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2)",
                        ids.database,
                        ids.role,
                    )
                    acl_found = await self._acl_user_exists(ids.redis_user)
                    if not found and not acl_found:
                        raise ProjectNotFound(f"no project named {name!r}")
                    # ACL DELUSER also disconnects every client logged in as that user.
                    await self._acl("DELUSER", ids.redis_user)
                    database, role = _quote_ident(ids.database), _quote_ident(ids.role)
                    await conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
                    await conn.execute(f"DROP ROLE IF EXISTS {role}")
                finally:
                    await conn.close()
                await self._drop_keys(ids.namespace)
                if then is not None:
                    await then()
        except LockNotAcquired as exc:
            raise ProjectBusy(f"project {name!r} is being created or deleted; retry") from exc

    async def _drop_keys(self, namespace: str) -> int:
        """Unlink every key of the namespace (SCAN in pages: never KEYS)."""
        dropped = 0
        batch: list[Any] = []
        async for key in self.rk.redis.scan_iter(match=f"{namespace}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                dropped += await self._unlink(batch)
                batch = []
        if batch:
            dropped += await self._unlink(batch)
        return dropped

    async def _unlink(self, keys: list[Any]) -> int:
        # One key per call on a Cluster (keys of a namespace span slots); a batch elsewhere.
        if isinstance(self.rk.redis, RedisCluster):
            return sum([int(await self.rk.redis.unlink(key)) for key in keys])
        return int(await self.rk.redis.unlink(*keys))
