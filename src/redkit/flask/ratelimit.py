"""Rate limits on Flask views: ``@limiter.limit("5/minute")``, on redkit's sync limiter.

::

    limiter = Limiter()

    @app.post("/login")
    @limiter.limit("5/minute")                       # per client IP
    def login_view(): ...

    @app.get("/api/report")
    @limiter.limit("100/hour", key=user_or_ip)       # per signed-in user, else per IP
    def report(): ...

Every decision is one script on the server (its clock, atomic). An allowed response carries
``RateLimit-Policy`` and ``RateLimit`` (the IETF draft's fields; ``legacy_headers=True`` adds
``X-RateLimit-*``); a refused request gets ``429`` with ``Retry-After`` and a JSON body
(``{"error": "rate_limited", ...}``) and the view does not run.

The client IP follows redkit's address rules (:mod:`redkit.ratelimit.address`): the TCP peer,
or with ``REDKIT_TRUSTED_PROXIES`` the first untrusted hop of ``X-Forwarded-For``; an IPv6
client is keyed by its /64. Redis unreachable: ``fail="open"`` (default) lets requests
through, ``"closed"`` refuses them with the 429, ``"raise"`` gives the extension's 503.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Collection
from typing import ParamSpec, TypeVar

from flask import Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from redkit.errors import InvalidInput
from redkit.flask.extension import _state, current_redkit
from redkit.flask.sessions import RedkitSession, _scope
from redkit.ratelimit.headers import (
    ietf_headers,
    legacy_headers,
    rejection_body,
    retry_after_header,
)
from redkit.ratelimit.limiter import Algorithm, Decision, FailPolicy
from redkit.sync import RateLimiter, Redkit

__all__ = ["Limiter", "client_ip_key", "parse_rate", "user_or_ip"]

P = ParamSpec("P")
R = TypeVar("R", bound=ResponseReturnValue)

_RATE = re.compile(
    r"\s*(\d{1,13})\s*(?:/|per)\s*(\d{1,9})?\s*(second|minute|hour|day|s|m|h|d)s?\s*",
    re.IGNORECASE,
)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, float]:
    """``"5/minute"``, ``"100 per hour"``, ``"10/30 seconds"``, ``"3/s"`` -> (limit, window
    in seconds). :class:`~redkit.errors.InvalidInput` for anything else."""
    match = _RATE.fullmatch(rate) if isinstance(rate, str) else None
    if match is None:
        raise InvalidInput(
            f"rate {rate!r}: write it as '<count>/<unit>' or '<count>/<n> <unit>s', units "
            "second, minute, hour, day (or s, m, h, d): '5/minute', '100 per hour'"
        )
    count, many, unit = match.groups()
    window = int(many or 1) * _UNIT[unit[0].lower()]
    if window == 0:
        raise InvalidInput(f"rate {rate!r}: the window must be longer than 0")
    return int(count), float(window)


def client_ip_key() -> str:
    """The current request's key by client address (``ip:203.0.113.5``, ``ip:2001:db8::/64``)."""
    return _state().client_ip.key(_scope(request))


def user_or_ip() -> str:
    """``user:<id>`` for a signed-in request (redkit sessions), else :func:`client_ip_key`."""
    from flask import session

    if isinstance(session, RedkitSession) and session.user_id is not None:
        return f"user:{session.user_id}"
    return client_ip_key()


class Limiter:
    """Per-view rate limits: ``limiter = Limiter()`` then ``@limiter.limit("5/minute")``.

    ``key`` (default: the client IP) is a callable run in the request, returning the key
    (a ``str``) the limit counts for; ``algorithm`` one of ``fixed_window``,
    ``sliding_window`` (default), ``sliding_log``, ``gcra``; ``fail`` what to do while Redis
    is unreachable. Each can be given again per view in :meth:`limit`. The app needs the
    :class:`redkit.flask.Redkit` extension.
    """

    def __init__(
        self,
        *,
        key: Callable[[], str] | None = None,
        algorithm: Algorithm | str = Algorithm.SLIDING_WINDOW,
        fail: FailPolicy = "open",
        legacy_headers: bool = False,
    ) -> None:
        if fail not in ("open", "closed", "raise"):
            raise InvalidInput(f"fail must be 'open', 'closed' or 'raise', got {fail!r}")
        self.key = key or client_ip_key
        self.algorithm = Algorithm(algorithm)
        self.fail: FailPolicy = fail
        self.legacy_headers = legacy_headers
        self._lock = threading.Lock()
        # One RateLimiter per (client, limit): as many as decorated views times apps.
        self._limiters: dict[tuple[int, str], tuple[Redkit, RateLimiter]] = {}

    def __repr__(self) -> str:
        return f"<redkit.flask.Limiter {self.algorithm.value} fail={self.fail}>"

    def _limiter(self, rk: Redkit, name: str, make: Callable[[Redkit], RateLimiter]) -> RateLimiter:
        slot = (id(rk), name)
        found = self._limiters.get(slot)
        if found is not None and found[0] is rk:
            return found[1]
        with self._lock:
            limiter = make(rk)
            # The client is kept beside it, so a recycled id() never finds a stale limiter.
            self._limiters[slot] = (rk, limiter)
        return limiter

    def limit(
        self,
        rate: str,
        *,
        key: Callable[[], str] | None = None,
        cost: int = 1,
        name: str | None = None,
        algorithm: Algorithm | str | None = None,
        methods: Collection[str] | None = None,
        burst: int | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, Response]]:
        """Limit the view to ``rate`` (``"5/minute"``, see :func:`parse_rate`) per key.

        ``name`` (default: the view's module and name) identifies the counters in Redis and
        the policy in the headers; views that share a name share their counts. ``methods``
        limits only those HTTP methods (all by default). ``cost`` units per request.
        The rate and options are checked here, when the module is imported.
        """
        count, window = parse_rate(rate)
        algo = Algorithm(algorithm) if algorithm is not None else self.algorithm
        key_of = key or self.key
        only = None if methods is None else frozenset(m.upper() for m in methods)
        fail = self.fail

        def decorator(view: Callable[P, R]) -> Callable[P, Response]:
            policy = name or f"{view.__module__}.{view.__qualname__}"

            def make(rk: Redkit) -> RateLimiter:
                return rk.rate_limiter(count, window, algo, burst, name=policy, fail=fail)

            @functools.wraps(view)
            def limited(*args: P.args, **kwargs: P.kwargs) -> Response:
                if only is not None and request.method not in only:
                    return current_app.make_response(view(*args, **kwargs))
                limiter = self._limiter(current_redkit(), policy, make)
                subject = key_of()
                if not isinstance(subject, str) or not subject:
                    raise InvalidInput(f"a rate-limit key must be a non-empty str, got {subject!r}")
                decision = limiter.hit(subject, cost=cost)
                if not decision.allowed:
                    refused = jsonify(rejection_body(decision))
                    refused.status_code = 429
                    refused.headers["Cache-Control"] = "no-store"
                    refused.headers.update([retry_after_header(decision)])
                    self._headers(refused, decision)
                    return refused
                response = current_app.make_response(view(*args, **kwargs))
                self._headers(response, decision)
                return response

            return limited

        return decorator

    def _headers(self, response: Response, decision: Decision) -> None:
        fields: list[tuple[str, str]] = ietf_headers(decision)
        if self.legacy_headers:
            fields += legacy_headers(decision)
        for field, value in fields:
            response.headers[field] = value
