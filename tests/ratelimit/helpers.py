"""What the rate-limit HTTP tests share: who the caller is, and a page to limit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse

from redkit.ratelimit.policy import Identity


def identify(scope: Mapping[str, Any]) -> Identity | None:
    """Test identities: an `X-User: tier:id` header (a real app reads its session)."""
    for name, value in scope["headers"]:
        if name == b"x-user":
            tier, _, user = value.decode().partition(":")
            return Identity(tier, user)
    return None


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")
