"""HTTP header fields for rate-limit decisions.

The IETF draft (draft-ietf-httpapi-ratelimit-headers, -08 onwards, current at -11) defines
two Structured Fields, each a list with one member per policy::

    RateLimit-Policy: "sliding_window:100/60s";q=100;w=60
    RateLimit: "sliding_window:100/60s";r=42;t=17

``q`` is the quota, ``w`` the window in seconds, ``r`` the remaining quota and ``t`` the
seconds until it resets. A rejected request also gets ``Retry-After`` (whole seconds,
rounded up, RFC 9110). Older clients read ``X-RateLimit-Limit``, ``-Remaining``, ``-Used`` and
``-Reset`` (seconds until reset): :func:`legacy_headers`, on request.
"""

from __future__ import annotations

import math

from redkit.ratelimit.limiter import Decision

__all__ = ["ietf_headers", "legacy_headers", "rejection_body", "retry_after_header"]

Header = tuple[str, str]


def _sf_string(value: str) -> str:
    # A Structured Field string: quoted, with backslash and quote escaped (names forbid both).
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _whole_seconds(value: float) -> int:
    return max(0, math.ceil(value - 1e-9))


def ietf_headers(decision: Decision) -> list[Header]:
    """``RateLimit-Policy`` and ``RateLimit``, one member per limit of the decision."""
    policies, states = [], []
    for d in decision.all():
        name = _sf_string(d.policy or "default")
        window = f";w={max(1, round(d.window))}" if d.window else ""
        policies.append(f"{name};q={d.limit}{window}")
        states.append(f"{name};r={d.remaining};t={_whole_seconds(d.reset_after)}")
    return [("RateLimit-Policy", ", ".join(policies)), ("RateLimit", ", ".join(states))]


def legacy_headers(decision: Decision) -> list[Header]:
    """``X-RateLimit-Limit/-Remaining/-Used/-Reset`` for the binding limit."""
    return [
        ("X-RateLimit-Limit", str(decision.limit)),
        ("X-RateLimit-Remaining", str(decision.remaining)),
        ("X-RateLimit-Used", str(max(0, decision.limit - decision.remaining))),
        ("X-RateLimit-Reset", str(_whole_seconds(decision.reset_after))),
    ]


def retry_after_header(decision: Decision) -> Header:
    """``Retry-After`` in whole seconds, never 0 for a rejection (clients would spin)."""
    return ("Retry-After", str(max(1, _whole_seconds(decision.retry_after))))


def rejection_body(decision: Decision) -> dict[str, object]:
    """The JSON body of a 429: what happened, and the exact time to wait."""
    return {
        "error": "rate_limited",
        "message": (
            f"Too many requests: limit {decision.policy!r} allows {decision.limit} per "
            f"{decision.window:g}s. Retry in {decision.retry_after:.3f}s."
        ),
        "policy": decision.policy,
        "limit": decision.limit,
        "remaining": decision.remaining,
        "retry_after": round(decision.retry_after, 3),
        "reset_after": round(decision.reset_after, 3),
    }
