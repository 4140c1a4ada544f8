"""Prometheus counters of the session stores of this process.

``redkit_sessions_created_total`` and ``redkit_sessions_revoked_total`` (one per session
ended by ``revoke``, ``revoke_prefix`` or
``revoke_all``; not those that expire). No labels. In
prometheus-client's default registry.
"""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["CREATED", "REVOKED"]

CREATED = Counter("redkit_sessions_created", "Sessions created in this process.")
REVOKED = Counter("redkit_sessions_revoked", "Sessions revoked (ended early) in this process.")
