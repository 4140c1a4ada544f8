"""Prometheus counters of rate-limit decisions, per limiter name.

``redkit_ratelimit_decisions_total{limiter, result}`` with result ``allowed``, ``limited``
or ``error`` (Redis unreachable; the fail policy decided), and the HTTP middleware's
``redkit_http_ratelimit_requests_total{result}`` (allowed, limited, exempt, invalid). They
live in prometheus-client's default registry: expose it with
``prometheus_client.make_asgi_app()`` (e.g. ``app.mount("/metrics", make_asgi_app())``),
``redkit.dashboard.metrics.metrics_app`` or your exporter of choice.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

__all__ = ["DECISIONS", "HTTP_REQUESTS", "counters"]

DECISIONS = Counter(
    "redkit_ratelimit_decisions",
    "Rate-limit decisions by limiter and result (allowed, limited, error).",
    ["limiter", "result"],
)


def counters(limiter: str) -> tuple[Any, Any, Any]:
    """The (allowed, limited, error) counters of one limiter, looked up once."""
    return (
        DECISIONS.labels(limiter, "allowed"),
        DECISIONS.labels(limiter, "limited"),
        DECISIONS.labels(limiter, "error"),
    )


HTTP_REQUESTS = Counter(
    "redkit_http_ratelimit_requests",
    "Requests the rate-limit middleware saw, by what it decided (allowed, limited, exempt: "
    "the policy named no limit, invalid: a key the limiter refused, answered 400).",
    ["result"],
)
HTTP_ALLOWED = HTTP_REQUESTS.labels("allowed")
HTTP_LIMITED = HTTP_REQUESTS.labels("limited")
HTTP_EXEMPT = HTTP_REQUESTS.labels("exempt")
HTTP_INVALID = HTTP_REQUESTS.labels("invalid")
