"""What :class:`~redkit.web.RedkitWeb` installs, checked when it is built.

Every option is checked here, before the application serves anything: a bad value raises
:class:`~redkit.errors.ConfigurationError` with redkit's message where the configuration is
written (usually at import, so ``uvicorn myapp:app`` stops at once and says why). What can
only be checked against a server (the connection itself) fails the app's start-up instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from redkit.codec import seconds
from redkit.errors import ConfigurationError, InvalidInput
from redkit.ratelimit.limiter import Algorithm
from redkit.ratelimit.policy import DEFAULT_TIERS, Identity, TrustedProxies
from redkit.sessions.middleware import check_cookie_options

if TYPE_CHECKING:
    from redkit.cache.middleware import CacheRule
    from redkit.sessions.store import Session

__all__ = ["CacheConfig", "RateLimitConfig", "SessionConfig"]

Identify = Callable[[Mapping[str, Any]], "Awaitable[Identity | None] | Identity | None"]


def _config_error(exc: InvalidInput) -> ConfigurationError:
    return exc if isinstance(exc, ConfigurationError) else ConfigurationError(str(exc))


@dataclass(frozen=True, kw_only=True)
class SessionConfig:
    """The session store and its cookie (see :class:`redkit.sessions.SessionStore` and
    :class:`redkit.sessions.middleware.SessionMiddleware`).

    ``secure=None`` (the default) marks the cookie ``Secure`` on every HTTPS request and on
    every request to a host that is not this machine (``localhost``, ``127.0.0.1``, ``::1``,
    Starlette's ``testserver``): a local plain-HTTP run keeps its cookie, a deployment never
    sends it in the clear. ``signing_key`` (at least 32 bytes) signs the cookie with
    HMAC-SHA256, so a forged cookie is refused without a round trip.
    """

    idle_ttl: float | timedelta = timedelta(days=7)
    absolute_ttl: float | timedelta = timedelta(days=30)
    max_per_user: int | None = None
    touch_every: float | timedelta | None = None
    cookie_name: str = "session"
    secure: bool | None = None
    same_site: Literal["lax", "strict", "none"] = "lax"
    path: str = "/"
    domain: str | None = None
    max_age: float | timedelta | None = None
    signing_key: str | bytes | None = field(default=None, repr=False)
    cookies: bool = True
    bearer: bool = True
    store_options: Mapping[str, Any] = field(default_factory=dict)
    """Further options of ``rk.sessions(...)`` (``max_bytes``, ``permission_ttl``)."""

    def __post_init__(self) -> None:
        try:
            check_cookie_options(
                cookie_name=self.cookie_name,
                secure=self.secure,
                same_site=self.same_site,
                signing_key=self.signing_key,
                cookies=self.cookies,
                bearer=self.bearer,
            )
            idle = seconds(self.idle_ttl, "idle_ttl")
            absolute = seconds(self.absolute_ttl, "absolute_ttl")
            if (
                self.touch_every is not None
                and seconds(self.touch_every, "touch_every", allow_zero=True) >= idle
            ):
                raise InvalidInput("touch_every must be shorter than idle_ttl")
            if self.max_age is not None:
                seconds(self.max_age, "max_age")
        except InvalidInput as exc:
            raise _config_error(exc) from None
        if idle > absolute:
            raise ConfigurationError(
                f"idle_ttl ({idle:g}s) is longer than absolute_ttl ({absolute:g}s): a session "
                "always ends at absolute_ttl, so the idle timeout would never apply"
            )
        if self.max_per_user is not None and (
            isinstance(self.max_per_user, bool)
            or not isinstance(self.max_per_user, int)
            or self.max_per_user < 1
        ):
            raise ConfigurationError(f"max_per_user must be an int >= 1, got {self.max_per_user!r}")

    def middleware_options(self) -> dict[str, Any]:
        return {
            "cookie_name": self.cookie_name,
            "secure": self.secure,
            "same_site": self.same_site,
            "path": self.path,
            "domain": self.domain,
            "max_age": self.max_age,
            "signing_key": self.signing_key,
            "cookies": self.cookies,
            "bearer": self.bearer,
        }


@dataclass(frozen=True, kw_only=True)
class RateLimitConfig:
    """Rate limits by tier on every request (:class:`~redkit.ratelimit.policy.TierPolicy`).

    By default a caller with a session is in tier ``session.data["tier"]`` (``"user"`` when
    the session names none) and limited by user ID; a caller without one is ``anonymous``
    and limited by client IP. ``identify(scope) -> Identity | None`` replaces that
    (API keys, say). ``trusted_proxies``: addresses whose ``X-Forwarded-For`` is believed
    (nobody's by default). ``exempt``: path prefixes never limited (health checks).
    ``limiter_options``: ``fail`` (``"open"`` by default), ``timeout``, ...
    """

    tiers: Mapping[str, Sequence[tuple[int, float | timedelta]]] = field(
        default_factory=lambda: dict(DEFAULT_TIERS)
    )
    identify: Identify | None = None
    tier_of: Callable[[Session], str | None] | None = None
    """For the default (session) identity: the tier of a session; None means ``user_tier``."""
    user_tier: str = "user"
    anonymous_tier: str = "anonymous"
    algorithm: Algorithm | str = Algorithm.SLIDING_WINDOW
    trusted_proxies: Sequence[str] = ()
    legacy_headers: bool = False
    exempt: Sequence[str] = ()
    limiter_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.tiers, Mapping) or not self.tiers:
            raise ConfigurationError("tiers must map tier names to (limit, window) pairs")
        for tier, pairs in self.tiers.items():
            if not pairs:
                raise ConfigurationError(f"tier {tier!r} has no limits")
            for pair in pairs:
                if not isinstance(pair, tuple | list) or len(pair) != 2:
                    raise ConfigurationError(
                        f"tier {tier!r}: each limit is a (limit, window seconds) pair, got {pair!r}"
                    )
                limit, window = pair
                if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                    raise ConfigurationError(f"tier {tier!r}: limit must be an int >= 1")
                try:
                    seconds(window, f"tier {tier!r} window")
                except InvalidInput as exc:
                    raise _config_error(exc) from None
        for needed in (self.anonymous_tier, *(() if self.identify else (self.user_tier,))):
            if needed not in self.tiers:
                raise ConfigurationError(
                    f"the tier table has no {needed!r} tier (tiers: {', '.join(self.tiers)})"
                )
        try:
            Algorithm(self.algorithm)
        except ValueError:
            known = ", ".join(a.value for a in Algorithm)
            raise ConfigurationError(
                f"unknown algorithm {self.algorithm!r}; use one of {known}"
            ) from None
        try:
            TrustedProxies(self.trusted_proxies)
        except InvalidInput as exc:
            raise _config_error(exc) from None
        if isinstance(self.exempt, str) or any(
            not isinstance(p, str) or not p.startswith("/") for p in self.exempt
        ):
            raise ConfigurationError("exempt is a list of path prefixes starting with '/'")


@dataclass(frozen=True, kw_only=True)
class CacheConfig:
    """The application's cache: HTTP responses by ``rules`` (see
    :class:`redkit.cache.middleware.CacheMiddleware`), and values through
    :meth:`RedkitWeb.cached <redkit.web.RedkitWeb.cached>` and the ``CacheDep`` dependency.
    Both live in one :class:`~redkit.cache.Cache`, so ``await cache.invalidate("products")``
    drops the pages and the values of that tag together.

    A request with a session (its cookie or ``Authorization``) never gets a page cached for
    someone else: a rule keys it per user (``per_user=True``) or declares the page the same
    for everyone (``shared=True``), otherwise the request bypasses the cache.
    ``credential_headers`` / ``credential_cookies`` name further request parts that identify
    a user (``["X-Api-Key"]``); ``allowed_hosts`` the host names whose pages may be cached.
    ``options``: further options of ``rk.cache(...)`` (``stale_while_revalidate``,
    ``fail_open``, ...).
    """

    rules: Sequence[CacheRule] = ()
    name: str = "default"
    default_ttl: float | timedelta = 300
    allowed_hosts: Sequence[str] | None = None
    credential_headers: Sequence[str] = ()
    credential_cookies: Sequence[str] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from redkit.cache.middleware import CacheRule

        if isinstance(self.rules, CacheRule) or any(
            not isinstance(r, CacheRule) for r in self.rules
        ):
            raise ConfigurationError("rules is a list of redkit.cache.middleware.CacheRule")
        for what, names in (
            ("credential_headers", self.credential_headers),
            ("credential_cookies", self.credential_cookies),
            ("allowed_hosts", self.allowed_hosts or ()),
        ):
            if isinstance(names, str) or any(not isinstance(n, str) or not n for n in names):
                raise ConfigurationError(f"{what} must be a list of names, got {names!r}")
        try:
            seconds(self.default_ttl, "default_ttl")
        except InvalidInput as exc:
            raise _config_error(exc) from None
