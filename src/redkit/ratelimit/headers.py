"""HTTP header fields for rate-limit decisions.

The IETF draft (draft-ietf-httpapi-ratelimit-headers, -08 onwards, current at -11) defines
two Structured Fields, each a list with one member per policy::

    RateLimit-Policy: "sliding_window:100/60s";q=100;w=60
    RateLimit: "sliding_window:100/60s";r=42;t=17

``q`` is the quota, ``w`` the window in seconds, ``r`` the remaining quota and ``t`` the
seconds until it resets. A rejected request also gets ``Retry-After`` (whole seconds,
rounded up, RFC 9110). Older clients read ``X-RateLimit-Limit``, ``-Remaining``, ``-Used`` and
``-Reset`` (seconds until reset): :func:`legacy_headers`, on request.

What ``t`` means
----------------
On a **rejected** request, ``t`` of the limit that rejected is the wait until the request's
cost fits again: the same number as ``Retry-After`` (and ``X-RateLimit-Reset``), as the
draft requires. On an **allowed** request it is the time until the limit is back to its full
quota (:attr:`Decision.reset_after <redkit.ratelimit.limiter.Decision>`), which depends on
the algorithm:

* ``fixed_window``: the time left in the current window (at most ``w``).
* ``sliding_window``: until the weighted count falls to zero. A unit taken in this window
  still weighs (less and less) through the whole next window, so ``t`` runs up to two
  windows: a 60 s window can answer ``t=80`` (20 s left in this window, then 60 s of the
  next). For the same reason the wait after a rejection can pass the window's end
  (``Retry-After: 68`` on a 60 s window): the previous window's count must weigh less
  before the request fits, which is the real wait, not a whole window.
* ``sliding_log``: until the newest unit leaves the log, one window after the last hit.
* ``gcra``: until the bucket is full again, at most ``burst * w / q``.

One response carries one set of these headers: with both the middleware and the FastAPI
dependency in use, the dependency keeps the most restrictive of the two decisions
(:func:`most_restrictive`) and the middleware writes the headers of that one.
"""

from __future__ import annotations

import math

from redkit.ratelimit.limiter import Decision

__all__ = [
    "RATE_LIMIT_HEADERS",
    "ietf_headers",
    "legacy_headers",
    "most_restrictive",
    "rejection_body",
    "reset_seconds",
    "retry_after_header",
]

Header = tuple[str, str]


def _sf_string(value: str) -> str:
    # A Structured Field string: quoted, with backslash and quote escaped (names forbid both).
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _whole_seconds(value: float) -> int:
    return max(0, math.ceil(value - 1e-9))


RATE_LIMIT_HEADERS = frozenset(
    {
        "ratelimit",
        "ratelimit-policy",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-used",
        "x-ratelimit-reset",
    }
)
"""The (lower-case) names of the fields written here, but for ``Retry-After``."""


def reset_seconds(decision: Decision) -> int:
    """The ``t`` of one limit's decision: the wait for a rejection, else the reset time."""
    if not decision.allowed:
        # Never 0 for a rejection (clients would spin), and the same as Retry-After.
        return max(1, _whole_seconds(decision.retry_after))
    return _whole_seconds(decision.reset_after)


def most_restrictive(*decisions: Decision) -> Decision:
    """The decision that binds: a rejection with the longest wait, else the least room left.

    The same rule as for several limits in one :class:`~redkit.ratelimit.RateLimits`.
    """
    if not decisions:
        raise ValueError("most_restrictive needs at least one decision")
    rejected = [d for d in decisions if not d.allowed]
    if rejected:
        return max(rejected, key=lambda d: d.retry_after)
    return min(decisions, key=lambda d: (d.remaining, -d.reset_after))


def ietf_headers(decision: Decision) -> list[Header]:
    """``RateLimit-Policy`` and ``RateLimit``, one member per limit of the decision."""
    policies, states = [], []
    for d in decision.all():
        name = _sf_string(d.policy or "default")
        window = f";w={max(1, round(d.window))}" if d.window else ""
        policies.append(f"{name};q={d.limit}{window}")
        states.append(f"{name};r={d.remaining};t={reset_seconds(d)}")
    return [("RateLimit-Policy", ", ".join(policies)), ("RateLimit", ", ".join(states))]


def legacy_headers(decision: Decision) -> list[Header]:
    """``X-RateLimit-Limit/-Remaining/-Used/-Reset`` for the binding limit."""
    return [
        ("X-RateLimit-Limit", str(decision.limit)),
        ("X-RateLimit-Remaining", str(decision.remaining)),
        ("X-RateLimit-Used", str(max(0, decision.limit - decision.remaining))),
        ("X-RateLimit-Reset", str(reset_seconds(decision))),
    ]


def retry_after_header(decision: Decision) -> Header:
    """``Retry-After`` in whole seconds, never 0 (clients would spin): for a rejection, the
    same number as the rejecting limit's ``t`` in ``RateLimit``."""
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
