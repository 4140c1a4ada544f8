"""The test project's users: Django's own auth middleware and session login, with an
authentication backend that keeps its users in memory (the project has no database)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest

from redkit.django.tiers import staff_tier
from redkit.ratelimit.policy import Identity

STAFF_ID = 7
PREMIUM_ID = 9


@dataclass(frozen=True)
class User:
    """What the middleware reads of a user: signed in, its pk, staff or not."""

    pk: int
    is_staff: bool = False
    premium: bool = False
    is_authenticated: bool = True
    is_active: bool = True


class MemoryBackend:
    """``AUTHENTICATION_BACKENDS`` entry: every user ID is a user; 7 is staff, 9 premium."""

    def get_user(self, user_id: Any) -> User:
        pk = int(user_id)
        return User(pk, is_staff=pk == STAFF_ID, premium=pk == PREMIUM_ID)

    async def aget_user(self, user_id: Any) -> User:
        return self.get_user(user_id)


def tier_of(user: User) -> str | None:
    """A project's ``TIER_OF``: premium users by their flag, staff as the default does."""
    return "premium" if user.premium else staff_tier(user)


async def atier_of(user: User) -> str | None:
    """The same, as an ``async def`` (awaited on the async path)."""
    return tier_of(user)


def by_api_key(request: HttpRequest) -> Identity | None:
    """An ``IDENTIFY``: callers with an ``X-Api-Key`` header are premium, by that key."""
    key = request.headers.get("X-Api-Key")
    return Identity("premium", key) if key else None
