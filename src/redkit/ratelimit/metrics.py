"""Prometheus counters of rate-limit decisions, per limiter name.

``redkit_ratelimit_decisions_total{limiter, result}`` with result ``allowed``, ``limited``
or ``error`` (Redis unreachable; the fail policy decided). They live in prometheus-client's
default registry, which the platform exposes at ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["DECISIONS", "record", "record_error"]

DECISIONS = Counter(
    "redkit_ratelimit_decisions",
    "Rate-limit decisions by limiter and result (allowed, limited, error).",
    ["limiter", "result"],
)


def record(limiter: str, allowed: bool) -> None:
    DECISIONS.labels(limiter, "allowed" if allowed else "limited").inc()


def record_error(limiter: str) -> None:
    DECISIONS.labels(limiter, "error").inc()
