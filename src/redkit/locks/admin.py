"""What an operator needs: list the locks, read-write locks and semaphores of a namespace, free
a stuck lock.

On a single-node server (standalone, Sentinel) the listing reads the namespace's lock
registry, which the lock scripts keep (``_registry.lua``): one script for the registry and
one per listed lock, sent together, at most :data:`MAX_LISTED` locks; no ``SCAN``. On a
Cluster a lock's keys and a namespace-wide registry are in different slots, so no script can
keep one: there the listing walks the namespace with ``SCAN`` (never ``KEYS``), an admin's
tool proportional to the size of the database.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from redkit.errors import translate_redis_errors
from redkit.locks._common import LOCK_SCRIPTS, check_name, registry_keys, waiter_lease_ms
from redkit.locks.rwlock import ReadWriteLock
from redkit.scripts import ScriptSet

if TYPE_CHECKING:
    from redkit.client import Redkit

__all__ = ["LockInfo", "force_release", "list_locks"]

SCRIPTS = ScriptSet(__package__)

MAX_LISTED = 500
"""The most locks one listing reads from the registry (the soonest-ending first)."""
HOLDER_CHARS = 8
"""How much of a lock holder's token a listing shows: enough to tell holders apart, not
enough to release or extend the lock as them."""


@dataclass(frozen=True)
class LockInfo:
    """One lock, read-write lock or semaphore that has holders now."""

    kind: Literal["lock", "rwlock", "semaphore"]
    name: str
    holders: int
    ttl: float
    """Seconds until the (longest) current lease ends."""
    fencing_token: int | None
    """For a lock: the token of the current holder (the last one issued). For a read-write
    lock: the latest writer's (the current one's, if a writer holds it)."""
    waiters: int
    mode: Literal["read", "write"] | None = None
    """For a read-write lock: held by readers or by a writer."""
    held_for: float | None = None
    """Seconds since it was taken (by this holder, for a lock; since it was last free, for a
    semaphore or read-write lock); None where unknown (a Cluster's listing)."""
    holder: str | None = None
    """For a lock: the start of its holder's token (see :data:`HOLDER_CHARS`)."""


def _name_from(key: str, prefix: str, suffix: str) -> str | None:
    if key.startswith(prefix) and key.endswith(suffix):
        return key[len(prefix) : len(key) - len(suffix)]
    return None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


async def _listed(rk: Redkit, member: str, now: int, since: int | None) -> LockInfo | None:
    """The state of one registry entry, or None if it is free by now."""
    ns = rk.namespace
    held_for = max(0, now - since) / 1000 if since is not None else None
    name = _name_from(member, f"{ns}:{{lock:", "}:owner")
    if name is not None:
        group = rk.keys.group("lock", name)
        owner, pttl, fence, waiters = await rk.run(
            SCRIPTS["lock_state"], [member, group.key("fence"), group.key("queue")]
        )
        if owner is None or pttl == -2:
            return None
        return LockInfo(
            "lock",
            name,
            1,
            max(int(pttl), 0) / 1000,
            int(fence) or None,
            int(waiters),
            held_for=held_for,
            holder=_text(owner)[:HOLDER_CHARS],
        )
    name = _name_from(member, f"{ns}:{{sem:", "}:holders")
    if name is not None:
        queue = rk.keys.group("sem", name).key("queue")
        live, longest, waiters = await rk.run(SCRIPTS["sem_state"], [member, queue])
        if not live:
            return None
        return LockInfo(
            "semaphore",
            name,
            int(live),
            max(int(longest), 0) / 1000,
            None,
            int(waiters),
            held_for=held_for,
        )
    name = _name_from(member, f"{ns}:{{rwlock:", "}:readers")
    if name is not None:
        return _rw_info(name, await ReadWriteLock(rk, name)._state(), held_for)
    return None


def _rw_info(name: str, state: list[int], held_for: float | None) -> LockInfo | None:
    readers, writer_pttl, read_ms, latest, waiters = state
    if writer_pttl == -2 and readers == 0:
        return None  # released meanwhile, or only ended read leases
    writing = writer_pttl != -2
    return LockInfo(
        "rwlock",
        name,
        1 if writing else readers,
        max(writer_pttl if writing else read_ms, 0) / 1000,
        latest or None,
        waiters,
        "write" if writing else "read",
        held_for=held_for,
    )


async def _from_registry(rk: Redkit, registry: tuple[str, ...]) -> list[LockInfo]:
    with translate_redis_errors("list locks"):
        reply = await rk.run(SCRIPTS["registry_list"], registry, [MAX_LISTED])
        now = int(reply[0])
        entries = [
            (_text(reply[i]), None if reply[i + 2] is None else int(reply[i + 2]))
            for i in range(1, len(reply), 3)
        ]
        # Concurrent: the client's automatic pipelining sends them in one round trip.
        found = await asyncio.gather(*(_listed(rk, m, now, since) for m, since in entries))
    return sorted((f for f in found if f is not None), key=lambda i: (i.kind, i.name))


async def list_locks(rk: Redkit) -> list[LockInfo]:
    """Every held lock, read-write lock and semaphore of ``rk``'s namespace, sorted by kind
    and name (at most :data:`MAX_LISTED` on a single-node server, from the registry; every
    one on a Cluster, by ``SCAN``)."""
    registry = registry_keys(rk)
    if registry:
        return await _from_registry(rk, registry)
    ns = rk.namespace
    found: list[LockInfo] = []
    with translate_redis_errors("list locks"):
        # Braces are not glob characters: this matches exactly the keys rk.keys.group makes.
        async for raw in rk.redis.scan_iter(match=f"{ns}:{{lock:*}}:owner", count=1000):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            name = _name_from(key, f"{ns}:{{lock:", "}:owner")
            if name is None:
                continue
            group = rk.keys.group("lock", name)
            pttl = await rk.redis.pttl(key)
            if pttl == -2:
                continue  # released meanwhile
            fence = await rk.redis.get(group.key("fence"))
            waiters = await rk.redis.zcard(group.key("queue"))
            found.append(
                LockInfo(
                    "lock",
                    name,
                    1,
                    max(pttl, 0) / 1000,
                    int(fence) if fence is not None else None,
                    int(waiters),
                )
            )
        async for raw in rk.redis.scan_iter(match=f"{ns}:{{sem:*}}:holders", count=1000):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            name = _name_from(key, f"{ns}:{{sem:", "}:holders")
            if name is None:
                continue
            group = rk.keys.group("sem", name)
            holders = int(await rk.run(SCRIPTS["sem_count"], keys=[key]))
            if holders == 0:
                continue
            pttl = await rk.redis.pttl(key)
            waiters = await rk.redis.zcard(group.key("queue"))
            found.append(
                LockInfo("semaphore", name, holders, max(pttl, 0) / 1000, None, int(waiters))
            )
        # A held read-write lock has a live readers set or a writer key: scan for both.
        rw_names: set[str] = set()
        for suffix in ("readers", "writer"):
            pattern = f"{ns}:{{rwlock:*}}:{suffix}"
            async for raw in rk.redis.scan_iter(match=pattern, count=1000):
                key = raw.decode() if isinstance(raw, bytes) else str(raw)
                name = _name_from(key, f"{ns}:{{rwlock:", "}:" + suffix)
                if name is not None:
                    rw_names.add(name)
        for name in rw_names:
            info = _rw_info(name, await ReadWriteLock(rk, name)._state(), None)
            if info is not None:
                found.append(info)
    return sorted(found, key=lambda info: (info.kind, info.name))


async def force_release(rk: Redkit, name: str) -> bool:
    """Free lock ``name`` whoever holds it, and wake its first waiter; False if it was free.

    The holder is not told until it next renews, extends or releases (then: ``LockLost``).
    Its fencing token is older than the next holder's, so a resource that checks tokens
    stays safe.
    """
    group = rk.keys.group("lock", check_name(name, "lock"))
    removed = await rk.run(
        LOCK_SCRIPTS.for_client(rk)["lock_force_release"],
        keys=[group.key("owner"), group.key("queue"), group.key("wake"), *registry_keys(rk)],
        args=[waiter_lease_ms(rk)],
    )
    return bool(removed)
