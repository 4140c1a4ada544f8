"""Policies: which key, which limits and what cost a request gets.

A policy is any callable ``(scope) -> Admission | None`` (sync or async) over an ASGI
scope; ``None`` lets the request through unlimited (health checks, static files).
:class:`TierPolicy` limits by tier: callers are identified and put in a tier, and each tier
has its own limits (the defaults, :data:`DEFAULT_TIERS`)::

    anonymous 10/min   user 100/min   premium 1000/min   admin 10000/min

Anonymous callers are keyed by client IP (:mod:`redkit.ratelimit.address`). The IP is the
TCP peer's, never a header, unless the peer is one of ``trusted_proxies``: only then is
``X-Forwarded-For`` read (every line), right to left, skipping the trusted hops, so a client
cannot choose its own key by sending the header. IPv6 callers share a key per ``/64``
(``ipv6_prefix``). Behind a Unix socket, trust the proxy with ``trusted_proxies=["unix"]``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeAlias

from redkit.codec import seconds
from redkit.errors import ConfigurationError, InvalidInput
from redkit.ratelimit.address import ClientIP, TrustedProxies, client_ip
from redkit.ratelimit.limiter import Algorithm, RateLimiter, RateLimits

if TYPE_CHECKING:
    from redkit.client import Redkit

__all__ = [
    "DEFAULT_TIERS",
    "Admission",
    "ClientIP",
    "Identity",
    "Policy",
    "TierPolicy",
    "TrustedProxies",
    "client_ip",
    "resolve_policy",
    "tier_rules",
]

Scope: TypeAlias = Mapping[str, Any]

DEFAULT_TIERS: Mapping[str, Sequence[tuple[int, float | timedelta]]] = {
    "anonymous": [(10, 60)],
    "user": [(100, 60)],
    "premium": [(1000, 60)],
    "admin": [(10000, 60)],
}
"""The default tier table, (limit, window seconds) per tier: anonymous callers 10 a minute,
signed-in users 100, and the tiers ``premium`` (1000) and ``admin`` (10000) for sessions that
name them. Pass ``tiers=`` to :class:`TierPolicy` (or :class:`~redkit.web.RateLimitConfig`)
for your own."""


@dataclass(frozen=True, slots=True)
class Admission:
    """What a policy decides for one request: check ``limits`` for ``key`` at ``cost``."""

    key: str
    limits: RateLimiter | RateLimits
    cost: int = 1


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: a tier name and a stable ID (user ID, API key ID)."""

    tier: str
    id: str


Policy: TypeAlias = Callable[[Scope], "Awaitable[Admission | None] | Admission | None"]


async def resolve_policy(policy: Policy, scope: Scope) -> Admission | None:
    result = policy(scope)
    if inspect.isawaitable(result):
        return await result
    return result


def tier_rules(
    tiers: Mapping[str, Sequence[tuple[int, float | timedelta]]],
) -> dict[str, list[tuple[int, float | timedelta, str]]]:
    """Each tier's limits as ``(limit, window, name)``: what :class:`TierPolicy` (and the
    Django tier middleware, :mod:`redkit.django.tiers`) make their limiters of.

    The name is the limiter's, so it is what the ``RateLimit`` headers call the policy and
    where its counts live: the tier's own name for a tier of one limit,
    ``<tier>:<limit>/<window>s`` for each of several. A tier without limits is an
    :class:`~redkit.errors.InvalidInput` error.
    """
    rules: dict[str, list[tuple[int, float | timedelta, str]]] = {}
    for tier, pairs in tiers.items():
        if not pairs:
            raise InvalidInput(f"tier {tier!r} has no limits")
        rules[tier] = [
            (
                limit,
                window,
                tier if len(pairs) == 1 else f"{tier}:{limit}/{seconds(window):g}s",
            )
            for limit, window in pairs
        ]
    return rules


class TierPolicy:
    """Limits by tier: ``identify(scope)`` names the caller, anonymous callers go by IP.

    ``identify`` returns an :class:`Identity` (or ``None`` for an anonymous caller); it may
    be async. ``tiers`` maps a tier to its (limit, window) pairs: several pairs are checked
    together, all or nothing (e.g. ``[(10, 1), (1000, 3600)]``).

    Anonymous callers are keyed ``ip:<address>`` (IPv4) or ``ip:<network>/<ipv6_prefix>``
    (IPv6) by :class:`~redkit.ratelimit.address.ClientIP`: ``trusted_proxies`` lists the
    proxies whose ``X-Forwarded-For`` is believed (addresses, networks, or ``"unix"`` for
    the proxy in front of a Unix socket). A request whose address cannot be found shares
    ``ip:unknown`` with every other such request, and a warning is logged once.
    ``identify`` runs for WebSocket handshakes too (a scope of type ``"websocket"``).
    """

    def __init__(
        self,
        rk: Redkit,
        identify: Callable[[Scope], Awaitable[Identity | None] | Identity | None] | None = None,
        *,
        tiers: Mapping[str, Sequence[tuple[int, float | timedelta]]] = DEFAULT_TIERS,
        algorithm: Algorithm | str = Algorithm.SLIDING_WINDOW,
        trusted_proxies: Iterable[str] = (),
        ipv6_prefix: int = 64,
        anonymous_tier: str = "anonymous",
        **limiter_options: Any,
    ) -> None:
        if anonymous_tier not in tiers:
            raise InvalidInput(
                f"the tier table has no {anonymous_tier!r} tier for anonymous callers"
            )
        self.identify = identify
        self.anonymous_tier = anonymous_tier
        self.client_ip = ClientIP(trusted_proxies, ipv6_prefix=ipv6_prefix)
        self.limits: dict[str, RateLimiter | RateLimits] = {}
        for tier, rules in tier_rules(tiers).items():
            limiters = [
                RateLimiter(rk, limit, window, algorithm, name=name, **limiter_options)
                for limit, window, name in rules
            ]
            self.limits[tier] = limiters[0] if len(limiters) == 1 else RateLimits(rk, limiters)

    def __repr__(self) -> str:
        return f"<TierPolicy tiers={list(self.limits)}>"

    async def __call__(self, scope: Scope) -> Admission | None:
        identity: Identity | None = None
        if self.identify is not None:
            found = self.identify(scope)
            identity = await found if inspect.isawaitable(found) else found
        if identity is None:
            return Admission(self.client_ip.key(scope), self.limits[self.anonymous_tier])
        limits = self.limits.get(identity.tier)
        if limits is None:
            # The app's identify named a tier the table lacks: a server bug, not bad input.
            raise ConfigurationError(
                f"unknown tier {identity.tier!r}; known: {', '.join(self.limits)}"
            )
        return Admission(f"{identity.tier}:{identity.id}", limits)
