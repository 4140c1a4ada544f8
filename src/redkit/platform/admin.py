"""Admin endpoints of the projects service: ``GET /api/admin/mail``.

``GET /api/admin/mail?limit=20&offset=0``: what the SMTP sink received (its bounded history,
:func:`redkit.platform.mail.received`), newest first, ``limit`` 1..100 per page, ``offset``
0..1000; the answer's ``next_offset`` is the next page's ``offset`` (None on the last page).
Admins only: 401 JSON without a signed-in user, 403 JSON for one who is not an admin.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request

from redkit.platform.identity import Identity
from redkit.platform.mail import received

__all__ = ["MAX_MAIL_OFFSET", "MAX_MAIL_PAGE", "install_admin"]

MAX_MAIL_PAGE = 100
MAX_MAIL_OFFSET = 1000  # the sink keeps ~500 messages: deeper pages are empty anyway


def install_admin(app: FastAPI, caller: Any) -> None:
    """Add the admin routes; ``caller(request)`` is the service's signed-identity check."""
    router = APIRouter()

    @router.get("/api/admin/mail")
    async def mail(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=MAX_MAIL_PAGE)] = 20,
        offset: Annotated[int, Query(ge=0, le=MAX_MAIL_OFFSET)] = 0,
    ) -> dict[str, Any]:
        who: Identity = caller(request)  # 401 without a signed-in user
        if who.type != "admin":
            raise HTTPException(403, detail="admins only")
        # One bounded read of the newest offset+limit+1 (the +1 says whether a page follows).
        newest = await received(request.app.state.platform.rk, offset + limit + 1)
        page = newest[offset : offset + limit]
        more = len(newest) > offset + limit
        return {
            "messages": page,
            "limit": limit,
            "offset": offset,
            "next_offset": offset + limit if more else None,
        }

    app.include_router(router)
