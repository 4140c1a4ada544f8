"""Django integration: a ``CACHES`` backend on redkit's cache (``pip install redkit[django]``).

::

    CACHES = {
        "default": {
            "BACKEND": "redkit.django.RedkitCache",
            "LOCATION": "redis://127.0.0.1:6379/0",
        }
    }

See :class:`RedkitCache`; :mod:`redkit.django.sessions` (``SESSION_ENGINE``),
:mod:`redkit.django.ratelimit` (a django-ratelimit-compatible ``@ratelimit``) and
:mod:`redkit.django.tasks` (a ``TASKS`` backend, ``redkit.django.tasks.RedkitBackend``) and
:mod:`redkit.django.tiers` (``TieredRateLimitMiddleware``: rate limits by tier on every
request) are imported by name.
"""

from redkit.django.cache import RedkitCache

__all__ = ["RedkitCache"]
