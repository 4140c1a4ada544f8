"""HTTP response caching as pure ASGI middleware, on a :class:`~redkit.cache.Cache`.

::

    from redkit.cache.middleware import CacheMiddleware, CacheRule

    app.add_middleware(
        CacheMiddleware,
        cache=rk.cache(name="http"),
        rules=[
            CacheRule("/users/{user_id}", ttl=1800, tags=["user:{user_id}"], per_user=True),
            CacheRule("/projects", ttl=600, tags=["projects"], vary=["accept-language"]),
        ],
    )
    ...
    await cache.invalidate("user:42")        # after a write

What is cached, and what never is:

* Only ``GET`` requests matching a rule, and only ``200`` responses sent in one body message:
  a streaming response (several body messages) passes through uncached.
* Never a response with ``Set-Cookie``, ``Cache-Control: private | no-store | no-cache``,
  ``Vary: *`` or a ``Vary`` on a header the rule does not key on.
* Never a request with ``Authorization`` or a session cookie, unless the rule has
  ``per_user``: then the entry is keyed per user (by default a hash of the credentials, or
  what ``per_user(scope)`` returns), so one user never receives another's response.
* A request with ``Cache-Control: no-cache`` skips the lookup and refreshes the entry;
  ``no-store`` bypasses the cache.

The key is the method, the path, the query with its parameters sorted, the values of the
rule's ``vary`` headers, and the user. Responses carry a strong ``ETag`` (the application's, or
a BLAKE2b hash of the body: the same in every process), ``X-Cache: HIT | MISS | STALE`` and,
when served from the cache, ``Age``. ``If-None-Match`` gets ``304 Not Modified``. ``HEAD`` is
answered from the ``GET`` entry. A miss takes the cache's single-flight lock: concurrent
misses on one URL (in any process) wait for the first instead of all running the endpoint;
XFetch and ``stale_while_revalidate`` refresh in the background with a copy of the request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
    pack,
    unpack,
)
from redkit.errors import ConnectionLost, InvalidInput

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


@dataclass(frozen=True)
class CacheRule:
    """Which responses to cache, for how long, under which tags, keyed on what.

    ``path``: ``/users/{user_id}`` (one segment), ``/files/{rest:path}`` (the rest), or a
    prefix ending in ``*``. ``tags``: templates formatted with the path parameters, or a
    callable taking them. ``vary``: request headers that select the representation.
    ``per_user``: True keys entries by the request's credentials (``Authorization`` and the
    session cookies); a callable ``scope -> str | None`` names the user itself.
    """

    path: str
    ttl: float | timedelta | None = None
    tags: Sequence[str] | Callable[[Mapping[str, str]], Iterable[str]] = ()
    vary: Sequence[str] = ()
    per_user: bool | Callable[[Scope], str | None] = False
    stale_while_revalidate: float | timedelta | None = None
    stale_if_error: float | timedelta | None = None
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise InvalidInput(f"a rule's path must start with '/', got {self.path!r}")
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
        session_cookies: Sequence[str] = ("session", "sessionid"),
    ) -> None:
        self.app = app
        self.cache = cache
        self.rules = list(rules)
        self.session_cookies = tuple(session_cookies)
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
        headers = Headers(scope=scope)
        route = self._route(scope, headers)
        cc = _cc_tokens(headers.get("cache-control", ""))
        if route is None or "no-store" in cc:
            await self.app(scope, receive, send)
            return
        inm = headers.get("if-none-match")
        if scope["method"] == "HEAD":
            found = await self._lookup(route, "peek", "")
            if found is not None and found.raw is not None:
                await self._serve(send, found.raw, found.age, "HIT", inm, head=True)
            else:
                await self.app(scope, receive, self._miss_header(send))
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

    def _route(self, scope: Scope, headers: Headers) -> _Route | None:
        path: str = scope["path"]
        for rule in self.rules:
            params = rule.match(path)
            if params is None:
                continue
            user = self._user(rule, scope, headers)
            if user is None:
                return None
            # The parameters sorted as sent ("b=2&a=1" keys like "a=1&b=2"); no decoding, so
            # equivalent spellings (%20 and +) are separate entries: a miss, never a mix-up.
            raw_query: bytes = scope.get("query_string", b"")
            query = "&".join(sorted(raw_query.decode("latin-1").split("&"))) if raw_query else ""
            # JSON keeps the parts apart: no header value can forge another part of the key.
            ident = orjson.dumps(
                ["GET", path, query, [headers.get(h, "") for h in rule.vary], user]
            )
            key = "http:" + path[:120] + ":" + hashlib.blake2b(ident, digest_size=16).hexdigest()
            return _Route(
                rule, self._policies[id(rule)], self.cache.keys_for(key), rule.tags_for(params)
            )
        return None

    def _user(self, rule: CacheRule, scope: Scope, headers: Headers) -> str | None:
        """The user part of the key; None if the request must not touch the cache."""
        credentials = [headers.get("authorization", "")]
        if self.session_cookies and "cookie" in headers:
            raw = headers["cookie"]
            # The same lenient parser as Starlette's (and redkit's session middleware): the
            # stdlib's SimpleCookie drops the whole header at one malformed item, which
            # would make a signed-in request look anonymous.
            jar = cookie_parser(raw)
            credentials += [jar.get(n, "") for n in self.session_cookies]
            if not any(credentials) and any(n + "=" in raw for n in self.session_cookies):
                # A session cookie we could not read: fail closed, as a personal request.
                credentials.append(raw)
        personal = any(credentials)
        if callable(rule.per_user):
            name = rule.per_user(scope)
            if name:
                return "u:" + name
            return None if personal else ""
        if not personal:
            return ""
        if not rule.per_user:
            return None
        return "u" + hashlib.blake2b(orjson.dumps(credentials), digest_size=16).hexdigest()

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

    def _miss_header(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-cache", b"MISS")],
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
                        return
                sent_start = True
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
                route.policy,
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
