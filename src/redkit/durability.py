"""Durability levels: when a write counts as done, with asynchronous replication.

Redis and Valkey replicate asynchronously: the master answers a write before any replica
has it. If the master dies (a crash, SIGKILL, a lost machine) and Sentinel or the Cluster
promotes a replica, the writes the replica had not received yet are gone, though their
callers were told they succeeded. On one machine the window is short (the replica is a
few milliseconds behind), but it is there, and it grows with load and distance.

``durability="async"`` (the default) is the server's own promise: an acknowledged write
survives a restart (with AOF on) and survives a failover **unless** it was among the last
writes before the master died. Fast: nothing waits for a replica. Fencing tokens do not
depend on it: they are never below the server's clock in microseconds, so a promoted replica
that lost the last acquisitions still gives higher ones (assuming the clocks of master and
replica differ by less than the failover takes; see :mod:`redkit.locks.lock`).

``durability="replicated"`` (opt-in, per queue or lock) sends ``WAIT replicas timeout``
right after the write, on the same connection: the call returns only once ``replicas``
replicas (default 1) have everything this connection wrote, else it raises
:class:`~redkit.errors.NotReplicated` (a :class:`~redkit.errors.ConnectionLost`). So a call
that returned is not lost by the failover of one master to a replica that confirmed it.
The price: a round trip to the replica on every such call, and the connection waits for
it (concurrent calls batched behind it wait too). ``WAIT`` makes no write durable on disk,
and a replica that confirmed may itself not be the one promoted if there are several:
ask for as many replicas as may be promoted.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Literal, Protocol

from redkit.codec import seconds
from redkit.errors import ConfigurationError

if TYPE_CHECKING:
    from redkit.settings import Settings

__all__ = ["Durability", "Replication", "replication"]

Durability = Literal["async", "replicated"]


class Replication:
    """What ``durability="replicated"`` waits for: ``replicas`` confirmations within
    ``timeout`` seconds (``WAIT`` takes milliseconds)."""

    __slots__ = ("replicas", "timeout", "timeout_ms")

    def __init__(self, replicas: int, timeout: float) -> None:
        self.replicas = replicas
        self.timeout = timeout
        self.timeout_ms = max(1, round(timeout * 1000))

    def __repr__(self) -> str:
        return f"<Replication replicas={self.replicas} timeout={self.timeout:g}s>"


class _Client(Protocol):
    """What :func:`replication` reads of a client (the async one or the generated sync one)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def is_cluster(self) -> bool: ...


def replication(
    rk: _Client,
    durability: str,
    replicas: int = 1,
    timeout: float | timedelta | None = None,
) -> Replication | None:
    """Check a primitive's durability options; ``None`` for the default (``async``).

    ``timeout`` (default: half the command timeout) must end before the command timeout,
    which bounds the whole exchange, or the call would fail as lost instead of as not
    replicated."""
    if durability == "async":
        return None
    if durability != "replicated":
        raise ConfigurationError(f"durability must be 'async' or 'replicated', got {durability!r}")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ConfigurationError(f"replicas must be an int >= 1, got {replicas!r}")
    command_timeout = rk.settings.command_timeout
    wait = command_timeout / 2 if timeout is None else seconds(timeout, "durability_timeout")
    if wait >= command_timeout:
        raise ConfigurationError(
            f"durability_timeout ({wait:g} s) must be shorter than the command timeout "
            f"({command_timeout:g} s)"
        )
    # The sync client has no automatic pipeline at all.
    if rk.is_cluster and getattr(rk, "pipeline", None) is None:
        raise ConfigurationError(
            "durability='replicated' on a Cluster needs the async client's automatic "
            "pipelining (the default): WAIT must follow the write on the node's connection"
        )
    return Replication(replicas, wait)
