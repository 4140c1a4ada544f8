"""What an operator needs: list the locks, read-write locks and semaphores of a namespace, free
a stuck lock.

These walk the namespace with ``SCAN`` (never ``KEYS``): an admin's tool, proportional to
the size of the database, not for hot paths. (A registry of held locks that the lock
scripts keep would spare the SCAN, but it is a namespace-wide key, in another hash slot than
a lock's own keys, and it costs every acquire and release server time: the listing pays
instead, on an operator's request.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from redkit.errors import translate_redis_errors
from redkit.locks._common import check_name, waiter_lease_ms
from redkit.locks.rwlock import ReadWriteLock
from redkit.scripts import ScriptSet

if TYPE_CHECKING:
    from redkit.client import Redkit

__all__ = ["LockInfo", "force_release", "list_locks"]

SCRIPTS = ScriptSet(__package__)

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
    holder: str | None = None
    """For a lock: the start of its holder's token (see :data:`HOLDER_CHARS`)."""
    held_for: float | None = None
    """For a lock, or a read-write lock held by a writer: seconds since its current holder
    acquired it (or was handed it), by the server's clock; renewals and ``extend`` do not
    reset it. ``None`` for a semaphore or a read-write lock held by readers (their leases are
    sorted-set members that release and its lost-reply undo find by the bare token, so they
    carry no time), and for a holder whose client predates the stamp (see ``_owner.lua``)."""


def _name_from(key: str, prefix: str, suffix: str) -> str | None:
    if key.startswith(prefix) and key.endswith(suffix):
        return key[len(prefix) : len(key) - len(suffix)]
    return None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _owner_value(value: str) -> tuple[str, int | None]:
    """(token, server ms of the acquisition) from a lock's owner value, ``<token>@<ms>``; a
    bare token (a client from before the stamp) has no time."""
    token, _, since = value.partition("@")
    return token, int(since) if since.isdigit() else None


async def list_locks(rk: Redkit) -> list[LockInfo]:
    """Every held lock, read-write lock and semaphore of ``rk``'s namespace, sorted by kind
    and name."""
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
            # One read of the lock's keys (one slot), so holder and lease agree.
            owner, pttl, fence, waiters, now = await rk.run(
                SCRIPTS["lock_state"], [key, group.key("fence"), group.key("queue")]
            )
            if owner is None or pttl == -2:
                continue  # released meanwhile
            token, since = _owner_value(_text(owner))
            found.append(
                LockInfo(
                    "lock",
                    name,
                    1,
                    max(int(pttl), 0) / 1000,
                    int(fence) or None,
                    int(waiters),
                    holder=token[:HOLDER_CHARS],
                    held_for=None if since is None else max(int(now) - since, 0) / 1000,
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
            state = await ReadWriteLock(rk, name)._state()
            readers, writer_pttl, read_ms, latest, waiters, held_ms = state
            if writer_pttl == -2 and readers == 0:
                continue  # released meanwhile, or only ended read leases
            writing = writer_pttl != -2
            found.append(
                LockInfo(
                    "rwlock",
                    name,
                    1 if writing else readers,
                    max(writer_pttl if writing else read_ms, 0) / 1000,
                    latest or None,
                    waiters,
                    "write" if writing else "read",
                    held_for=held_ms / 1000 if writing and held_ms >= 0 else None,
                )
            )
    return sorted(found, key=lambda info: (info.kind, info.name))


async def force_release(rk: Redkit, name: str) -> bool:
    """Free lock ``name`` whoever holds it, and wake its first waiter; False if it was free.

    The holder is not told until it next renews, extends or releases (then: ``LockLost``).
    Its fencing token is older than the next holder's, so a resource that checks tokens
    stays safe.
    """
    group = rk.keys.group("lock", check_name(name, "lock"))
    removed = await rk.run(
        SCRIPTS["lock_force_release"],
        keys=[group.key("owner"), group.key("queue"), group.key("wake")],
        args=[waiter_lease_ms(rk)],
    )
    return bool(removed)
