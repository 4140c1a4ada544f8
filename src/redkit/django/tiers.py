"""Rate limits by tier on every request: a Django middleware, sync and async.

::

    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "redkit.django.tiers.TieredRateLimitMiddleware",      # after the user is known
        ...,
    ]
    REDKIT_RATELIMIT = {"LOCATION": "redis://127.0.0.1:6379/0"}   # the server (as @ratelimit)
    REDKIT_RATELIMIT_TIERS = {                                    # all optional
        "TIERS": {"anonymous": ["10/m"], "user": ["100/m"], "premium": ["1000/m"],
                  "admin": ["10000/m"]},
        "TIER_OF": "myproject.limits.tier_of",     # (user) -> tier name, or None: "user"
        "TRUSTED_PROXIES": ["10.0.0.0/8"],         # whose X-Forwarded-For is believed
        "EXEMPT": ["/healthz"],
    }

The tiers are redkit's (:class:`~redkit.ratelimit.policy.TierPolicy`, the same table, the
same limiter names and keys as the ASGI middleware): an anonymous
caller is limited by client IP (``ip:203.0.113.5``, an IPv6 caller by its /64), a signed-in
user by user ID (``user:42``) in the tier ``TIER_OF(user)`` names, by default ``admin`` for
staff users and ``user`` for everyone else. A tier may hold several limits, checked all or
nothing (``["10/s", "1000/h"]``); a limit is ``"N/s|m|h|d"`` (``"N/10m"``) or a
``(limit, window seconds)`` pair, as :data:`~redkit.ratelimit.policy.DEFAULT_TIERS` (the
default table) writes them.

Every check is one script on the server, with the server's clock. An allowed response gets
``RateLimit-Policy`` and ``RateLimit`` (``LEGACY_HEADERS: True`` adds ``X-RateLimit-*``); a
refused request gets ``429`` with ``Retry-After``, those headers and a JSON body
(:func:`~redkit.ratelimit.headers.rejection_body`), and the view does not run. A view's own
``@ratelimit`` still applies: its :class:`~redkit.django.ratelimit.Ratelimited` is answered
here with the same 429, and the headers describe the more restrictive of the two decisions.

The client IP is ``REMOTE_ADDR``: ``X-Forwarded-For`` is written by the client, so it is read
only when ``REMOTE_ADDR`` is one of ``TRUSTED_PROXIES`` (then right to left, past the trusted
hops; :mod:`redkit.ratelimit.address`). An async request (ASGI) runs the check on redkit's
async client, in the event loop, with no thread hop; a sync one on the sync client.

Settings of ``REDKIT_RATELIMIT_TIERS`` (all optional): ``TIERS``; ``TIER_OF`` (a callable or
its dotted path; ``async def`` too; a plain function runs in a thread on the async path,
since it may query the database); ``IDENTIFY`` (``(request) -> Identity | None``, replacing
the user-based identity: API keys, say); ``ANONYMOUS_TIER`` (``"anonymous"``),
``USER_TIER`` (``"user"``); ``ALGORITHM`` (``sliding_window``); ``TRUSTED_PROXIES``;
``IPV6_PREFIX`` (64); ``EXEMPT`` (paths never limited, with what is below them);
``LEGACY_HEADERS``;
``FAIL`` (``"open"``: requests go through while Redis is unreachable; ``"closed"``: 429;
``"raise"``: 503). The server and namespace are ``REDKIT_RATELIMIT``'s ``LOCATION`` and
``NAMESPACE``, so the decorator and the middleware share one client. A bad setting raises
:class:`~redkit.errors.ConfigurationError` when Django loads the middleware.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils.module_loading import import_string

import redkit
import redkit.sync
from redkit.codec import seconds
from redkit.django.ratelimit import (
    DECISION_ATTRIBUTE,
    Ratelimited,
    _limiters,
    _rejection,
    parse_rate,
)
from redkit.errors import ConfigurationError, ConnectionLost, InvalidInput
from redkit.ratelimit.address import ClientIP
from redkit.ratelimit.headers import (
    ietf_headers,
    legacy_headers,
    most_restrictive,
    rejection_body,
    retry_after_header,
)
from redkit.ratelimit.limiter import Algorithm, Decision
from redkit.ratelimit.policy import DEFAULT_TIERS, Identity, tier_rules

__all__ = ["TieredRateLimitMiddleware", "staff_tier"]

log = logging.getLogger("redkit.ratelimit")

_KEYS: Final = frozenset(
    {
        "TIERS",
        "TIER_OF",
        "IDENTIFY",
        "ANONYMOUS_TIER",
        "USER_TIER",
        "ALGORITHM",
        "TRUSTED_PROXIES",
        "IPV6_PREFIX",
        "EXEMPT",
        "LEGACY_HEADERS",
        "FAIL",
    }
)
_AUTH_MIDDLEWARE: Final = "django.contrib.auth.middleware.AuthenticationMiddleware"
_MAX_LIMIT: Final = 10**12

Limits = Any  # a RateLimiter or RateLimits, of the sync API or the async one


def staff_tier(user: Any) -> str | None:
    """The default ``TIER_OF``: ``"admin"`` for a staff user, else None (the user tier)."""
    return "admin" if getattr(user, "is_staff", False) else None


def _callable(value: Any, name: str) -> Callable[..., Any] | None:
    if value is None or callable(value):
        found: Callable[..., Any] | None = value
        return found
    if isinstance(value, str) and "." in value:
        function: Callable[..., Any] = import_string(value)
        return function
    raise ConfigurationError(f"REDKIT_RATELIMIT_TIERS {name} must be a callable or its dotted path")


def _table(tiers: Any) -> dict[str, list[tuple[int, float]]]:
    """The tier table as (limit, window seconds) pairs, checked."""
    if not isinstance(tiers, Mapping) or not tiers:
        raise ConfigurationError("REDKIT_RATELIMIT_TIERS TIERS must map tier names to limits")
    table: dict[str, list[tuple[int, float]]] = {}
    for tier, rates in tiers.items():
        if not isinstance(tier, str) or not tier:
            raise ConfigurationError(f"a tier name must be a non-empty string, got {tier!r}")
        if isinstance(rates, str | tuple):
            rates = [rates]
        pairs = []
        for rate in rates or ():
            if isinstance(rate, list) and len(rate) == 2:
                rate = tuple(rate)
            parsed = parse_rate(rate)
            if parsed is None:
                raise ConfigurationError(f"tier {tier!r}: a limit cannot be None")
            limit, window = parsed
            if not 1 <= limit <= _MAX_LIMIT or not 0.001 <= window <= 366 * 86400:
                raise ConfigurationError(
                    f"tier {tier!r}: {rate!r} is out of range (1 to 10**12 per 1 ms to 366 days)"
                )
            pairs.append((limit, window))
        if not pairs:
            raise ConfigurationError(f"tier {tier!r} has no limits")
        table[tier] = pairs
    return table


class TieredRateLimitMiddleware:
    """Limit every request by its caller's tier (module docs); ``sync_capable`` and
    ``async_capable``, so Django runs it natively under WSGI and ASGI alike."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        config = dict(getattr(settings, "REDKIT_RATELIMIT_TIERS", None) or {})
        unknown = sorted(set(config) - _KEYS)
        if unknown:
            raise ConfigurationError(
                f"REDKIT_RATELIMIT_TIERS does not know {', '.join(unknown)}; "
                f"it accepts {', '.join(sorted(_KEYS))}"
            )
        self.table = _table(config.get("TIERS", DEFAULT_TIERS))
        self.anonymous_tier = config.get("ANONYMOUS_TIER", "anonymous")
        self.user_tier = config.get("USER_TIER", "user")
        self.identify = _callable(config.get("IDENTIFY"), "IDENTIFY")
        self.tier_of = _callable(config.get("TIER_OF", staff_tier), "TIER_OF")
        for needed in (self.anonymous_tier, *(() if self.identify else (self.user_tier,))):
            if needed not in self.table:
                raise ConfigurationError(
                    f"REDKIT_RATELIMIT_TIERS has no {needed!r} tier "
                    f"(tiers: {', '.join(self.table)})"
                )
        try:
            self.algorithm = Algorithm(config.get("ALGORITHM", Algorithm.SLIDING_WINDOW))
        except ValueError:
            known = ", ".join(a.value for a in Algorithm)
            raise ConfigurationError(
                f"unknown ALGORITHM {config.get('ALGORITHM')!r}; use one of {known}"
            ) from None
        try:
            self.client_ip = ClientIP(
                config.get("TRUSTED_PROXIES", ()), ipv6_prefix=config.get("IPV6_PREFIX", 64)
            )
        except InvalidInput as exc:
            raise ConfigurationError(str(exc)) from None
        exempt = config.get("EXEMPT", ())
        if isinstance(exempt, str) or not all(
            isinstance(p, str) and p.startswith("/") for p in exempt
        ):
            raise ConfigurationError("EXEMPT must be a list of path prefixes such as '/healthz'")
        # Whole segments: "/healthz" exempts "/healthz" and "/healthz/...", not "/healthzzz".
        self.exempt = tuple(p.rstrip("/") for p in exempt)
        self.legacy = bool(config.get("LEGACY_HEADERS", False))
        self.fail = config.get("FAIL", "open")
        if self.fail not in ("open", "closed", "raise"):
            raise ConfigurationError(f"FAIL must be 'open', 'closed' or 'raise', got {self.fail!r}")
        if self.identify is None:
            _check_order()
        # The limiters of each client: the sync one, and one set per event loop (bounded:
        # closed loops are dropped when a loop is added).
        self._sync_limits: tuple[redkit.sync.Redkit, dict[str, Limits]] | None = None
        self._async_limits: dict[
            asyncio.AbstractEventLoop, tuple[redkit.Redkit, dict[str, Limits]]
        ] = {}

    def __repr__(self) -> str:
        return f"<TieredRateLimitMiddleware tiers={list(self.table)}>"

    # -- the limiters -------------------------------------------------------------------------

    def _build(self, rk: Any) -> dict[str, Limits]:
        """The tier table's limiters on ``rk``, the sync client or an async one (the two have
        the same ``rate_limiter`` / ``rate_limits``)."""
        limits: dict[str, Limits] = {}
        for tier, rules in tier_rules(self.table).items():
            limiters = [
                rk.rate_limiter(limit, window, self.algorithm, name=name, fail=self.fail)
                for limit, window, name in rules
            ]
            limits[tier] = limiters[0] if len(limiters) == 1 else rk.rate_limits(limiters)
        return limits

    def _sync_table(self) -> dict[str, Limits]:
        rk = _limiters.sync_client()
        built = self._sync_limits
        if built is None or built[0] is not rk:  # REDKIT_RATELIMIT changed: a new client
            built = self._sync_limits = (rk, self._build(rk))
        return built[1]

    async def _async_table(self) -> dict[str, Limits]:
        rk = await _limiters.async_client()
        loop = asyncio.get_running_loop()
        built = self._async_limits.get(loop)
        if built is None or built[0] is not rk:
            for old in [lp for lp in self._async_limits if lp.is_closed()]:
                del self._async_limits[old]
            built = self._async_limits[loop] = (rk, self._build(rk))
        return built[1]

    # -- who is calling -----------------------------------------------------------------------

    def _scope(self, request: HttpRequest) -> dict[str, Any]:
        """The parts of an ASGI scope that :mod:`redkit.ratelimit.address` reads."""
        peer = request.META.get("REMOTE_ADDR")
        headers = []
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
        if forwarded:  # believed only from a trusted proxy: ClientIP decides
            headers.append((b"x-forwarded-for", str(forwarded).encode("latin-1", "replace")))
        return {"type": "http", "client": (peer, 0) if peer else None, "headers": headers}

    def _key(self, identity: Identity | None, request: HttpRequest) -> tuple[str, str]:
        """(tier, key) of the caller."""
        if identity is None:
            return self.anonymous_tier, self.client_ip.key(self._scope(request))
        if not isinstance(identity, Identity):
            raise ConfigurationError(f"IDENTIFY must return an Identity or None, got {identity!r}")
        if identity.tier not in self.table:
            # The app's TIER_OF or IDENTIFY named a tier the table lacks: a server bug.
            raise ConfigurationError(
                f"unknown tier {identity.tier!r}; known: {', '.join(self.table)}"
            )
        return identity.tier, f"{identity.tier}:{identity.id}"

    def _user_identity(self, user: Any, tier: str | None) -> Identity:
        return Identity(tier or self.user_tier, str(user.pk))

    def _identity(self, request: HttpRequest) -> Identity | None:
        if self.identify is not None:
            found: Identity | None = self.identify(request)
            return found
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        tier = self.tier_of(user) if self.tier_of is not None else None
        return self._user_identity(user, tier)

    async def _aidentity(self, request: HttpRequest) -> Identity | None:
        if self.identify is not None:
            found: Identity | None = await _call(self.identify, request)
            return found
        auser = getattr(request, "auser", None)
        if auser is None:
            return None
        user = await auser()
        if not user.is_authenticated:
            return None
        tier = None
        if self.tier_of is staff_tier:
            tier = staff_tier(user)  # attributes only: no thread hop
        elif self.tier_of is not None:
            tier = await _call(self.tier_of, user)
        return self._user_identity(user, tier)

    # -- the request --------------------------------------------------------------------------

    def _exempt(self, request: HttpRequest) -> bool:
        path = request.path_info
        # Django leaves "/healthz/../admin" as it is, and a view may still answer it.
        if not self.exempt or any(part in (".", "..") for part in path.split("/")):
            return False
        return any(path == base or path.startswith(base + "/") for base in self.exempt)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        if self._exempt(request):
            return self.get_response(request)
        tier, key = self._key(self._identity(request), request)
        try:
            try:
                table = self._sync_table()
            except ConnectionLost as exc:
                outcome = self._unreachable(tier, exc)
            else:
                outcome = table[tier].hit(key)
        except (InvalidInput, ConnectionLost) as exc:
            return _refusal(exc)
        if outcome is None:
            return self.get_response(request)
        if not outcome.allowed:
            return self._rejection(outcome)
        return self._with_headers(request, self.get_response(request), outcome)

    async def __acall__(self, request: HttpRequest) -> Any:
        if self._exempt(request):
            return await self.get_response(request)
        tier, key = self._key(await self._aidentity(request), request)
        try:
            try:
                table = await self._async_table()
            except ConnectionLost as exc:
                outcome = self._unreachable(tier, exc)
            else:
                outcome = await table[tier].hit(key)
        except (InvalidInput, ConnectionLost) as exc:
            return _refusal(exc)
        if outcome is None:
            return await self.get_response(request)
        if not outcome.allowed:
            return self._rejection(outcome)
        return self._with_headers(request, await self.get_response(request), outcome)

    def _unreachable(self, tier: str, error: ConnectionLost) -> Decision | None:
        """No client (Redis unreachable when it was made): ``FAIL`` answers, as a limiter's
        fail policy does once it exists. None lets the request through ("open")."""
        if self.fail == "raise":
            raise error
        log.warning("rate limiting: Redis unreachable (FAIL %r): %s", self.fail, error)
        if self.fail == "open":
            return None
        limit, window, name = tier_rules({tier: self.table[tier]})[tier][0]
        return Decision(
            allowed=False,
            limit=limit,
            remaining=0,
            reset_after=0.0,
            retry_after=2.0,
            policy=name,
            window=seconds(window),
            degraded=True,
        )

    def process_exception(self, request: HttpRequest, exception: Exception) -> Any:
        """A view's ``@ratelimit`` over its limit: the same 429 as a tier's."""
        if isinstance(exception, Ratelimited):
            return _rejection(exception.decision)
        return None

    def _headers(self, decision: Decision) -> list[tuple[str, str]]:
        headers = ietf_headers(decision)
        if self.legacy:
            headers += legacy_headers(decision)
        return headers

    def _rejection(self, decision: Decision) -> JsonResponse:
        response = JsonResponse(rejection_body(decision), status=429)
        for field, value in [retry_after_header(decision), *self._headers(decision)]:
            response.headers[field] = value
        return response

    def _with_headers(self, request: HttpRequest, response: Any, decision: Decision) -> Any:
        """One set of rate-limit headers, for the most restrictive decision of the request
        (a view's ``@ratelimit`` may have made one too)."""
        if not isinstance(response, HttpResponse | StreamingHttpResponse):
            return response
        kept = getattr(request, DECISION_ATTRIBUTE, None)
        final = decision if kept is None else most_restrictive(decision, kept)
        for field, value in self._headers(final):
            response.headers[field] = value
        return response


async def _call(function: Callable[..., Any], argument: Any) -> Any:
    """``function(argument)``: awaited if async, else in a thread (it may touch the
    database, which Django forbids in the event loop)."""
    if inspect.iscoroutinefunction(function):
        return await function(argument)
    return await sync_to_async(function)(argument)


def _refusal(error: InvalidInput | ConnectionLost) -> JsonResponse:
    if isinstance(error, InvalidInput):
        # An attacker-written value the limiter refuses (an identity past the key limit).
        log.info("rate limiting refused a request: %s", error)
        return JsonResponse({"error": "invalid_request", "message": str(error)}, status=400)
    # FAIL "raise": the limiter could not reach Redis.
    log.warning("rate limiting: Redis unreachable; answering 503: %s", error)
    response = JsonResponse(
        {
            "error": "unavailable",
            "message": "the service cannot reach its data store; try again shortly",
        },
        status=503,
    )
    response.headers["Retry-After"] = "2"
    return response


def _check_order() -> None:
    """The user is known only after AuthenticationMiddleware: placed before it, every
    signed-in user would be limited as anonymous. Said at start-up, not found in production."""
    names = [str(entry) for entry in getattr(settings, "MIDDLEWARE", ())]
    ours = [i for i, name in enumerate(names) if name.endswith(".TieredRateLimitMiddleware")]
    if _AUTH_MIDDLEWARE in names and ours and ours[0] < names.index(_AUTH_MIDDLEWARE):
        raise ConfigurationError(
            "TieredRateLimitMiddleware must come after AuthenticationMiddleware in MIDDLEWARE, "
            "or it cannot see who is signed in"
        )
