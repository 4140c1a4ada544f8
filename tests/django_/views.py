"""Views of the test project: a page cached with Django's own ``cache_page``, and views that
compute through ``get_or_set`` / ``aget_or_set`` (counted, so a test sees when they ran)."""

from __future__ import annotations

import itertools

from django.contrib.auth import BACKEND_SESSION_KEY, SESSION_KEY
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import cache_page

from redkit.django.ratelimit import ratelimit

renders = itertools.count()
computes = itertools.count()


@cache_page(60)  # type: ignore[untyped-decorator]  # Django ships no type hints
def cached_page(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"render {next(renders)}")


def report(request: HttpRequest, name: str) -> JsonResponse:
    value = cache.get_or_set(
        f"report:{name}", lambda: {"name": name, "n": next(computes)}, 60, tags=[name]
    )
    return JsonResponse(value)


async def areport(request: HttpRequest, name: str) -> JsonResponse:
    value = await cache.aget_or_set(
        f"report:{name}", lambda: {"name": name, "n": next(computes)}, 60, tags=[name]
    )
    return JsonResponse(value)


def invalidate(request: HttpRequest, name: str) -> JsonResponse:
    return JsonResponse({"deleted": cache.invalidate(name)})


def session_put(request: HttpRequest) -> JsonResponse:
    for name, value in request.GET.items():
        request.session[name] = value
    return JsonResponse(dict(request.session))


def session_drop(request: HttpRequest, name: str) -> JsonResponse:
    request.session.pop(name, None)
    return JsonResponse(dict(request.session))


def session_show(request: HttpRequest) -> JsonResponse:
    return JsonResponse(dict(request.session))


def session_login(request: HttpRequest, user_id: str) -> JsonResponse:
    """What django.contrib.auth.login does to the session: a new key, then the user's ID."""
    request.session.cycle_key()
    request.session[SESSION_KEY] = user_id
    return JsonResponse(dict(request.session))


def session_logout(request: HttpRequest) -> JsonResponse:
    request.session.flush()
    return JsonResponse({})


@ratelimit(key="ip", rate="2/m")
def limited(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


@ratelimit(key="ip", rate="2/m")
async def alimited(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


@ratelimit(key="header:x-api-key", rate="1/h", block=False, algorithm="gcra")
def soft(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"limited": request.limited})


@ratelimit(group="writes", key="user_or_ip", rate="1/d", method="POST")
def writes(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"method": request.method})


def _rate_for(group: str, request: HttpRequest) -> str | None:
    return None if request.GET.get("vip") else "1/10m"


@ratelimit(key="get:who", rate=_rate_for)
def tiered(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def tiers_login(request: HttpRequest, user_id: int) -> JsonResponse:
    """What django.contrib.auth.login leaves in the session, for django_.auth's users."""
    request.session.cycle_key()
    request.session[SESSION_KEY] = str(user_id)
    request.session[BACKEND_SESSION_KEY] = "django_.auth.MemoryBackend"
    return JsonResponse({"user": user_id})


def whoami(request: HttpRequest) -> JsonResponse:
    user = request.user
    return JsonResponse({"user": user.pk if user.is_authenticated else None})


async def awhoami(request: HttpRequest) -> JsonResponse:
    user = await request.auser()
    return JsonResponse({"user": user.pk if user.is_authenticated else None})
