"""The Django test project: ``django_.settings``, set up once; each test gets the backend on
the suite's server in a namespace of its own (``override_settings``), emptied afterwards."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import django
import pytest
from django.core.cache import caches
from django.test.utils import override_settings

import redkit.sync
from redkit.django import RedkitCache
from redkit.django.tasks import task_backends

os.environ["DJANGO_SETTINGS_MODULE"] = "django_.settings"
django.setup()


def backend(url: str, namespace: str, **extra: Any) -> dict[str, Any]:
    """A CACHES entry for the test server."""
    entry: dict[str, Any] = {
        "BACKEND": "redkit.django.RedkitCache",
        "LOCATION": url,
        "KEY_PREFIX": "site",
        "TIMEOUT": 300,
        **extra,
    }
    entry["OPTIONS"] = {"NAMESPACE": namespace, **entry.get("OPTIONS", {})}
    return entry


@pytest.fixture
def raw(redis_url: str, namespace: str) -> Iterator[redkit.sync.Redkit]:
    """A sync Redkit in the test's namespace; the namespace is emptied afterwards."""
    with redkit.sync.connect(redis_url, namespace) as client:
        yield client
        for key in client.redis.scan_iter(match=client.keys.pattern, count=1000):
            client.redis.unlink(key)


@pytest.fixture
def caches_config(redis_url: str, namespace: str) -> dict[str, Any]:
    return {
        "default": backend(redis_url, namespace),
        "other": backend(redis_url, namespace, KEY_PREFIX="other"),
        "pickled": backend(redis_url, namespace, OPTIONS={"SERIALIZER": "pickle"}),
    }


@pytest.fixture
def project(
    caches_config: dict[str, Any], raw: redkit.sync.Redkit
) -> Iterator[dict[str, RedkitCache]]:
    """The project's caches on the test server (the sync clients closed afterwards)."""
    with override_settings(CACHES=caches_config):
        opened = {alias: caches[alias] for alias in caches_config}
        yield opened
        for cache in opened.values():
            cache.disconnect()


@pytest.fixture
def sessions(redis_url: str, namespace: str, raw: redkit.sync.Redkit) -> Iterator[None]:
    """SESSION_ENGINE on the test server, in the test's namespace."""
    with override_settings(REDKIT_SESSIONS={"LOCATION": redis_url, "NAMESPACE": namespace}):
        yield


@pytest.fixture
def limits(redis_url: str, namespace: str, raw: redkit.sync.Redkit) -> Iterator[None]:
    """The ratelimit decorator on the test server, in the test's namespace."""
    with override_settings(REDKIT_RATELIMIT={"LOCATION": redis_url, "NAMESPACE": namespace}):
        yield


@pytest.fixture
def cache(project: dict[str, RedkitCache]) -> RedkitCache:
    return project["default"]


@pytest.fixture
async def acache(project: dict[str, RedkitCache]) -> AsyncIterator[RedkitCache]:
    """The default cache, its async client closed at the end of the test's event loop."""
    yield project["default"]
    for cache in project.values():
        await cache.adisconnect()


def tasks_config(url: str, namespace: str, **options: Any) -> dict[str, Any]:
    """A TASKS setting on the test server, in the test's namespace."""
    return {
        "default": {
            "BACKEND": "redkit.django.tasks.RedkitBackend",
            "LOCATION": url,
            "QUEUES": ["default", "mail"],
            "OPTIONS": {"NAMESPACE": namespace, **options},
        }
    }


@pytest.fixture
def tasks_sync(redis_url: str, namespace: str, raw: redkit.sync.Redkit) -> Iterator[None]:
    """TASKS on the test server for a sync test (the backend's client closed after)."""
    with override_settings(TASKS=tasks_config(redis_url, namespace)):
        yield
        task_backends["default"].close()


@pytest.fixture
async def tasks_async(redis_url: str, namespace: str, rk: redkit.Redkit) -> AsyncIterator[None]:
    """TASKS on the test server for an async test (its clients closed in the test's loop)."""
    with override_settings(TASKS=tasks_config(redis_url, namespace)):
        yield
        backend = task_backends["default"]
        await backend.aclose()
        backend.close()
