"""Views of the test project: a page cached with Django's own ``cache_page``, and views that
compute through ``get_or_set`` / ``aget_or_set`` (counted, so a test sees when they ran)."""

from __future__ import annotations

import itertools

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import cache_page

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
