"""ASGI session middleware and FastAPI dependencies over a :class:`SessionStore`.

The only module of :mod:`redkit.sessions` that imports Starlette. Pure ASGI (no
``BaseHTTPMiddleware``). The store needs a connected ``rk``, which exists only inside the
running event loop: :class:`redkit.web.RedkitWeb` connects in the app's lifespan and installs
this middleware for you. By hand (the store made once the loop runs)::

    app.add_middleware(SessionMiddleware, store=rk.sessions())

    @app.post("/login")
    async def login(session: RequestSession = Depends(current_session)):
        await session.login(user.id, {"name": user.name})   # always a new ID (no fixation)

    @app.get("/me")
    async def me(s: Session = Depends(require_session)):     # 401 without a live session
        return {"user": s.user_id}

A request's session comes from ``Authorization: Bearer <id>`` (APIs) or from the cookie
(browsers): ``HttpOnly``, ``SameSite=Lax``, optionally signed with HMAC-SHA256
(``signing_key``) so forged cookies are refused without a round trip. ``Secure`` by default
whenever it can work: on every HTTPS request and on every request to a host other than a
loopback name (``localhost``, ``*.localhost``, ``127.0.0.0/8``, ``::1``, and ``testserver``,
Starlette's ``TestClient``), so a local plain-HTTP run keeps its cookie and a deployment never
sends one in the clear; ``secure=True`` or ``False`` fixes it either way.

A request authenticated by bearer token never gets cookies back. A response that sets the
cookie itself (a service behind a gateway that runs this middleware too, and signs the user
in) keeps its own ``Set-Cookie``: the middleware then adds none, so a stale cookie's clearing
never lands after a fresh sign-in. Changes are written when
they are made (``login``, ``update``, ...), not at the end of the response: a read-only
request costs one round trip and usually no write.

Layers that run *outside* the session middleware (a response cache, a rate limiter) learn the
request's session with :func:`resolve_session`, whatever the middleware order: on the
``lifespan`` scope the middleware records itself in the lifespan state (which the server copies
into every request's ``scope["state"]``), so an outer layer resolves the credentials through it
(one ``store.get``), and the middleware reuses that answer instead of reading the store again.
:attr:`SessionMiddleware.credential_cookies` and :attr:`~SessionMiddleware.credential_headers`
name the parts of a request that carry its credentials.

**Redis unreachable.** A request whose session cannot be read (the server is down, or does
not answer within the command timeout) is answered ``503 Service Unavailable`` with
``Retry-After`` and a JSON body ``{"error": "unavailable", "message": ...}``, never a 500 with
a traceback; so is a :class:`~redkit.errors.ConnectionLost` that any layer or endpoint inside
the middleware raises before the response has started (:func:`send_unavailable`). A WebSocket
handshake gets the same 503 where the server supports the ``websocket.http.response``
extension (uvicorn does), else it is closed with code 1013 (try again later). The message
never carries the server's address; the log does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from redkit.codec import seconds
from redkit.errors import ConfigurationError, ConnectionLost, SessionNotFound
from redkit.hosts import is_loopback_host
from redkit.sessions.store import Session, SessionStore

__all__ = [
    "REGISTRY_KEY",
    "SCOPE_KEY",
    "RequestSession",
    "SessionMiddleware",
    "check_cookie_options",
    "current_session",
    "find_session_middleware",
    "is_loopback_host",
    "needs_secure_cookie",
    "require_session",
    "resolve_session",
    "send_unavailable",
]

log = logging.getLogger("redkit.sessions")

SCOPE_KEY = "redkit.session"
"""Where the request's :class:`RequestSession` is kept in its ASGI scope."""

REGISTRY_KEY = "redkit.session_middleware"
"""Where a :class:`SessionMiddleware` records itself: in the lifespan state (which the server
copies into every request's ``scope["state"]``) and, when found another way, in the request's
own state. A layer that builds the session middleware at start-up (as
:class:`redkit.web.RedkitWeb` does) may record it there itself, so that
:func:`find_session_middleware` finds it."""
# How far find_session_middleware follows ``.app`` links from a layer to the ones inside it
# (a middleware stack is a handful of layers; the bound keeps a cycle from looping forever).
_MAX_DEPTH = 64
Via = Literal["cookie", "bearer", "none"]


class RequestSession:
    """The session of one request; from ``Depends(current_session)`` or
    ``request.state.session``. ``session`` is ``None`` for an anonymous request."""

    def __init__(
        self,
        store: SessionStore,
        session: Session | None,
        via: Via,
        ip: str | None,
        user_agent: str | None,
    ) -> None:
        self.store = store
        self.session = session
        self.via: Via = via
        """How the request presented its session: ``cookie``, ``bearer`` or ``none``."""
        self.ip = ip
        self.user_agent = user_agent
        self._cookie: Literal["set", "clear"] | None = None
        # The middleware that resolved this handle: it reuses the handle instead of reading
        # the store a second time when an outer layer resolved it first.
        self._resolver: SessionMiddleware | None = None
        self._stale_cookie = False

    def __repr__(self) -> str:
        who = f"user={self.session.user_id!r} id={self.session.id_prefix}…" if self.session else ""
        return f"<RequestSession {who or 'anonymous'} via={self.via}>"

    @property
    def user_id(self) -> str | None:
        return self.session.user_id if self.session else None

    @property
    def data(self) -> dict[str, Any]:
        """The session's data (empty for an anonymous request). Change it with ``update``."""
        return self.session.data if self.session else {}

    @property
    def token(self) -> str | None:
        """The session ID: return it to an API client after ``login``/``rotate``."""
        return self.session.id if self.session else None

    def _require(self) -> Session:
        if self.session is None:
            raise SessionNotFound("this request has no live session; sign in first")
        return self.session

    async def login(self, user_id: str | int, data: Mapping[str, Any] | None = None) -> Session:
        """Start a new session for ``user_id`` and end the one the request came with: the ID
        always changes on sign-in, so a planted ID (session fixation) is worth nothing.

        An int ``user_id`` is stored as its decimal string (``session.user_id == "42"``)."""
        if self.session is not None:
            await self.store.revoke(self.session.id)
        self.session = await self.store.create(
            user_id, data, ip=self.ip, user_agent=self.user_agent
        )
        self._cookie = "set"
        return self.session

    async def logout(self) -> bool:
        """End this session (the cookie is cleared); False if there was none."""
        ended = await self.store.revoke(self.session.id) if self.session else False
        self.session = None
        self._cookie = "clear"
        return ended

    async def logout_everywhere(self) -> int:
        """End every session of this user, this one included; returns how many ended."""
        ended = await self.store.revoke_all(self._require().user_id)
        self.session = None
        self._cookie = "clear"
        return ended

    async def rotate(self) -> Session:
        """A new ID for the same session (e.g. after a privilege change)."""
        self.session = await self.store.rotate(self._require().id)
        self._cookie = "set"
        return self.session

    async def update(
        self, data: Mapping[str, Any] | None = None, *, remove: Sequence[str] = ()
    ) -> Session:
        """Merge ``data`` into the session (field by field) and drop the fields in ``remove``."""
        try:
            self.session = await self.store.update(self._require().id, data, remove=remove)
        except SessionNotFound:
            self.session = None
            self._cookie = "clear"
            raise
        return self.session


_COOKIE_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,64}")


def check_cookie_options(
    *,
    cookie_name: str = "session",
    secure: bool | None = None,
    same_site: str = "lax",
    signing_key: str | bytes | None = None,
    cookies: bool = True,
    bearer: bool = True,
) -> tuple[bool | None, bytes | None]:
    """Check :class:`SessionMiddleware`'s options without building it (so an application can
    refuse a bad configuration before it serves anything): returns ``secure`` as it will be
    applied and the signing key as bytes, or raises :class:`~redkit.errors.ConfigurationError`.
    """
    if not cookies and not bearer:
        raise ConfigurationError("enable cookies, bearer tokens, or both")
    if not isinstance(cookie_name, str) or not _COOKIE_NAME.fullmatch(cookie_name):
        raise ConfigurationError(
            f"cookie_name {cookie_name!r}: use 1-64 letters, digits and !#$%&'*+-.^_`|~"
        )
    if same_site not in ("lax", "strict", "none"):
        raise ConfigurationError(f"same_site must be 'lax', 'strict' or 'none', got {same_site!r}")
    if secure is not None and not isinstance(secure, bool):
        raise ConfigurationError(f"secure must be True, False or None (auto), got {secure!r}")
    # Browsers drop these cookies unless they are Secure, whatever the host.
    needs_secure = same_site == "none" or cookie_name.startswith(("__Secure-", "__Host-"))
    if needs_secure and secure is False:
        raise ConfigurationError(
            "browsers refuse SameSite=None and __Secure-/__Host- cookies without Secure"
        )
    if isinstance(signing_key, str):
        signing_key = signing_key.encode()
    if signing_key is not None and (not isinstance(signing_key, bytes) or len(signing_key) < 32):
        raise ConfigurationError(
            f"signing_key must be at least 32 bytes, got {len(signing_key)}; make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            if isinstance(signing_key, bytes)
            else f"signing_key must be str or bytes, got {type(signing_key).__name__}"
        )
    return (True if needs_secure else secure), signing_key


class SessionMiddleware:
    """Load the request's session (one round trip) and keep the cookie in step with it."""

    def __init__(
        self,
        app: ASGIApp,
        store: SessionStore,
        *,
        cookie_name: str = "session",
        secure: bool | None = None,
        same_site: Literal["lax", "strict", "none"] = "lax",
        path: str = "/",
        domain: str | None = None,
        max_age: float | timedelta | None = None,
        signing_key: str | bytes | None = None,
        cookies: bool = True,
        bearer: bool = True,
        retry_after: int = 2,
    ) -> None:
        """``max_age`` defaults to the store's absolute timeout. ``signing_key`` (>= 32 bytes)
        signs the cookie. ``secure``: ``None`` (default) marks the cookie ``Secure`` on HTTPS
        requests and on requests to any non-loopback host (see the module docs); ``True``
        always, ``False`` never (plain HTTP on a LAN address). ``cookies=False`` makes a
        bearer-only API; ``bearer=False`` ignores ``Authorization`` headers.
        ``retry_after``: the seconds a 503 asks a client to wait while Redis is unreachable."""
        if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
            raise ConfigurationError(f"retry_after must be an int >= 0, got {retry_after!r}")
        self.retry_after = retry_after
        secure, signing_key = check_cookie_options(
            cookie_name=cookie_name,
            secure=secure,
            same_site=same_site,
            signing_key=signing_key,
            cookies=cookies,
            bearer=bearer,
        )
        self.app = app
        self.store = store
        self.cookie_name = cookie_name
        self.cookies = cookies
        self.bearer = bearer
        self._key = signing_key
        age = store.absolute_ttl if max_age is None else seconds(max_age, "max_age")
        attributes = [f"Path={path}"]
        if domain:
            attributes.append(f"Domain={domain}")
        attributes += ["HttpOnly", f"SameSite={same_site.capitalize()}"]
        self.secure = secure
        """``True``/``False`` as given, or ``None``: decided per request (see the module docs)."""
        # (set-cookie tail, clearing header) without and with Secure.
        self._tails: dict[bool, tuple[str, str]] = {}
        for flag in (False, True):
            tail = "; ".join([*attributes, "Secure"] if flag else attributes)
            self._tails[flag] = (
                f"Max-Age={int(age)}; {tail}",
                f"{cookie_name}=; Max-Age=0; {tail}",
            )

    def __repr__(self) -> str:
        return f"<SessionMiddleware cookie={self.cookie_name!r} bearer={self.bearer}>"

    @property
    def credential_cookies(self) -> tuple[str, ...]:
        """The cookies that carry a session (none for a bearer-only API)."""
        return (self.cookie_name,) if self.cookies else ()

    @property
    def credential_headers(self) -> tuple[str, ...]:
        """The request headers (lower case) that carry a session."""
        return ("authorization",) if self.bearer else ()

    # -- cookie values ---------------------------------------------------------------------

    def _sign(self, token: str) -> str:
        if self._key is None:
            return token
        mac = hmac.new(self._key, token.encode(), hashlib.sha256).digest()
        return token + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def _unsign(self, value: str) -> str | None:
        if self._key is None:
            return value
        token, _, _signature = value.rpartition(".")
        if not token or not hmac.compare_digest(self._sign(token).encode(), value.encode()):
            return None
        return token

    def _token(self, headers: Headers) -> tuple[str | None, Via]:
        if self.bearer:
            scheme, _, credentials = headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip(), "bearer"
        if self.cookies and "cookie" in headers:
            # Every Cookie line, as one: HTTP/2 clients send each cookie on a line of its own
            # (RFC 9113 8.2.3), and the cache reads them all; reading the first line only
            # would sign such a user out, and make the layers disagree on who is calling.
            value = cookie_parser("; ".join(headers.getlist("cookie"))).get(self.cookie_name)
            if value:
                return self._unsign(value) or "", "cookie"
        return None, "none"

    # -- ASGI ------------------------------------------------------------------------------

    async def resolve(self, scope: Scope) -> RequestSession:
        """The request's session, read from the store at most once per request: the handle
        is kept in the scope, where this middleware (and :func:`current_session`) find it."""
        handle = scope.get(SCOPE_KEY)
        if isinstance(handle, RequestSession) and handle._resolver is self:
            return handle
        headers = Headers(scope=scope)
        token, via = self._token(headers)
        session = await self.store.get(token) if token else None
        client = scope.get("client")
        handle = RequestSession(
            self.store,
            session,
            via,
            ip=client[0] if client else None,
            user_agent=headers.get("user-agent"),
        )
        handle._resolver = self
        # A cookie that names no live session (expired, revoked, forged) is cleared.
        handle._stale_cookie = via == "cookie" and session is None
        scope[SCOPE_KEY] = handle
        scope.setdefault("state", {})["session"] = handle
        return handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # Outer layers find the middleware here, whatever the order (the outermost
            # session middleware wins if there are several).
            state = scope.get("state")
            if isinstance(state, dict):
                state.setdefault(REGISTRY_KEY, self)
            await self.app(scope, receive, send)
            return
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            handle = await self.resolve(scope)
        except ConnectionLost as exc:
            log.warning("session store unreachable; answering 503: %s", exc)
            await send_unavailable(scope, receive, send, self.retry_after)
            return
        via = handle.via
        stale_cookie = handle._stale_cookie

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and self.cookies and via != "bearer":
                header = self._set_cookie(handle, stale_cookie, scope)
                headers = MutableHeaders(scope=message)
                # The app's own word on this cookie wins: a gateway in front of the service
                # that signed the user in must not clear (after it) the cookie just set.
                if header and not self._sets_cookie(headers):
                    headers.append("set-cookie", header)
            await send(message)

        # The 503 goes through send_with_cookie too: a rotated or cleared cookie still lands.
        await unavailable_on_connection_lost(
            self.app, scope, receive, send_with_cookie, self.retry_after
        )

    def _sets_cookie(self, headers: MutableHeaders) -> bool:
        """Whether the response already sets (or clears) this middleware's cookie."""
        prefix = self.cookie_name.lower() + "="
        return any(v.lstrip().lower().startswith(prefix) for v in headers.getlist("set-cookie"))

    def _set_cookie(self, handle: RequestSession, stale_cookie: bool, scope: Scope) -> str | None:
        if handle._cookie is None and not stale_cookie:
            return None
        secure = self.secure if self.secure is not None else needs_secure_cookie(scope)
        set_tail, clear = self._tails[secure]
        if handle._cookie == "set" and handle.session is not None:
            return f"{self.cookie_name}={self._sign(handle.session.id)}; {set_tail}"
        return clear


async def unavailable_on_connection_lost(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, retry_after: int = 2
) -> None:
    """Run ``app``; a :class:`~redkit.errors.ConnectionLost` it raises before the response
    started is answered ``503`` through ``send`` (:func:`send_unavailable`), one raised after
    is re-raised (part of the response is out: nothing else can be said). Serves the session
    middleware and the apps that have no session middleware alike."""
    started = connected = False

    async def receive_watched() -> Message:
        nonlocal connected
        message = await receive()
        connected = connected or message["type"] == "websocket.connect"
        return message

    async def send_watched(message: Message) -> None:
        nonlocal started
        started = True
        await send(message)

    try:
        await app(scope, receive_watched, send_watched)
    except ConnectionLost as exc:
        if started:
            raise
        log.warning("Redis unreachable during %s; answering 503: %s", scope.get("path"), exc)
        await send_unavailable(scope, receive, send, retry_after, connected=connected)


async def send_unavailable(
    scope: Scope, receive: Receive, send: Send, retry_after: int = 2, *, connected: bool = False
) -> None:
    """Answer ``503 Service Unavailable`` because Redis cannot be reached: ``Retry-After`` and
    ``{"error": "unavailable", "message": ...}`` (the same for every redkit layer).

    On a WebSocket handshake: the same 503 where the server supports the
    ``websocket.http.response`` extension, else a close with code 1013 (try again later).
    The message names no server address (the caller logs the error itself). ``connected``:
    the handshake's ``websocket.connect`` event has been received already (by the app).
    """
    body = (
        b'{"error":"unavailable","message":"the service cannot reach its data store; '
        b'try again shortly"}'
    )
    headers = [
        (b"content-type", b"application/json"),
        (b"retry-after", str(retry_after).encode()),
        (b"cache-control", b"no-store"),
    ]
    if scope["type"] == "http":
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    if not connected and (await receive())["type"] != "websocket.connect":
        return  # the client left already
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send({"type": "websocket.http.response.start", "status": 503, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1013, "reason": "try again later"})


def needs_secure_cookie(scope: Scope) -> bool:
    """The default ``Secure`` decision: yes on HTTPS/WSS and for every non-loopback host.

    The ``Host`` header is the client's, but a browser sends the host it is at: a victim's
    browser on a public name always gets ``Secure``; only a client on this machine (or one
    that lies about the host, for its own cookie) gets a cookie without it.
    """
    if scope.get("scheme") in ("https", "wss"):
        return True
    host = Headers(scope=scope).get("host")
    if host is None:
        server = scope.get("server")
        host = str(server[0]) if server else ""
    return not is_loopback_host(host)


def current_session(connection: HTTPConnection) -> RequestSession:
    """FastAPI dependency: the request's :class:`RequestSession` (maybe anonymous)."""
    handle = connection.scope.get(SCOPE_KEY)
    if not isinstance(handle, RequestSession):
        raise RuntimeError("add redkit.sessions.middleware.SessionMiddleware to the app first")
    return handle


def require_session(connection: HTTPConnection) -> Session:
    """FastAPI dependency: the live :class:`Session`, or ``401 Unauthorized``."""
    session = current_session(connection).session
    if session is None:
        raise not_signed_in()
    return session


def not_signed_in() -> HTTPException:
    """The ``401 Unauthorized`` of a request without a live session (the same for every
    dependency that needs one: :func:`require_session`, the web layer's ``require_login``)."""
    return HTTPException(
        status_code=401,
        detail="sign in first: no live session",
        headers={"WWW-Authenticate": "Bearer"},
    )


def find_session_middleware(scope: Scope, app: Any = None) -> SessionMiddleware | None:
    """The :class:`SessionMiddleware` that serves this request, or ``None``.

    Found, in order: by the handle it (or an outer layer) resolved for this request; in
    ``scope["state"]``, where it records itself during the ``lifespan`` startup; or, given
    ``app`` (the layer that asks, or the application it wraps), by following the ``.app``
    links of the layers inside it, for servers and test clients that run no lifespan. A
    middleware found that last way is recorded in the request's state for the layers inside.
    """
    handle = scope.get(SCOPE_KEY)
    if isinstance(handle, RequestSession) and handle._resolver is not None:
        return handle._resolver
    state = scope.get("state")
    found = state.get(REGISTRY_KEY) if isinstance(state, dict) else None
    if isinstance(found, SessionMiddleware):
        return found
    layer, seen = app, 0
    while layer is not None and seen < _MAX_DEPTH:
        if isinstance(layer, SessionMiddleware):
            scope.setdefault("state", {})[REGISTRY_KEY] = layer
            return layer
        seen += 1
        # Middleware keep the layer they wrap in ``.app``; a Starlette application keeps its
        # stack in ``.middleware_stack``, which it builds at its first call: the request is
        # on its way there, so build it now, as Starlette itself would an instant later.
        inner = getattr(layer, "app", None)
        if inner is None and hasattr(layer, "middleware_stack"):
            if layer.middleware_stack is None and callable(
                getattr(layer, "build_middleware_stack", None)
            ):
                layer.middleware_stack = layer.build_middleware_stack()
            inner = layer.middleware_stack
        layer = inner
    return None


async def resolve_session(scope: Scope) -> RequestSession | None:
    """The request's :class:`RequestSession`, whatever the middleware order, or ``None`` if
    no :class:`SessionMiddleware` is known for the app (see :func:`find_session_middleware`).

    Called by a layer outside the session middleware, it reads the store once (one round
    trip) and leaves the handle in the scope: the session middleware then uses it as its
    own, so the request costs no second read and its cookie is still kept in step. Raises
    :class:`~redkit.errors.ConnectionLost` if the store cannot be reached.
    """
    handle = scope.get(SCOPE_KEY)
    if isinstance(handle, RequestSession):
        return handle
    middleware = find_session_middleware(scope)
    if middleware is None:
        return None
    return await middleware.resolve(scope)
