"""Prometheus metrics of the jobs a worker runs, counted in-process (no Redis round trip).

``redkit_jobs_processed_total{queue, function, outcome}`` (outcome: ``completed``,
``failed`` (the attempt raised or timed out), ``cancelled``, ``lost`` (the lease went to
another worker), ``shutdown`` (handed back on stop)) and
``redkit_job_duration_seconds{queue, function}`` (a histogram of attempts' run time). They
live in prometheus-client's default registry, which ``/metrics`` exposes.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

__all__ = ["DURATION", "PROCESSED", "observe"]

PROCESSED = Counter(
    "redkit_jobs_processed",
    "Job attempts run by this process's workers, by queue, function and outcome.",
    ["queue", "function", "outcome"],
)
DURATION = Histogram(
    "redkit_job_duration_seconds",
    "Run time of job attempts, by queue and function.",
    ["queue", "function"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_MAX_CHILDREN = 10_000  # bounded: label sets come from registered functions, not payloads


def observe(queue: str, function: str, outcome: str, seconds: float) -> None:
    """Count one attempt (the label lookups are cached: this runs once per job)."""
    key = (queue, function, outcome)
    child = _children.get(key)
    if child is None:
        child = (PROCESSED.labels(queue, function, outcome), DURATION.labels(queue, function))
        if len(_children) < _MAX_CHILDREN:
            _children[key] = child
    child[0].inc()
    child[1].observe(seconds)
