"""Views of the test project: a page cached with Django's own ``cache_page``, and views that
compute through ``get_or_set`` / ``aget_or_set`` (counted, so a test sees when they ran)."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

from django.contrib.auth import BACKEND_SESSION_KEY, SESSION_KEY
from django.core.cache import cache
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import cache_page

from django_ import tasks
from redkit.django.ratelimit import ratelimit
from redkit.django.tasks import (
    InvalidTaskArguments,
    TaskResultDoesNotExist,
    TaskResultStatus,
    default_task_backend,
)

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


# -- tasks (redkit.django.tasks.RedkitBackend) ---------------------------------------------------


class _Rollback(Exception):
    pass


def _task_body(result: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": result.id,
        "status": str(result.status),
        "attempts": result.attempts,
        "errors": [
            {"exception": e.exception_class_path, "traceback": e.traceback} for e in result.errors
        ],
    }
    if result.status == TaskResultStatus.SUCCESSFUL:
        body["return_value"] = result.return_value
    return body


def task_add(request: HttpRequest) -> JsonResponse:
    result = tasks.add.enqueue(int(request.GET["a"]), int(request.GET["b"]))
    return JsonResponse(_task_body(result))


async def task_mail(request: HttpRequest) -> JsonResponse:
    result = await tasks.send_mail.aenqueue(request.GET["to"], subject=request.GET.get("s", ""))
    return JsonResponse(_task_body(result))


def task_charge(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_task_body(tasks.charge.enqueue(int(request.GET["amount"]))))


def task_later(request: HttpRequest) -> JsonResponse:
    run_after = timezone.now() + timedelta(seconds=float(request.GET["seconds"]))
    result = tasks.add.using(run_after=run_after).enqueue(20, 22)
    return JsonResponse({**_task_body(result), "run_after": run_after.timestamp()})


def task_bad_arguments(request: HttpRequest) -> JsonResponse:
    try:
        tasks.add.enqueue(timezone.now(), 1)
    except InvalidTaskArguments as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"error": "enqueued a datetime"}, status=500)


def task_order(request: HttpRequest) -> JsonResponse:
    """An order written and its confirmation task enqueued in one transaction, which commits
    or (``?outcome=rollback``) rolls back."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, note TEXT)")
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO orders (note) VALUES (%s)", ["new"])
                order_id = cursor.lastrowid
            result = tasks.confirm_order.enqueue(order_id)
            try:
                default_task_backend.get_result(result.id)
                visible_inside = True
            except TaskResultDoesNotExist:
                visible_inside = False
            if request.GET.get("outcome") == "rollback":
                raise _Rollback
    except _Rollback:
        pass
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM orders WHERE id = %s", [order_id])
        (stored,) = cursor.fetchone()
    return JsonResponse({"id": result.id, "visible_inside": visible_inside, "stored": stored})


def task_result(request: HttpRequest, result_id: str) -> JsonResponse:
    try:
        result = default_task_backend.get_result(result_id)
    except TaskResultDoesNotExist:
        return JsonResponse({"error": "no such task result"}, status=404)
    return JsonResponse(_task_body(result))


async def atask_result(request: HttpRequest, result_id: str) -> JsonResponse:
    try:
        result = await default_task_backend.aget_result(result_id)
    except TaskResultDoesNotExist:
        return JsonResponse({"error": "no such task result"}, status=404)
    return JsonResponse(_task_body(result))


# -- tiers (redkit.django.tiers.TieredRateLimitMiddleware) ----------------------------------


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
