"""The settings of the test project (``DJANGO_SETTINGS_MODULE=django_.settings``).

The tests point ``CACHES`` at the suite's server with ``override_settings``; what stands here is
what a project writes (``REDIS_URL`` unset: the embedded server, as ``redkit.connect()``).
"""

from __future__ import annotations

import os

SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "redkit.django.ratelimit.RatelimitMiddleware",
]
ROOT_URLCONF = "django_.urls"
# The users of django_.auth, kept in memory: the project has no database.
AUTHENTICATION_BACKENDS = ["django_.auth.MemoryBackend"]
DATABASES: dict[str, dict[str, str]] = {}
SESSION_ENGINE = "redkit.django.sessions"
REDKIT_SESSIONS = {"LOCATION": os.environ.get("REDIS_URL", "")}
REDKIT_RATELIMIT = {"LOCATION": os.environ.get("REDIS_URL", "")}
CACHES = {
    "default": {
        "BACKEND": "redkit.django.RedkitCache",
        "LOCATION": os.environ.get("REDIS_URL", ""),
        "KEY_PREFIX": "site",
        "TIMEOUT": 300,
    },
}
