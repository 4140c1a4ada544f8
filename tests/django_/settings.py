"""The settings of the test project (``DJANGO_SETTINGS_MODULE=django_.settings``).

The tests point ``CACHES`` at the suite's server with ``override_settings``; what stands here is
what a project writes (``REDIS_URL`` unset: the embedded server, as ``redkit.connect()``).
"""

from __future__ import annotations

import os

import django

SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    # The project's own app: its tasks module (django_.tasks) is where the worker finds tasks.
    "django_",
]
if django.VERSION < (6, 0):
    INSTALLED_APPS.append("django_tasks")  # the backport of Django 6.0's django.tasks
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "redkit.django.ratelimit.RatelimitMiddleware",
]
ROOT_URLCONF = "django_.urls"
# A real database for the tasks' enqueue-on-commit: Django's transactions on SQLite.
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
AUTHENTICATION_BACKENDS = ["django_.auth.MemoryBackend"]
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
TASKS = {
    "default": {
        "BACKEND": "redkit.django.tasks.RedkitBackend",
        "LOCATION": os.environ.get("REDIS_URL", ""),
        "QUEUES": ["default", "mail"],
    },
}
