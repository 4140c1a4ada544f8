"""The ``redkit://`` storage for ``limits``: its three strategies on the server's clock, and
Flask-Limiter running on it unchanged."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask_limiter import Limiter as FlaskLimiter
from flask_limiter.util import get_remote_address
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)

import redkit.sync
from redkit.errors import ConfigurationError
from redkit.flask import RedkitStorage

pytestmark = pytest.mark.cluster

STRATEGIES: dict[str, Callable[[RedkitStorage], RateLimiter]] = {
    "fixed-window": FixedWindowRateLimiter,
    "moving-window": MovingWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
}


def storage_uri(redis_url: str) -> str:
    """``redis://...`` -> ``redkit://...`` (and ``redis+cluster`` -> ``redkit+cluster``)."""
    assert redis_url.startswith("redis")
    return "redkit" + redis_url[len("redis") :]


@pytest.fixture
def storage(redis_url: str, namespace: str) -> Iterator[RedkitStorage]:
    made = storage_from_string(storage_uri(redis_url), namespace=namespace)
    assert isinstance(made, RedkitStorage)
    yield made
    made.reset()
    made.close()


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_each_strategy_allows_the_limit_and_refuses_the_next_hit(
    storage: RedkitStorage, strategy: str
) -> None:
    limiter: RateLimiter = STRATEGIES[strategy](storage)
    item = parse("3/minute")
    assert [limiter.hit(item, "alice") for _ in range(4)] == [True, True, True, False]
    assert limiter.hit(item, "bob")  # another key, another count
    stats = limiter.get_window_stats(item, "alice")
    assert stats.remaining == 0
    assert not limiter.test(item, "alice")
    limiter.clear(item, "alice")
    assert limiter.test(item, "alice")
    assert limiter.hit(item, "alice")


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_a_cost_larger_than_the_room_left_is_refused_whole(
    storage: RedkitStorage, strategy: str
) -> None:
    limiter: RateLimiter = STRATEGIES[strategy](storage)
    item = parse("5/hour")
    assert limiter.hit(item, "k", cost=3)
    assert not limiter.hit(item, "k", cost=3)
    if strategy == "fixed-window":
        # A fixed window counts the refused hit too (limits' own rule for it): no room left.
        assert not limiter.hit(item, "k", cost=2)
    else:
        assert limiter.hit(item, "k", cost=2)
    assert not limiter.hit(item, "k")


def test_the_reset_time_is_one_window_after_the_first_hit(storage: RedkitStorage) -> None:
    limiter = FixedWindowRateLimiter(storage)
    item = parse("2/minute")
    limiter.hit(item, "k")
    seconds, micros = storage.rk.redis.time()
    server_now = seconds + micros / 1e6
    reset = limiter.get_window_stats(item, "k").reset_time
    assert server_now < reset <= server_now + 60.5


def test_moving_window_entries_are_bounded_by_the_limit(storage: RedkitStorage) -> None:
    limiter = MovingWindowRateLimiter(storage)
    item = parse("3/minute")
    for _ in range(10):
        limiter.hit(item, "k")
    key = storage._group(item.key_for("k")).key("m")
    assert storage.rk.redis.zcard(key) == 3
    assert 0 < storage.rk.redis.pttl(key) <= 60_000


def test_reset_deletes_only_the_storages_keys(
    storage: RedkitStorage, redis_url: str, namespace: str
) -> None:
    FixedWindowRateLimiter(storage).hit(parse("1/minute"), "k")
    with redkit.sync.connect(redis_url, namespace) as rk:
        rk.redis.set(rk.keys.key("other"), "kept")
        assert storage.reset() == 1
        assert rk.redis.get(rk.keys.key("other")) == b"kept"
        rk.redis.delete(rk.keys.key("other"))


def test_a_bad_uri_or_option_is_a_configuration_error(redis_url: str) -> None:
    with pytest.raises(ConfigurationError):
        RedkitStorage("redis://localhost")
    with pytest.raises(ConfigurationError):
        RedkitStorage(storage_uri(redis_url), key_prefix="x")


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_flask_limiter_runs_unchanged_on_redkit(
    redis_url: str, namespace: str, strategy: str
) -> None:
    app = Flask(__name__)
    limiter = FlaskLimiter(
        get_remote_address,
        app=app,
        storage_uri=storage_uri(redis_url),
        storage_options={"namespace": namespace},
        strategy=strategy,
        headers_enabled=True,
    )

    @app.get("/")
    @limiter.limit("2/minute")
    def index() -> str:
        return "ok"

    client = app.test_client()
    try:
        codes = [client.get("/").status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert client.get("/").headers["X-RateLimit-Limit"] == "2"
    finally:
        storage = limiter._storage
        assert isinstance(storage, RedkitStorage)
        storage.reset()
        storage.close()
