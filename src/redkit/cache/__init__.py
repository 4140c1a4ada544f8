"""A response/value cache: single flight, XFetch, stale windows, tag invalidation.

``cache = rk.cache(default_ttl=300)``; see :class:`Cache`. The ASGI middleware lives in
:mod:`redkit.cache.middleware` (the only module here that needs Starlette).
"""

from redkit.cache.core import Cache, CacheStats, list_caches

__all__ = ["Cache", "CacheStats", "list_caches"]
