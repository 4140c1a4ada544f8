"""Prometheus counters of the HTTP cache middleware's decisions, per cache.

``redkit_http_cache_responses_total{cache, result}``, result ``hit``, ``miss``, ``stale`` or
``bypass`` (the ``X-Cache`` header each response carried). Counted in this process, in
prometheus-client's default registry; the label values are the cache's configured name and
a fixed set, never anything a request chose.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

__all__ = ["HTTP_RESPONSES", "counters"]

HTTP_RESPONSES = Counter(
    "redkit_http_cache_responses",
    "Responses of the HTTP cache middleware by cache and X-Cache result.",
    ["cache", "result"],
)


def counters(cache: str) -> dict[bytes, Any]:
    """The counters of one cache by ``X-Cache`` label (b"HIT", ...), looked up once."""
    return {
        label.encode(): HTTP_RESPONSES.labels(cache, label.lower())
        for label in ("HIT", "MISS", "STALE", "BYPASS")
    }
