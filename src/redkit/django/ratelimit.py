"""A rate-limit decorator with django-ratelimit's arguments, on redkit's limiters.

::

    from redkit.django.ratelimit import ratelimit

    @ratelimit(key="ip", rate="5/m", method="POST")
    def login(request): ...

``group``, ``key``, ``rate``, ``method`` and ``block`` mean what they mean in django-ratelimit:
keys ``ip``, ``user``, ``user_or_ip``, ``header:<name>``, ``get:<name>``, ``post:<name>``, a
callable ``(group, request) -> str`` or its dotted path; rates ``N/s``, ``N/m``, ``N/h``, ``N/d``
(``N/10m`` for ten minutes), or a callable ``(group, request)`` returning one (or None: no
limit). ``request.limited`` is set; over the limit with ``block=True`` the view is not called
and :class:`Ratelimited` (a ``PermissionDenied``, as in django-ratelimit) is raised, which
:class:`RatelimitMiddleware` answers with a 429, a JSON body, ``Retry-After`` and the
``RateLimit`` headers. Sync and async views both work; an async view's check runs on redkit's
async client (one per event loop), a sync view's on the sync one; the clock is the server's.

Beyond django-ratelimit: ``algorithm=`` (``sliding_window`` by default, ``fixed_window``,
``sliding_log``, ``gcra``), and the ``RateLimit`` headers on every response of a limited view.

``ip`` is ``REMOTE_ADDR`` (IPv6 addresses by their /64, ``IPV6_MASK``): a proxy in front must
set it (a header such as ``X-Forwarded-For`` is written by the client, so it is not read unless
you name it with ``header:``). Settings, all optional: ``REDKIT_RATELIMIT = {"LOCATION": ...,
"NAMESPACE": ..., "ALGORITHM": "sliding_window", "FAIL": "open", "IPV6_MASK": 64}``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import ipaddress
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import sync_and_async_middleware
from django.utils.module_loading import import_string

import redkit
import redkit.sync
from redkit.errors import ConfigurationError, InvalidInput
from redkit.ratelimit.headers import (
    ietf_headers,
    legacy_headers,
    most_restrictive,
    rejection_body,
    retry_after_header,
)
from redkit.ratelimit.limiter import Decision

__all__ = ["ALL", "UNSAFE", "RatelimitMiddleware", "Ratelimited", "ratelimit"]

ALL: Final = None
UNSAFE: Final = ("DELETE", "PATCH", "POST", "PUT")

_RATE = re.compile(r"^([0-9]{1,12})/([0-9]{0,6})([smhd])$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_KEYS: Final = frozenset({"LOCATION", "NAMESPACE", "ALGORITHM", "FAIL", "IPV6_MASK"})
# Limiters by (limit, window, algorithm); a callable rate could make many, so the map is
# emptied when it reaches this size (bounded; a limiter is cheap to make again).
_MAX_LIMITERS: Final = 1024


class Ratelimited(PermissionDenied):  # type: ignore[misc]  # Django ships no type hints
    """Raised by a blocking :func:`ratelimit` over its limit; ``decision`` says how long to
    wait. :class:`RatelimitMiddleware` turns it into a 429."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(f"rate limited: retry in {decision.retry_after:.3f}s")
        self.decision = decision


class _Limiters:
    """The process's limiters: one sync client, one async client per event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sync: redkit.sync.Redkit | None = None
        self._sync_limiters: dict[tuple[int, float, str], redkit.sync.RateLimiter] = {}
        # Bounded: closed loops' clients are dropped when a loop is added.
        self._async: dict[
            asyncio.AbstractEventLoop,
            tuple[redkit.Redkit, dict[tuple[int, float, str], redkit.RateLimiter]],
        ] = {}

    def config(self) -> dict[str, Any]:
        config = dict(getattr(settings, "REDKIT_RATELIMIT", None) or {})
        unknown = sorted(set(config) - _KEYS)
        if unknown:
            raise ConfigurationError(
                f"REDKIT_RATELIMIT does not know {', '.join(unknown)}; "
                f"it accepts {', '.join(sorted(_KEYS))}"
            )
        return config

    def _connect_args(self) -> tuple[str | None, str | None]:
        config = self.config()
        return config.get("LOCATION") or None, config.get("NAMESPACE")

    def _options(self) -> dict[str, Any]:
        return {"fail": self.config().get("FAIL", "open")}

    def sync_client(self) -> redkit.sync.Redkit:
        """The process's sync client (made on first use), shared with the tier middleware."""
        with self._lock:
            if self._sync is None:
                self._sync = redkit.sync.connect(*self._connect_args())
            return self._sync

    async def async_client(self) -> redkit.Redkit:
        """The running event loop's client (made on first use in that loop)."""
        loop = asyncio.get_running_loop()
        entry = self._async.get(loop)
        if entry is None:
            rk = await redkit.connect(*self._connect_args())
            entry = self._async.get(loop)
            if entry is not None:  # another task of this loop connected first
                await rk.close()
            else:
                for old in [lp for lp in self._async if lp.is_closed()]:
                    del self._async[old]
                entry = self._async[loop] = (rk, {})
        return entry[0]

    def sync(self, shape: tuple[int, float, str]) -> redkit.sync.RateLimiter:
        client = self.sync_client()
        with self._lock:
            limiter = self._sync_limiters.get(shape)
            if limiter is None:
                if len(self._sync_limiters) >= _MAX_LIMITERS:
                    self._sync_limiters.clear()
                limiter = client.rate_limiter(*shape, **self._options())
                self._sync_limiters[shape] = limiter
            return limiter

    async def aio(self, shape: tuple[int, float, str]) -> redkit.RateLimiter:
        rk = await self.async_client()
        limiters = self._async[asyncio.get_running_loop()][1]
        limiter = limiters.get(shape)
        if limiter is None:
            if len(limiters) >= _MAX_LIMITERS:
                limiters.clear()
            limiter = limiters[shape] = rk.rate_limiter(*shape, **self._options())
        return limiter

    def reset(self) -> None:
        with self._lock:
            old, self._sync = self._sync, None
            self._sync_limiters = {}
            self._async = {}
        if old is not None:
            old.close()

    async def aclose(self) -> None:
        """Close the running loop's client (at shutdown, or in tests)."""
        entry = self._async.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[0].close()


_limiters = _Limiters()


def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "REDKIT_RATELIMIT":
        _limiters.reset()


setting_changed.connect(_reset)


def parse_rate(rate: Any) -> tuple[int, float] | None:
    """``(limit, window seconds)`` of ``"N/m"``, ``"N/10m"`` or ``(N, seconds)``; None: none."""
    if rate is None:
        return None
    if isinstance(rate, tuple) and len(rate) == 2:
        return int(rate[0]), float(rate[1])
    match = _RATE.match(rate) if isinstance(rate, str) else None
    if match is None:
        raise ConfigurationError(f"a rate is 'N/s', 'N/m', 'N/h', 'N/d' or 'N/10m', got {rate!r}")
    count, multiple, unit = match.groups()
    return int(count), int(multiple or 1) * _UNITS[unit]


def _ip(request: HttpRequest) -> str:
    text = request.META.get("REMOTE_ADDR") or ""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ConfigurationError(
            "REMOTE_ADDR is not an IP address: behind a proxy, set it from the proxy's header "
            "in a middleware you trust, or use key='header:...'"
        ) from None
    if address.version == 6:
        mask = int(_limiters.config().get("IPV6_MASK", 64))
        return str(ipaddress.ip_network(f"{address}/{mask}", strict=False).network_address)
    return str(address)


def _user(request: HttpRequest) -> str | None:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return None


def _key_function(key: Any) -> Callable[[str, HttpRequest], str]:
    if callable(key):
        return key  # type: ignore[no-any-return]
    if not isinstance(key, str) or not key:
        raise ConfigurationError(f"ratelimit needs a key ('ip', 'user', ...), got {key!r}")
    if key == "ip":
        return lambda group, request: "ip:" + _ip(request)
    if key == "user":
        # As django-ratelimit: every anonymous request shares one bucket (use user_or_ip).
        return lambda group, request: _user(request) or "anonymous"
    if key == "user_or_ip":
        return lambda group, request: _user(request) or "ip:" + _ip(request)
    kind, _, name = key.partition(":")
    if kind == "header" and name:
        meta = "HTTP_" + name.upper().replace("-", "_")
        return lambda group, request: "h:" + str(request.META.get(meta, ""))
    if kind == "get" and name:
        return lambda group, request: "g:" + str(request.GET.get(name, ""))
    if kind == "post" and name:
        return lambda group, request: "p:" + str(request.POST.get(name, ""))
    if "." in key:
        function: Callable[[str, HttpRequest], str] = import_string(key)
        return function
    raise ConfigurationError(f"unknown ratelimit key {key!r}")


def ratelimit(
    group: str | None = None,
    key: Any = None,
    rate: Any = None,
    method: str | Sequence[str] | None = ALL,
    block: bool = True,
    *,
    algorithm: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Limit a view (sync or async) as django-ratelimit's ``@ratelimit`` does (module docs)."""
    key_of = _key_function(key)
    if not callable(rate):
        parse_rate(rate)  # a bad rate is reported at import, not on a request
    methods = None if method is ALL else {method} if isinstance(method, str) else set(method)

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        name = group or f"{view.__module__}.{view.__qualname__}"

        def plan(request: HttpRequest) -> tuple[tuple[int, float, str], str] | None:
            if methods is not None and request.method not in methods:
                return None
            limit = parse_rate(rate(name, request) if callable(rate) else rate)
            if limit is None:
                return None
            shape = (*limit, algorithm or _limiters.config().get("ALGORITHM", "sliding_window"))
            value = key_of(name, request)
            if not isinstance(value, str):
                raise InvalidInput(f"a ratelimit key function must return a str, got {value!r}")
            # Hashed: the value may be attacker-written (a header) and of any length.
            digest = hashlib.blake2b(
                "\0".join((name, value, f"{shape[0]}/{shape[1]:g}")).encode(), digest_size=16
            ).hexdigest()
            return shape, "django:" + digest

        def after(request: HttpRequest, decision: Decision | None) -> None:
            record_decision(request, decision)
            limited = decision is not None and not decision.allowed
            request.limited = getattr(request, "limited", False) or limited
            if limited and block:
                assert decision is not None
                raise Ratelimited(decision)

        def headers(response: Any, decision: Decision | None) -> Any:
            if decision is not None and isinstance(response, HttpResponse):
                for field, value in ietf_headers(decision):
                    response.headers.setdefault(field, value)
            return response

        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                planned = plan(request)
                decision = None
                if planned is not None:
                    limiter = await _limiters.aio(planned[0])
                    decision = await limiter.hit(planned[1])
                after(request, decision)
                return headers(await view(request, *args, **kwargs), decision)

            return async_wrapper

        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            planned = plan(request)
            decision = None
            if planned is not None:
                decision = _limiters.sync(planned[0]).hit(planned[1])
            after(request, decision)
            return headers(view(request, *args, **kwargs), decision)

        return wrapper

    return decorate


DECISION_ATTRIBUTE: Final = "_redkit_rate_limit"
"""Where a request keeps its most restrictive decision so far (the decorator's, for the tier
middleware's headers): one set of ``RateLimit`` headers describes one decision."""


def record_decision(request: HttpRequest, decision: Decision | None) -> None:
    """Keep ``decision`` on ``request`` if it binds more than the one kept so far."""
    if decision is None:
        return
    kept = getattr(request, DECISION_ATTRIBUTE, None)
    setattr(
        request,
        DECISION_ATTRIBUTE,
        decision if kept is None else most_restrictive(kept, decision),
    )


def _rejection(decision: Decision) -> JsonResponse:
    response = JsonResponse(rejection_body(decision), status=429)
    for field, value in [*ietf_headers(decision), *legacy_headers(decision)]:
        response.headers[field] = value
    field, value = retry_after_header(decision)
    response.headers[field] = value
    return response


@sync_and_async_middleware  # type: ignore[untyped-decorator]  # Django ships no type hints
def RatelimitMiddleware(get_response: Callable[..., Any]) -> Callable[..., Any]:
    """Answer :class:`Ratelimited` with a 429 (JSON body, ``Retry-After``, ``RateLimit``);
    Django calls its ``process_exception`` for what a view raises, sync or async.

    Add ``"redkit.django.ratelimit.RatelimitMiddleware"`` to ``MIDDLEWARE``.
    """
    if inspect.iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> Any:
            return await get_response(request)

        async_middleware.process_exception = _process_exception  # type: ignore[attr-defined]
        return async_middleware

    def middleware(request: HttpRequest) -> Any:
        return get_response(request)

    middleware.process_exception = _process_exception  # type: ignore[attr-defined]
    return middleware


def _process_exception(request: HttpRequest, exception: Exception) -> HttpResponse | None:
    if isinstance(exception, Ratelimited):
        return _rejection(exception.decision)
    return None
