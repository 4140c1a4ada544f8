"""``redkit.flask.RedkitCache``: Flask-Caching on redkit, through a real Flask app's
``@cache.cached`` views and ``@cache.memoize`` functions, on the suite's real servers."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask, abort, jsonify, make_response
from flask.typing import ResponseReturnValue
from flask_caching import Cache
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import MethodNotAllowed, TooManyRequests, Unauthorized

import redkit.sync
from redkit.errors import ConfigurationError, InvalidInput
from redkit.flask import RedkitCache

pytestmark = pytest.mark.cluster

YEAR_MS = 365 * 24 * 3600 * 1000


class Counted:
    """How often each view or function really ran (a hit does not count)."""

    def __init__(self) -> None:
        self.runs: dict[str, itertools.count[int]] = {}

    def __call__(self, name: str) -> int:
        return next(self.runs.setdefault(name, itertools.count(1)))


def build_app(redis_url: str, namespace: str, **config: Any) -> tuple[Flask, Cache, Counted]:
    """A small app as users write one: Flask-Caching's Cache on CACHE_TYPE redkit."""
    app = Flask(__name__)
    app.config.update(
        CACHE_TYPE="redkit.flask.RedkitCache",
        CACHE_REDIS_URL=redis_url,
        CACHE_OPTIONS={"namespace": namespace},
        CACHE_DEFAULT_TIMEOUT=120,
    )
    app.config.update(config)
    cache = Cache(app)
    ran = Counted()

    @app.get("/page")
    @cache.cached(timeout=60)
    def page() -> ResponseReturnValue:
        return f"page render {ran('page')}"

    @app.post("/created")
    @cache.cached(timeout=60)
    def created() -> ResponseReturnValue:
        return jsonify(n=ran("created")), 201, {"X-Made": "yes"}

    @app.get("/text-with-status")
    @cache.cached(timeout=60)
    def text_with_status() -> ResponseReturnValue:
        return f"accepted {ran('accepted')}", 202

    @app.get("/gone")
    @cache.cached(timeout=60)
    def gone() -> ResponseReturnValue:
        ran("gone")
        abort(404)

    @app.get("/when")
    @cache.cached(timeout=60)
    def when() -> Any:
        ran("when")
        return {"at": datetime(2026, 1, 1)}  # Flask would send it, JSON cannot keep it

    @app.get("/cookie")
    @cache.cached(timeout=60)
    def cookie() -> ResponseReturnValue:
        response = make_response(f"cookie {ran('cookie')}")
        response.set_cookie("private", "for-one-client-only")
        return response

    @cache.memoize(timeout=60)
    def score(user: str, bonus: int = 0) -> tuple[str, int]:
        return user, ran("score") * 10 + bonus

    @cache.memoize(timeout=60)
    def profile(user: str) -> dict[str, Any]:
        return {"user": user, "runs": ran("profile"), "tags": ["a", "b"], "none": None}

    app.extensions["test_functions"] = {"score": score, "profile": profile}
    return app, cache, ran


@pytest.fixture
def make(redis_url: str, namespace: str) -> Iterator[Callable[..., tuple[Flask, Cache, Counted]]]:
    """Build apps on this test's server and namespace; clients closed, namespace emptied."""
    built: list[Cache] = []

    def make_one(**config: Any) -> tuple[Flask, Cache, Counted]:
        app, cache, ran = build_app(redis_url, namespace, **config)
        built.append(cache)
        return app, cache, ran

    yield make_one
    for cache in built:
        backend_of(cache).close()
    with redkit.sync.connect(redis_url, namespace) as rk:
        for key in rk.redis.scan_iter(match=rk.keys.pattern, count=1000):
            rk.redis.unlink(key)


@pytest.fixture
def site(make: Callable[..., tuple[Flask, Cache, Counted]]) -> tuple[Flask, Cache, Counted]:
    return make()


def backend_of(cache: Cache) -> RedkitCache:
    backend: object = cache.cache  # typed by Flask-Caching as its SimpleCache
    assert isinstance(backend, RedkitCache)
    return backend


def entry_pttl(backend: RedkitCache, key: str) -> int:
    client = backend._client()
    keys = client.keys_for(backend.key_prefix + key)
    return int(client.rk.redis.pttl(keys.entry))


# -- @cache.cached views ----------------------------------------------------------------------


def test_a_cached_view_renders_once_and_every_later_request_gets_the_same_page(
    site: tuple[Flask, Cache, Counted],
) -> None:
    app, _, _ = site
    client = app.test_client()
    first = client.get("/page")
    assert first.status_code == 200
    assert first.text == "page render 1"
    for _ in range(3):
        assert client.get("/page").text == "page render 1"


def test_a_jsonify_response_with_status_and_headers_is_cached_as_it_was_sent(
    site: tuple[Flask, Cache, Counted],
) -> None:
    app, cache, _ = site
    client = app.test_client()
    first = client.post("/created")
    again = client.post("/created")
    assert first.status_code == again.status_code == 201
    assert first.json == again.json == {"n": 1}
    assert again.headers["X-Made"] == "yes"
    assert again.headers["Content-Type"] == "application/json"
    # Stored as a response (kind H), not pickled: the default JSON backend reads it back.
    backend = backend_of(cache)
    client_cache = backend._client()
    entry = client_cache.keys_for(backend.key_prefix + "view//created").entry
    raw: object = client_cache.rk.redis.get(entry)
    assert isinstance(raw, bytes)
    assert raw[raw.index(b"|") + 1 :].startswith(b"H")


def test_a_text_and_status_tuple_comes_back_as_the_same_tuple(
    site: tuple[Flask, Cache, Counted],
) -> None:
    app, _, _ = site
    client = app.test_client()
    for _ in range(2):
        response = client.get("/text-with-status")
        assert (response.status_code, response.text) == (202, "accepted 1")


def test_an_abort_is_cached_and_raised_again_on_a_hit(
    site: tuple[Flask, Cache, Counted],
) -> None:
    app, _, ran = site
    client = app.test_client()
    assert client.get("/gone").status_code == 404
    assert client.get("/gone").status_code == 404
    assert next(ran.runs["gone"]) == 2  # the view ran once


def test_an_error_with_headers_of_its_own_is_refused_rather_than_cached_without_them(
    site: tuple[Flask, Cache, Counted],
) -> None:
    # Found by an attack pass: a cached 405 came back without Allow, a 429 without
    # Retry-After, a 401 without WWW-Authenticate.
    _, cache, _ = site
    for error in (
        MethodNotAllowed(valid_methods=["GET"]),
        TooManyRequests(retry_after=30),
        Unauthorized(www_authenticate=WWWAuthenticate("bearer")),
    ):
        with pytest.raises(InvalidInput, match="headers of its own"):
            cache.cache.set("error", error)
        assert cache.cache.get("error") is None
    cache.cache.set("plain", MethodNotAllowed())  # no header of its own: cached
    assert isinstance(cache.cache.get("plain"), MethodNotAllowed)


def test_a_view_whose_output_json_cannot_keep_is_served_uncached_with_the_reason_logged(
    site: tuple[Flask, Cache, Counted], caplog: pytest.LogCaptureFixture
) -> None:
    app, _, ran = site
    client = app.test_client()
    with caplog.at_level(logging.ERROR, logger="flask_caching"):
        assert client.get("/when").status_code == 200
        assert client.get("/when").status_code == 200
    assert next(ran.runs["when"]) == 3  # ran both times: nothing was stored
    raised = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert len(raised) == 2
    assert all(isinstance(exc, InvalidInput) for exc in raised)
    assert "datetime" in str(raised[0])


def test_a_response_that_sets_a_cookie_is_never_handed_to_another_client(
    site: tuple[Flask, Cache, Counted],
) -> None:
    app, _, _ = site
    first = app.test_client().get("/cookie")
    second = app.test_client().get("/cookie")
    assert (first.text, second.text) == ("cookie 1", "cookie 2")


# -- @cache.memoize ---------------------------------------------------------------------------


def test_a_memoized_function_returns_the_same_types_from_the_cache(
    site: tuple[Flask, Cache, Counted],
) -> None:
    app, _, _ = site
    score = app.extensions["test_functions"]["score"]
    profile = app.extensions["test_functions"]["profile"]
    with app.app_context():
        assert score("ann") == ("ann", 10)
        assert score("ann") == ("ann", 10)
        assert isinstance(score("ann"), tuple)
        assert score("bob", bonus=1) == ("bob", 21)
        assert (
            profile("ann")
            == profile("ann")
            == {
                "user": "ann",
                "runs": 1,
                "tags": ["a", "b"],
                "none": None,
            }
        )


def test_delete_memoized_makes_the_next_call_run_again(
    site: tuple[Flask, Cache, Counted],
) -> None:
    app, cache, _ = site
    score = app.extensions["test_functions"]["score"]
    with app.app_context():
        assert score("ann") == ("ann", 10)
        cache.delete_memoized(score, "ann")
        assert score("ann") == ("ann", 20)
        assert score("ann") == ("ann", 20)
        cache.delete_memoized(score)  # every argument: a new version of the function
        assert score("ann") == ("ann", 30)


# -- the backend API --------------------------------------------------------------------------


def test_get_set_add_has_delete_and_the_many_forms(site: tuple[Flask, Cache, Counted]) -> None:
    app, cache, _ = site
    with app.app_context():
        assert cache.get("a") is None
        assert cache.has("a") is False
        assert cache.set("a", {"x": [1, 2.5, "t", True, None]}) is True
        assert cache.get("a") == {"x": [1, 2.5, "t", True, None]}
        assert cache.has("a") is True
        assert cache.add("a", "other") is False
        assert cache.get("a") == {"x": [1, 2.5, "t", True, None]}
        assert cache.add("b", b"\x00raw") is True
        assert cache.get("b") == b"\x00raw"
        assert cache.set_many({"c": 3, "d": "four"}) == ["c", "d"]
        assert cache.get_many("a", "c", "missing", "d") == [
            {"x": [1, 2.5, "t", True, None]},
            3,
            None,
            "four",
        ]
        assert cache.get_dict("c", "d") == {"c": 3, "d": "four"}
        assert cache.delete("c") is True
        assert cache.delete("c") is False
        assert cache.delete_many("a", "b", "never-there") == ["a", "b", "never-there"]
        assert cache.get_many("a", "b", "d") == [None, None, "four"]


def test_timeout_none_is_the_configured_default_and_zero_never_expires_yet_is_bounded(
    site: tuple[Flask, Cache, Counted],
) -> None:
    app, cache, _ = site
    backend = backend_of(cache)
    with app.app_context():
        cache.set("default", 1)
        assert 0 < entry_pttl(backend, "default") <= 120_000
        cache.set("short", 1, timeout=5)
        assert 0 < entry_pttl(backend, "short") <= 5_000
        cache.set("delta", 1, timeout=timedelta(minutes=2))
        assert 60_000 < entry_pttl(backend, "delta") <= 120_000
        cache.set("forever", 1, timeout=0)
        assert 300 * 24 * 3600 * 1000 < entry_pttl(backend, "forever") <= YEAR_MS


def test_a_negative_or_non_numeric_timeout_is_refused_and_nothing_is_stored(
    site: tuple[Flask, Cache, Counted],
) -> None:
    app, cache, _ = site
    with app.app_context():
        for bad in (-1, "60", float("nan"), True):
            with pytest.raises(InvalidInput):
                cache.set("k", "v", timeout=bad)
        assert cache.has("k") is False


def test_values_json_cannot_give_back_exactly_raise_and_leave_the_old_value(
    site: tuple[Flask, Cache, Counted],
) -> None:
    app, cache, _ = site
    with app.app_context():
        cache.set("k", "old")
        for bad in (
            datetime(2026, 1, 1),
            {1, 2},
            object(),
            {1: "int key"},
            [("nested", "tuple")],
            {"deep": {"when": datetime(2026, 1, 1)}},
            float("inf"),
        ):
            with pytest.raises(InvalidInput):
                cache.set("k", bad)
            with pytest.raises(InvalidInput):
                cache.add("new", bad)
        assert cache.get("k") == "old"
        assert cache.has("new") is False


def test_set_many_with_one_bad_value_writes_none_of_them(
    site: tuple[Flask, Cache, Counted],
) -> None:
    app, cache, _ = site
    with app.app_context():
        with pytest.raises(InvalidInput):
            cache.set_many({"good": 1, "bad": datetime(2026, 1, 1), "after": 2})
        assert cache.get_many("good", "bad", "after") == [None, None, None]


def test_a_value_over_the_size_cap_is_refused(make: Callable[..., Any], namespace: str) -> None:
    app, cache, _ = make(CACHE_OPTIONS={"namespace": namespace, "max_bytes": 1000})
    with app.app_context():
        for big in ("x" * 2000, b"x" * 2000, ("x" * 2000,)):
            with pytest.raises(InvalidInput, match="cap"):
                cache.set("big", big)
        assert cache.has("big") is False


def test_inc_and_dec_are_atomic_across_threads_and_a_missing_key_starts_at_the_amount(
    site: tuple[Flask, Cache, Counted],
) -> None:
    _, cache, _ = site
    backend = backend_of(cache)
    assert backend.inc("hits") == 1
    assert backend.dec("hits", 3) == -2
    assert backend.inc("fresh", 5) == 5
    assert 0 < entry_pttl(backend, "fresh") <= 120_000  # the default timeout

    def bump() -> None:
        for _ in range(25):
            backend.inc("shared")

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert cache.get("shared") == 200
    cache.set("word", "not a number")
    with pytest.raises(InvalidInput, match="not an integer"):
        backend.inc("word")
    assert cache.get("word") == "not a number"
    with pytest.raises(InvalidInput):
        backend.inc("hits", 1.5)  # type: ignore[arg-type]


def test_entries_set_with_a_tag_are_deleted_by_invalidating_it(
    site: tuple[Flask, Cache, Counted],
) -> None:
    app, cache, _ = site
    with app.app_context():
        cache.set("card:1", "one", tags=["user:1"])
        cache.add("card:2", "two", tags=["user:1", "cards"])
        cache.set_many({"card:3": "three", "card:4": "four"}, tags="user:2")
        cache.set("untagged", "stays")
        assert backend_of(cache).invalidate("user:1") == 2
        assert cache.get_many("card:1", "card:2", "card:3", "untagged") == [
            None,
            None,
            "three",
            "stays",
        ]
        assert backend_of(cache).invalidate("user:2", "cards") == 2
        assert backend_of(cache).invalidate() == 0
        with pytest.raises(InvalidInput):
            cache.set("k", "v", tags=[""])


def test_clear_deletes_this_prefix_entries_only_and_nothing_else_on_the_server(
    make: Callable[..., Any], redis_url: str, namespace: str
) -> None:
    app, cache, _ = make()
    other_app, other, _ = make(CACHE_KEY_PREFIX="other_")
    with redkit.sync.connect(redis_url, namespace) as rk:
        session = rk.sessions().create("ann", {"keep": True})
        with app.app_context():
            cache.set("a", 1)
            cache.set("b", 2, tags=["t"])
            backend_of(cache).inc("n")
        with other_app.app_context():
            other.set("a", "other's")
            other.set("b", "other's", tags=["t"])
        with app.app_context():
            assert cache.clear() is True
            assert cache.get_many("a", "b", "n") == [None, None, None]
        with app.app_context():
            # A tag is its prefix's own too.
            assert backend_of(cache).invalidate("t") == 0
        with other_app.app_context():
            assert other.get_many("a", "b") == ["other's", "other's"]
        assert rk.sessions().get(session.id) is not None


def test_pickle_only_when_asked_and_a_json_backend_never_unpickles(
    make: Callable[..., Any], namespace: str
) -> None:
    pickled_app, pickled, _ = make(CACHE_OPTIONS={"namespace": namespace, "serializer": "pickle"})
    json_app, plain, _ = make()
    when = datetime(2026, 1, 1, 12, 30)
    with pickled_app.app_context():
        pickled.set("when", {"at": when, "ids": {1, 2}})
        assert pickled.get("when") == {"at": when, "ids": {1, 2}}
        assert backend_of(pickled).inc("n") == 1  # integers stay JSON, for inc
    with json_app.app_context(), pytest.raises(InvalidInput, match="pickle"):
        plain.get("when")


def test_the_server_comes_from_redkit_url_when_cache_redis_url_is_not_set(
    make: Callable[..., Any], redis_url: str
) -> None:
    app, cache, _ = make(CACHE_REDIS_URL=None, REDKIT_URL=redis_url)
    with app.app_context():
        cache.set("k", "v")
        assert cache.get("k") == "v"
    assert backend_of(cache)._connect["url"] == redis_url


def test_bad_configuration_is_reported_when_the_app_is_set_up(redis_url: str) -> None:
    for config in (
        {"CACHE_OPTIONS": {"nonsense": 1}},
        {"CACHE_OPTIONS": {"serializer": "yaml"}},
        {"CACHE_ARGS": ["positional"]},
        {"CACHE_REDIS_URL": "http://not-redis"},
        {"CACHE_DEFAULT_TIMEOUT": -5},
        {"CACHE_OPTIONS": {"max_timeout": 0}},
    ):
        app = Flask(__name__)
        app.config.update(CACHE_TYPE="redkit.flask.RedkitCache", CACHE_REDIS_URL=redis_url)
        app.config.update(config)
        with pytest.raises(ConfigurationError):
            Cache(app)
