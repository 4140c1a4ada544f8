"""Rate limiting: four algorithms, several limits in one decision, tiers, HTTP headers.

The core (:mod:`redkit.ratelimit.limiter`, :mod:`~redkit.ratelimit.policy`,
:mod:`~redkit.ratelimit.headers`) imports no web framework; the ASGI middleware lives in
:mod:`redkit.ratelimit.middleware` and the FastAPI dependency in
:mod:`redkit.ratelimit.fastapi`.
"""

from redkit.ratelimit.limiter import (
    Algorithm,
    CircuitBreaker,
    Decision,
    FailPolicy,
    RateLimiter,
    RateLimits,
)

__all__ = ["Algorithm", "CircuitBreaker", "Decision", "FailPolicy", "RateLimiter", "RateLimits"]
