"""Django integration: a ``CACHES`` backend on redkit's cache (``pip install redkit[django]``).

::

    CACHES = {
        "default": {
            "BACKEND": "redkit.django.RedkitCache",
            "LOCATION": "redis://127.0.0.1:6379/0",
        }
    }

See :class:`RedkitCache`.
"""

from redkit.django.cache import RedkitCache

__all__ = ["RedkitCache"]
