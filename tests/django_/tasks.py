"""The test project's tasks (found by the worker as the ``tasks`` module of the installed app
``django_``)."""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from django.tasks import task
except ImportError:  # Django < 6.0: the backport
    from django_tasks import task


class PaymentDeclined(Exception):
    """What a failing task raises."""


@task  # type: ignore[untyped-decorator]  # Django ships no type hints
def add(a: int, b: int) -> int:
    return a + b


@task(queue_name="mail", priority=10)  # type: ignore[untyped-decorator]
async def send_mail(to: str, subject: str = "") -> dict[str, Any]:
    return {"to": to, "subject": subject}


@task  # type: ignore[untyped-decorator]
def charge(amount: int) -> None:
    raise PaymentDeclined(f"card declined for {amount}")


@task  # type: ignore[untyped-decorator]
async def acharge(amount: int) -> None:
    raise PaymentDeclined(f"card declined for {amount}")


@task(takes_context=True)  # type: ignore[untyped-decorator]
def which_attempt(context: Any, label: str) -> dict[str, Any]:
    return {"label": label, "attempt": context.attempt, "id": context.task_result.id}


@task  # type: ignore[untyped-decorator]
def confirm_order(order_id: int) -> int:
    return order_id


@task  # type: ignore[untyped-decorator]
def bad_return() -> object:
    return object()


@task(takes_context=True)  # type: ignore[untyped-decorator]
async def declined_then_stuck(context: Any) -> None:
    """Attempt 1 raises; attempt 2 outlives its timeout (the worker cancels it)."""
    if context.attempt == 1:
        raise PaymentDeclined("first attempt")
    await asyncio.sleep(30)


def not_a_task(payload: Any) -> str:
    """A plain function of this module: a job naming it must never run it."""
    raise AssertionError("a job ran a function that is not a registered task")
