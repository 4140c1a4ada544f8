"""The sync API's tests: generated from the async tests (tools/async_to_sync.py), on the same
servers. Here ``rk`` is a :class:`redkit.sync.Redkit` in a namespace of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import redkit.sync


@pytest.fixture
def rk(redis_url: str, namespace: str) -> Iterator[redkit.sync.Redkit]:
    """A sync Redkit on this test's server, in a fresh namespace that is emptied afterwards."""
    with redkit.sync.connect(redis_url, namespace) as client:
        yield client
        for key in client.redis.scan_iter(match=client.keys.pattern, count=1000):
            client.redis.unlink(key)
