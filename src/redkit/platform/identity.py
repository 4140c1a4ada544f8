"""The identity the gateway hands a service: a header that only the gateway can write.

The gateway resolves the caller's session (cookie or bearer token) and sends each service
``X-Redkit-Identity: <payload>.<signature>``: the payload is base64url JSON
``{"uid", "type", "sid", "ip", "exp"}``, the signature HMAC-SHA256 over it with a key derived
from ``REDKIT_PLATFORM_SECRET``. The gateway drops any such header a client sent; a service
accepts the header only if the signature verifies (constant-time compare) and ``exp`` (a few
seconds ahead) has not passed, so a header captured from a log is worth little and one a client
makes up is worth nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["HEADER", "Identity", "sign_identity", "verify_identity"]

HEADER = "x-redkit-identity"
LIFETIME = 30.0
MAX_HEADER = 2048


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"redkit-platform identity v1", hashlib.sha256).digest()


@dataclass(frozen=True)
class Identity:
    """Who is calling: ``user_id`` None for an anonymous request."""

    user_id: str | None
    type: str  # anonymous | user | premium | admin
    session_prefix: str | None = None
    ip: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.user_id is None


ANONYMOUS = Identity(None, "anonymous")


def sign_identity(identity: Identity, secret: str, *, now: float | None = None) -> str:
    payload: dict[str, Any] = {
        "uid": identity.user_id,
        "type": identity.type,
        "sid": identity.session_prefix,
        "ip": identity.ip,
        "exp": round((time.time() if now is None else now) + LIFETIME, 3),
    }
    body = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=")
    mac = base64.urlsafe_b64encode(hmac.new(_key(secret), body, hashlib.sha256).digest())
    return (body + b"." + mac.rstrip(b"=")).decode()


def verify_identity(value: str | None, secret: str, *, now: float | None = None) -> Identity | None:
    """The identity in a header value, or None if it is missing, forged or expired."""
    if not value or len(value) > MAX_HEADER or value.count(".") != 1:
        return None
    body, _, signature = value.encode().partition(b".")
    expected = base64.urlsafe_b64encode(hmac.new(_key(secret), body, hashlib.sha256).digest())
    if not hmac.compare_digest(expected.rstrip(b"="), signature):
        return None
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
        expires = float(payload["exp"])
        uid = payload["uid"]
        kind = str(payload["type"])
    except (ValueError, KeyError, TypeError):
        return None
    if expires < (time.time() if now is None else now):
        return None
    return Identity(
        user_id=None if uid is None else str(uid),
        type=kind,
        session_prefix=payload.get("sid"),
        ip=payload.get("ip"),
    )
