"""HTTP response caching as pure ASGI middleware, on a :class:`~redkit.cache.Cache`.

::

    from redkit.cache.middleware import CacheMiddleware, CacheRule

    app.add_middleware(
        CacheMiddleware,
        cache=rk.cache(name="http"),
        rules=[
            CacheRule("/users/{user_id}", ttl=1800, tags=["user:{user_id}"], per_user=True),
            CacheRule("/projects", ttl=600, tags=["projects"], vary=["accept-language"]),
            CacheRule("/docs/*", ttl=3600, shared=True),   # the same page for everyone
        ],
        allowed_hosts=["example.com", "*.example.com"],
        credential_headers=["X-Api-Key"],   # besides Authorization and the session cookie
    )
    ...
    await cache.invalidate("user:42")        # after a write

What is cached, and what never is:

* Only ``GET`` requests matching a rule, and only ``200`` responses sent in one body message:
  a streaming response (several body messages) passes through uncached.
* Never a response with ``Set-Cookie``, ``Cache-Control: private | no-store | no-cache``,
  ``Vary: *`` or a ``Vary`` on a header the rule does not key on; a response's own freshness
  (``s-maxage``, ``max-age``, ``Expires``) shortens the rule's ``ttl``, ``max-age=0`` is not
  stored, and ``must-revalidate`` leaves no stale window.
* A request with credentials (``Authorization``, the session cookie that
  :class:`~redkit.sessions.middleware.SessionMiddleware` names, ``session``/``sessionid``, and
  the declared ``credential_headers``/``credential_cookies``) bypasses the cache unless its
  rule is ``per_user`` or ``shared``. ``per_user``: the entry is keyed by the credentials (by
  default; or by what ``per_user(scope)`` returns), and with a redkit session it is served
  only while that session lives, whatever the middleware order (:func:`resolve_session
  <redkit.sessions.middleware.resolve_session>`), and stored no longer than the session's
  expiry. ``shared``: the request is answered from the entry anonymous requests made, and
  what it is sent itself is never stored.
  ``session_tags`` tags a per-user entry from its session (``user:<id>``), so one
  ``invalidate`` reaches that user's entries in all their sessions.
* A request whose ``Host`` is not in ``allowed_hosts`` (when given) bypasses the cache.
* A request with ``Cache-Control: no-cache`` skips the lookup and refreshes the entry;
  ``no-store`` bypasses the cache.

The key is the method, the scheme, the ``Host`` and the forwarding headers (``Forwarded``,
``X-Forwarded-Host``, ...: a page made for one origin is never served to another), the root
path and the path, the query with its parameters sorted by name (a name's values keep their
order: ``a=1&a=2`` is not ``a=2&a=1``), the values of the rule's ``vary`` headers, and the
user. Responses carry a strong ``ETag`` (the application's, or a BLAKE2b hash of the body: the
same in every process), ``X-Cache: HIT | MISS | STALE | BYPASS`` (a bypass logs its reason at
``DEBUG`` on the ``redkit.cache`` logger) and, when served from the cache, ``Age``.
``If-None-Match`` gets ``304 Not Modified``. ``HEAD`` is answered from the ``GET`` entry. A
miss takes the cache's single-flight lock: concurrent misses on one URL (in any process) wait
for the first instead of all running the endpoint; XFetch and ``stale_while_revalidate``
refresh in the background with a copy of the request.

What this does not know: a credential it is not told about (declare it), an endpoint that
reads request headers other than the rule's ``vary`` (add them to ``vary``), and the liveness
of credentials other than redkit sessions (their per-user entries live for the rule's ``ttl``:
invalidate them by tag when the credential is withdrawn).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote_plus

import orjson
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from redkit.cache import metrics
from redkit.cache.core import (
    HIT,
    HIT_REFRESH,
    KIND_RESPONSE,
    MISS_LOCKED,
    STALE,
    STALE_REFRESH,
    WAIT,
    Cache,
    EntryKeys,
    Lookup,
    Policy,
    _tag_list,
    pack,
    unpack,
)
from redkit.errors import ConnectionLost, InvalidInput
from redkit.hosts import AllowedHosts
from redkit.sessions.middleware import SessionMiddleware, find_session_middleware
from redkit.sessions.store import Session

__all__ = ["CacheMiddleware", "CacheRule"]

log = logging.getLogger("redkit.cache")

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")
# Not stored: per-connection headers, and the ones this middleware writes itself.
_SKIP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "trailer",
        "te",
        "date",
        "age",
        "x-cache",
        "set-cookie",
    }
)
_NOT_MODIFIED_HEADERS = frozenset(
    {b"etag", b"cache-control", b"vary", b"expires", b"content-location", b"last-modified"}
)
# Cookies that carry a session in most frameworks (Starlette's and Django's): credentials even
# when no redkit SessionMiddleware is found to name its own.
_DEFAULT_CREDENTIAL_COOKIES = ("session", "sessionid")
# Request headers that can change the URL an application believes it serves (absolute links,
# redirects): part of every key, beside the scheme and the Host, so that no request can
# plant a page made for another origin (cache poisoning).
_ORIGIN_HEADERS = (
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-original-url",
    "x-rewrite-url",
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")


@dataclass(frozen=True)
class CacheRule:
    """Which responses to cache, for how long, under which tags, keyed on what.

    ``path``: ``/users/{user_id}`` (one segment), ``/files/{rest:path}`` (the rest), or a
    prefix ending in ``*``. ``tags``: templates formatted with the path parameters, or a
    callable taking them. ``vary``: request headers that select the representation.
    ``per_user``: True keys entries by the request's credentials (its session, or the
    credential headers and cookies the middleware knows), so each session has entries of its
    own, never served once the session ends; a callable ``scope -> str | None`` names the user
    itself. ``shared``: the page is the same for everyone, so a signed-in request is answered
    from the entry anonymous requests made (it never writes one: what a signed-in user was
    sent is never stored for others). A rule that is neither lets requests with credentials
    bypass the cache (``X-Cache: BYPASS``).

    ``session_tags`` (``per_user`` rules only): more tags for an entry, from the redkit
    :class:`~redkit.sessions.store.Session` it is made for, e.g.
    ``lambda s: [f"projects-of:{s.user_id}"]``, so that a write about one user invalidates
    that user's pages in every session at once. A request with credentials that are not a
    redkit session bypasses such a rule: its entry could not carry the tags. Anonymous
    requests get the path's tags only.
    """

    path: str
    ttl: float | timedelta | None = None
    tags: Sequence[str] | Callable[[Mapping[str, str]], Iterable[str]] = ()
    vary: Sequence[str] = ()
    per_user: bool | Callable[[Scope], str | None] = False
    shared: bool = False
    stale_while_revalidate: float | timedelta | None = None
    stale_if_error: float | timedelta | None = None
    session_tags: Callable[[Session], Iterable[str]] | None = None
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise InvalidInput(f"a rule's path must start with '/', got {self.path!r}")
        if self.shared and self.per_user:
            raise InvalidInput(
                f"rule {self.path!r}: a page is per_user (one entry per session) or shared "
                "(one entry for everyone), not both"
            )
        if self.session_tags is not None and not self.per_user:
            raise InvalidInput(
                f"rule {self.path!r}: session_tags tag per-user entries; the rule needs per_user"
            )
        if self.session_tags is not None and not callable(self.session_tags):
            raise InvalidInput(
                f"rule {self.path!r}: session_tags must be a callable Session -> tags"
            )
        prefix = self.path.endswith("*")
        text = self.path[:-1] if prefix else self.path
        regex, last = "", 0
        for match in _PARAM.finditer(text):
            regex += re.escape(text[last : match.start()])
            regex += f"(?P<{match[1]}>.+)" if match[2] else f"(?P<{match[1]}>[^/]+)"
            last = match.end()
        regex += re.escape(text[last:]) + (".*" if prefix else "")
        object.__setattr__(self, "pattern", re.compile(regex))
        object.__setattr__(self, "vary", tuple(h.lower() for h in self.vary))

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path)
        return found.groupdict() if found else None

    def tags_for(self, params: Mapping[str, str]) -> list[str]:
        if callable(self.tags):
            return list(self.tags(params))
        return [t.format(**params) for t in self.tags]


@dataclass
class _Route:
    rule: CacheRule
    policy: Policy
    keys: EntryKeys
    tags: list[str]
    writes: bool = True
    """False for a signed-in request on a shared rule: it reads the shared entry only."""
    session_ends: float | None = None
    """When the session of a per-user entry expires (server clock, s): the entry's end."""


def etag_of(body: bytes) -> str:
    """A strong ETag: a hash of the body, the same in every process."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def _matches(if_none_match: str, etag: str) -> bool:
    # If-None-Match uses the weak comparison (RFC 9110 13.1.2): W/ prefixes are ignored.
    wanted = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == wanted:
            return True
    return False


def _cc_tokens(value: str) -> set[str]:
    return {part.split("=", 1)[0].strip().lower() for part in value.split(",") if part.strip()}


def _cc_directives(value: str) -> dict[str, str]:
    directives: dict[str, str] = {}
    for part in value.split(","):
        name, _, argument = part.partition("=")
        name = name.strip().lower()
        if name:
            directives.setdefault(name, argument.strip().strip('"'))
    return directives


def _freshness_ms(headers: Headers, now_s: float) -> tuple[int | None, bool]:
    """How long the response says it stays fresh in a shared cache (ms; None: it does not
    say), and whether it forbids serving it stale (``must-revalidate``)."""
    directives = _cc_directives(", ".join(headers.getlist("cache-control")))
    no_stale = "must-revalidate" in directives or "proxy-revalidate" in directives
    for name in ("s-maxage", "max-age"):  # s-maxage is for shared caches, and wins
        if name in directives:
            value = directives[name]
            # A malformed lifetime makes the response stale (RFC 9111 4.2.1).
            return (int(value) * 1000 if value.isdigit() else 0), no_stale
    expires = headers.get("expires")
    if expires is None:
        return None, no_stale
    try:
        until = parsedate_to_datetime(expires).timestamp()
        date = headers.get("date")
        base = parsedate_to_datetime(date).timestamp() if date else now_s
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0, no_stale  # an invalid date means "already expired" (RFC 9111 5.3)
    return max(0, int((until - base) * 1000)), no_stale


def _bounded(
    policy: Policy, fresh_ms: int | None, life_ms: int | None, no_stale: bool
) -> Policy | None:
    """The rule's policy, shortened to the response's own freshness and to the end of the
    session it was made for; None if nothing is left to store."""
    ttl, swr, sie = policy.ttl_ms, policy.swr_ms, policy.sie_ms
    if no_stale:
        swr = sie = 0
    if fresh_ms is not None:
        ttl = min(ttl, fresh_ms)
    if life_ms is not None:
        ttl = min(ttl, life_ms)
        swr = max(0, min(swr, life_ms - ttl))
        sie = max(0, min(sie, life_ms - ttl - swr))
    if ttl <= 0:
        return None
    return dataclasses.replace(policy, ttl_ms=ttl, swr_ms=swr, sie_ms=sie)


def _query_key(raw: bytes) -> str:
    """The query as sent, its parameters sorted by name but a name's values kept in order:
    ``a=1&a=2`` and ``a=2&a=1`` are different pages (Starlette reads the last value)."""
    if not raw:
        return ""
    items = raw.decode("latin-1").split("&")
    # Sorted by the name as the application decodes it (parse_qsl's unquote_plus), and
    # stable: two spellings of one name ("q" and "%71") keep their order, no decoding is
    # kept in the key itself, so equivalent spellings are separate entries (a miss, never a
    # mix-up).
    items.sort(key=lambda item: unquote_plus(item.partition("=")[0]))
    return "&".join(items)


def _names(values: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise InvalidInput(f"{what} must be a list of names, got {values!r}")
    for value in values:
        if not _HEADER_NAME.fullmatch(value):
            raise InvalidInput(f"{what}: {value!r} is not a header or cookie name")
    return tuple(values)


class _Captured:
    """A response as the application sent it, and whether it may be stored."""

    def __init__(self) -> None:
        self.start: Message | None = None
        self.body = b""
        self.etag = ""
        self.cacheable = False
        self.done = False


class CacheMiddleware:
    """Pure ASGI response cache (see the module docs)."""

    def __init__(
        self,
        app: ASGIApp,
        cache: Cache,
        rules: Sequence[CacheRule],
        *,
        allowed_hosts: Sequence[str] | None = None,
        credential_headers: Sequence[str] = (),
        credential_cookies: Sequence[str] = (),
    ) -> None:
        """``allowed_hosts``: the host names (``example.com``, ``*.example.com`` for its
        subdomains) whose requests may be cached; others bypass the cache. Every entry is
        keyed on the scheme and ``Host`` anyway, so another host never receives a page made
        for this one; the list also stops requests with invented hosts from filling it.

        ``credential_headers`` / ``credential_cookies``: request parts that identify a user
        besides the ones the session layer names (``Authorization`` and the
        :class:`~redkit.sessions.middleware.SessionMiddleware` cookie, found by itself), e.g.
        ``["X-Api-Key"]``. A request with any of them bypasses the cache unless the rule is
        ``per_user`` (then they key the entry) or ``shared``.
        """
        self.app = app
        self.cache = cache
        self.rules = list(rules)
        self._decided = metrics.counters(cache.name)
        # None: any host (the key holds the scheme and Host anyway, see above).
        self.allowed_hosts = None if allowed_hosts is None else AllowedHosts(allowed_hosts)
        # Header names are case-insensitive (Starlette's Headers are lower case); cookie
        # names are not.
        self.credential_headers = tuple(
            h.lower() for h in _names(credential_headers, "credential_headers")
        )
        self.credential_cookies = _names(credential_cookies, "credential_cookies")
        self._session_layer: SessionMiddleware | None = None
        self._policies = {
            id(rule): cache._policy(
                rule.ttl if rule.ttl is not None else cache.policy.ttl_ms / 1000,
                rule.stale_while_revalidate
                if rule.stale_while_revalidate is not None
                else cache.policy.swr_ms / 1000,
                rule.stale_if_error
                if rule.stale_if_error is not None
                else cache.policy.sie_ms / 1000,
                cache.policy.beta,
            )
            for rule in self.rules
        }

    def __repr__(self) -> str:
        return f"<CacheMiddleware {self.cache!r} rules={len(self.rules)}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        matched = self._match(scope["path"])
        if matched is None:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        cc = _cc_tokens(headers.get("cache-control", ""))
        route = await self._route(scope, headers, cc, *matched)
        if isinstance(route, str):
            # Say why: a bypass is otherwise indistinguishable from a cache that is off.
            log.debug("cache BYPASS %s %r: %s", scope["method"], scope["path"], route)
            await self.app(scope, receive, self._labelled(send, b"BYPASS"))
            return
        inm = headers.get("if-none-match")
        if scope["method"] == "HEAD" or not route.writes:
            found = await self._lookup(route, "peek", "")
            if found is not None and found.raw is not None:
                head = scope["method"] == "HEAD"
                await self._serve(send, found.raw, found.age, "HIT", inm, head=head)
            else:
                await self.app(scope, receive, self._labelled(send, b"MISS"))
            return
        if "no-cache" in cc or headers.get("pragma") == "no-cache":
            await self._live(scope, receive, send, route, "", 0, None, inm)
            return
        await self._get(scope, receive, send, route, inm)

    async def _lookup(self, route: _Route, mode: str, token: str) -> Lookup | None:
        """The cache's answer; None if the server is unreachable and the policy is fail-open
        (only cache calls are guarded: an error from the application is never retried)."""
        try:
            return await self.cache.lookup(route.keys, mode, token, route.policy.beta)
        except ConnectionLost:
            if not self.cache.fail_open:
                raise
            log.warning("cache unreachable; serving without it")
            return None

    def _match(self, path: str) -> tuple[CacheRule, dict[str, str]] | None:
        for rule in self.rules:
            params = rule.match(path)
            if params is not None:
                return rule, params
        return None

    def _host(self, scope: Scope, headers: Headers) -> str:
        host = headers.get("host")
        if host:
            return host
        server = scope.get("server")  # no Host (HTTP/1.0): Starlette's URL uses the server
        return f"{server[0]}:{server[1]}" if server else ""

    def _host_allowed(self, host: str) -> bool:
        return self.allowed_hosts is None or self.allowed_hosts.allows(host)

    async def _route(
        self,
        scope: Scope,
        headers: Headers,
        cc: set[str],
        rule: CacheRule,
        params: dict[str, str],
    ) -> _Route | str:
        """The entry this request reads and writes, or why it must bypass the cache."""
        host = self._host(scope, headers)
        if not self._host_allowed(host):
            return f"host {host[:100]!r} is not in allowed_hosts"
        if "no-store" in cc:
            return "the request says Cache-Control: no-store"
        user = await self._user(rule, scope, headers)
        if isinstance(user, str):
            return user
        name, writes, session = user
        tags = rule.tags_for(params)
        if session is not None and rule.session_tags is not None:
            tags += _tag_list(rule.session_tags(session))
        path: str = scope["path"]
        # JSON keeps the parts apart: no header value can forge another part of the key.
        ident = orjson.dumps(
            [
                "GET",
                scope.get("scheme", "http"),
                host,
                [", ".join(headers.getlist(h)) for h in _ORIGIN_HEADERS],
                scope.get("root_path", ""),
                path,
                _query_key(scope.get("query_string", b"")),
                [headers.get(h, "") for h in rule.vary],
                name,
            ]
        )
        key = "http:" + path[:120] + ":" + hashlib.blake2b(ident, digest_size=16).hexdigest()
        return _Route(
            rule,
            self._policies[id(rule)],
            self.cache.keys_for(key),
            tags,
            writes,
            session.expires_at if session is not None else None,
        )

    def _credentials(self, headers: Headers, layer: SessionMiddleware | None) -> list[str]:
        """The values of every request part that may identify a user (empty strings when
        absent): what the session layer names, and what was declared."""
        names = ("authorization", *self.credential_headers)
        cookies = (*_DEFAULT_CREDENTIAL_COOKIES, *self.credential_cookies)
        if layer is not None:
            names = tuple(dict.fromkeys((*names, *layer.credential_headers)))
            cookies = tuple(dict.fromkeys((*cookies, *layer.credential_cookies)))
        found = [", ".join(headers.getlist(h)) for h in names]
        if "cookie" in headers:
            raw = "; ".join(headers.getlist("cookie"))
            # The same lenient parser as Starlette's (and redkit's session middleware): the
            # stdlib's SimpleCookie drops the whole header at one malformed item, which
            # would make a signed-in request look anonymous.
            jar = cookie_parser(raw)
            found += [jar.get(n, "") for n in cookies]
            if not any(found) and any(n + "=" in raw for n in cookies):
                # A credential cookie we could not read: fail closed, as a personal request.
                found.append(raw)
        return found

    async def _user(
        self, rule: CacheRule, scope: Scope, headers: Headers
    ) -> tuple[str, bool, Session | None] | str:
        """(the user part of the key, whether the request may write the entry, the live
        session it is made for), or why the request must bypass the cache."""
        layer = find_session_middleware(scope, self._session_layer or self.app)
        if layer is not None:
            self._session_layer = layer
        credentials = self._credentials(headers, layer)
        personal = any(credentials)
        if not personal and not callable(rule.per_user):
            return "", True, None
        if not rule.per_user:
            if rule.shared:
                return "", False, None
            return (
                "the request carries credentials (Authorization, a session cookie or a "
                "declared credential) and the rule is neither per_user nor shared"
            )
        session: Session | None = None
        if layer is not None and personal:
            # Whatever the middleware order, ask the session layer: an entry made for a
            # session is never served once the session has ended (revoked, logged out,
            # expired). The session middleware reuses this read: no second round trip.
            try:
                handle = await layer.resolve(scope)
            except ConnectionLost:
                return "the session store is unreachable"
            if handle.via != "none":
                if handle.session is None:
                    return "no live session has these credentials (ended, revoked, forged)"
                session = handle.session
        if personal and session is None and rule.session_tags is not None:
            return (
                "the rule has session_tags and the request's credentials are not a redkit "
                "session: its entry could not carry them"
            )
        if callable(rule.per_user):
            name = rule.per_user(scope)
            if name:
                return "u:" + name, True, session
            if personal:
                return "the rule's per_user named no user for a request with credentials"
            return "", True, None
        digest = hashlib.blake2b(orjson.dumps(credentials), digest_size=16).hexdigest()
        return "u" + digest, True, session

    async def _get(
        self, scope: Scope, receive: Receive, send: Send, route: _Route, inm: str | None
    ) -> None:
        cache = self.cache
        token = cache.token()
        woken = False
        while True:
            found = await self._lookup(route, "fetch", token)
            if found is None:
                await self.app(scope, receive, send)
                return
            status = found.status
            if found.raw is not None and status in (HIT, STALE, HIT_REFRESH, STALE_REFRESH):
                if status in (HIT_REFRESH, STALE_REFRESH):
                    cache.spawn(self._refresh(scope, route, token, found.now_us))
                label = "HIT" if status in (HIT, HIT_REFRESH) else "STALE"
                await self._serve(send, found.raw, found.age, label, inm)
                return
            if status == MISS_LOCKED:
                await self._live(scope, receive, send, route, token, found.now_us, found, inm)
                return
            if status != WAIT or woken:
                await self._live(scope, receive, send, route, "", found.now_us, found, inm)
                return
            try:
                woken = await cache.wait(route.keys, found.lock_ttl)
            except ConnectionLost:
                if not cache.fail_open:
                    raise
                woken = True  # computes without the cache on the next turn

    async def _serve(
        self,
        send: Send,
        raw: bytes,
        age: float,
        label: str,
        inm: str | None,
        *,
        head: bool = False,
    ) -> None:
        kind, data = unpack(raw)
        if kind != KIND_RESPONSE:
            raise InvalidInput("this cache entry holds a value, not an HTTP response")
        split = bytes(data[:65536]).find(b"\n")
        if split < 0:  # headers over 64 KiB: rare, so the fast path looks at a prefix only
            split = bytes(data).index(b"\n")
        meta = orjson.loads(data[:split])
        etag: str = meta["e"]
        self._decided[label.encode()].inc()
        extra = [
            (b"x-cache", label.encode()),
            (b"age", str(int(age)).encode()),
        ]
        stored = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in meta["h"]]
        if inm is not None and _matches(inm, etag):
            kept = [(k, v) for k, v in stored if k in _NOT_MODIFIED_HEADERS]
            await send({"type": "http.response.start", "status": 304, "headers": kept + extra})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": stored + extra})
        await send(
            {"type": "http.response.body", "body": b"" if head else bytes(data[split + 1 :])}
        )

    def _labelled(self, send: Send, label: bytes) -> Send:
        self._decided[label].inc()

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-cache", label)],
                }
            await send(message)

        return wrapped

    def _cacheable(self, route: _Route, start: Message) -> bool:
        if start["status"] != 200:
            return False
        headers = Headers(raw=start.get("headers", []))
        if "set-cookie" in headers:
            return False
        if _cc_tokens(headers.get("cache-control", "")) & {"private", "no-store", "no-cache"}:
            return False
        for value in headers.getlist("vary"):
            for name in value.split(","):
                name = name.strip().lower()
                if name and (name == "*" or name not in route.rule.vary):
                    return False
        return True

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        route: _Route,
        forward: Callable[[Message, _Captured], Any] | None,
    ) -> _Captured:
        """Run the application; hold its start message until the first body tells whether
        the response is one message (cacheable) or a stream (passed through)."""
        captured = _Captured()
        streaming = False

        async def send(message: Message) -> None:
            nonlocal streaming
            kind = message["type"]
            if kind == "http.response.start":
                captured.start = message
                return
            if kind != "http.response.body" or streaming or captured.start is None:
                if forward is not None:
                    await forward(message, captured)
                return
            body = message.get("body", b"")
            if not captured.done and not message.get("more_body", False):
                captured.done = True
                captured.body = body
                start = captured.start
                if self._cacheable(route, start) and len(body) <= self.cache.max_bytes:
                    headers = Headers(raw=start.get("headers", []))
                    captured.etag = headers.get("etag") or etag_of(body)
                    captured.cacheable = True
                if forward is not None:
                    await forward(message, captured)
                return
            # A stream: pass it through as it comes, never stored.
            streaming = True
            captured.cacheable = False
            if forward is not None:
                await forward(captured.start, captured)
                await forward(message, captured)

        await self.app(scope, receive, send)
        return captured

    async def _live(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: _Route,
        token: str,
        started_us: int,
        found: Lookup | None,
        inm: str | None,
    ) -> None:
        """A miss: run the application for this client, and store what it sent if we may."""
        stale: bytes | None = found.raw if found is not None else None
        stale_age = found.age if found is not None else 0.0
        use_stale = stale is not None and route.policy.sie_ms > 0
        sent_start = False

        async def forward(message: Message, captured: _Captured) -> None:
            nonlocal sent_start
            if message["type"] == "http.response.start":  # a stream's start, passed on
                headers = [*message.get("headers", []), (b"x-cache", b"MISS")]
                message = {**message, "headers": headers}
                sent_start = True
                self._decided[b"MISS"].inc()
                await send(message)
                return
            if message["type"] == "http.response.body" and not sent_start:
                assert captured.start is not None
                start = captured.start
                if use_stale and start["status"] >= 500:
                    return
                headers = [*start.get("headers", []), (b"x-cache", b"MISS")]
                if captured.cacheable:
                    if not Headers(raw=start.get("headers", [])).get("etag"):
                        headers.append((b"etag", captured.etag.encode("latin-1")))
                    if inm is not None and _matches(inm, captured.etag):
                        kept = [(k, v) for k, v in headers if k in _NOT_MODIFIED_HEADERS]
                        kept.append((b"x-cache", b"MISS"))  # headers' own x-cache is dropped
                        await send({"type": "http.response.start", "status": 304, "headers": kept})
                        await send({"type": "http.response.body", "body": b""})
                        sent_start = True
                        self._decided[b"MISS"].inc()
                        return
                sent_start = True
                self._decided[b"MISS"].inc()
                await send({**start, "headers": headers})
                await send(message)
                return
            await send(message)

        try:
            captured = await self._run(scope, receive, route, forward)
        except Exception:
            if token:
                await self.cache.release(route.keys, token)
            if use_stale and not sent_start:
                assert stale is not None
                log.warning("serving stale %s: the application failed", scope["path"])
                self.cache.count("stale")
                await self._serve(send, stale, stale_age, "STALE", inm)
                return
            raise
        except BaseException:
            if token:
                await asyncio.shield(self.cache.release(route.keys, token))
            raise
        if use_stale and not sent_start and stale is not None:
            self.cache.count("stale")
            await self._serve(send, stale, stale_age, "STALE", inm)
        await self._finish(route, captured, token, started_us)

    async def _finish(
        self, route: _Route, captured: _Captured, token: str, started_us: int
    ) -> None:
        if not captured.cacheable or captured.start is None:
            if token:
                await self.cache.release(route.keys, token)
            return
        start = captured.start
        # The time the computation started, on the server's clock when the lookup gave it.
        now_s = started_us / 1e6 if started_us else time.time()
        fresh_ms, no_stale = _freshness_ms(Headers(raw=start.get("headers", [])), now_s)
        life_ms = None
        if route.session_ends is not None:
            life_ms = max(0, int((route.session_ends - now_s) * 1000))
        policy = _bounded(route.policy, fresh_ms, life_ms, no_stale)
        if policy is None:  # stale at once (max-age=0), or its session is ending
            if token:
                await self.cache.release(route.keys, token)
            return
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in start.get("headers", [])
            if k.decode("latin-1").lower() not in _SKIP_HEADERS
        ]
        if not any(k.lower() == "etag" for k, _ in headers):
            headers.append(("etag", captured.etag))
        meta = orjson.dumps({"h": headers, "e": captured.etag})
        payload = pack(b"R", meta + b"\n" + captured.body, self.cache.compress_above)
        try:
            await self.cache.store(
                route.keys,
                payload,
                policy,
                tags=route.tags,
                token=token,
                started_us=started_us,
                recompute=True,
            )
        except ConnectionLost:
            if not self.cache.fail_open:
                raise

    async def _refresh(self, scope: Scope, route: _Route, token: str, started_us: int) -> None:
        """Re-run the request in the background (XFetch, stale-while-revalidate)."""
        finished = asyncio.Event()
        sent_request = False

        async def receive() -> Message:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        headers = [
            (k, v)
            for k, v in scope.get("headers", [])
            if k not in (b"if-none-match", b"if-modified-since", b"cache-control")
        ]
        copy = {**scope, "method": "GET", "headers": headers}
        try:
            captured = await self._run(copy, receive, route, None)
            await self._finish(route, captured, token, started_us)
        except Exception:
            log.exception("background refresh of %s failed", scope["path"])
            await self.cache.release(route.keys, token)
        finally:
            finished.set()
