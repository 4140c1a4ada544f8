"""The hook point of optional tracing: primitives mark their operations with :func:`traced`.

This module imports nothing of OpenTelemetry: the spans are made by :mod:`redkit.otel`, which
only loads when tracing is switched on (``redkit.connect(..., tracing=True)`` or
``redkit.otel.instrument(rk)``). With tracing off, ``rk.tracing`` is ``None`` and a marked
method costs one attribute read and one extra call: the decorated coroutine function hands
back the undecorated method's coroutine itself, with no frame of its own in between.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from operator import attrgetter
from typing import Any, TypeVar, cast

__all__ = ["traced"]

F = TypeVar("F", bound=Callable[..., Any])


def traced(operation: str, rk: str = "rk") -> Callable[[F], F]:
    """Mark a method of a primitive as the redkit operation ``operation`` (``"session.get"``).

    ``rk`` is the attribute path from the object to its :class:`~redkit.Redkit` (``"rk"``,
    ``"_rk"``, ``"semaphore.rk"``). What a span of the operation says (its kind, name and
    attributes) is decided in :mod:`redkit.otel`, in one table, not here.
    """
    get_rk = attrgetter(rk)

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            def call_async(self: Any, *args: Any, **kwargs: Any) -> Any:
                tracing = get_rk(self).tracing
                if tracing is None:
                    return fn(self, *args, **kwargs)
                return tracing.run_async(operation, fn, self, args, kwargs)

            # Python >= 3.12: inspect.iscoroutinefunction still answers True for the method.
            mark = getattr(inspect, "markcoroutinefunction", None)
            return cast("F", call_async if mark is None else mark(call_async))

        # The sync API (generated from the async source) marks its plain methods.
        @functools.wraps(fn)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            tracing = get_rk(self).tracing
            if tracing is None:
                return fn(self, *args, **kwargs)
            return tracing.run_sync(operation, fn, self, args, kwargs)

        return cast("F", call)

    return decorate
