"""Values as JSON (orjson), with a size cap; durations as seconds. Never pickle.

Every primitive stores user data through :func:`dumps` so that a value that is not JSON, or
is larger than the configured cap, is refused with :class:`~redkit.errors.InvalidInput`
*before* anything is written.

NaN and the infinities are not JSON: orjson writes them as ``null``, so a stored ``nan`` would
read back as ``None``. :func:`dumps` refuses them instead. Walking every value in Python to
find them costs more than the encoding itself, so the walk runs only when the encoded text
contains ``null`` (a ``None``, a non-finite float, or the word inside a string): a value
without one pays a substring search (~0.1 µs), a value with one pays the walk.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from datetime import timedelta
from typing import Any

import orjson

from redkit.errors import InvalidInput

__all__ = ["DEFAULT_MAX_BYTES", "dumps", "loads", "milliseconds", "refuse_non_finite", "seconds"]

DEFAULT_MAX_BYTES = 1024 * 1024
"""Default cap on one stored value (1 MiB); each primitive lets the caller change it."""


def dumps(value: Any, *, max_bytes: int = DEFAULT_MAX_BYTES, what: str = "value") -> bytes:
    """``value`` as JSON bytes; InvalidInput if it is not JSON-serialisable or too large."""
    try:
        data = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise InvalidInput(f"{what} is not JSON-serialisable: {exc}") from exc
    # count(), not ``in``: the operator first tries the needle as an int, twice the cost.
    # A bare None (a session field cleared, say) needs no walk.
    if data.count(b"null") and value is not None:
        refuse_non_finite(value, what, keys=data.find(b'"null":') >= 0)
    if len(data) > max_bytes:
        raise InvalidInput(
            f"{what} is {len(data):,} bytes as JSON, over the {max_bytes:,}-byte cap; "
            "store less, or raise the cap (max_bytes=...)"
        )
    return data


def refuse_non_finite(value: Any, what: str = "value", *, keys: bool = True) -> None:
    """Raise :class:`InvalidInput` if ``value`` holds a NaN or an infinite float.

    For a value that orjson has already encoded (so it is no deeper than orjson's limit and
    holds no cycle); it looks where orjson looks: mapping values (and keys, unless ``keys``
    is false), list and tuple items, dataclass fields, enum values. :func:`dumps` calls it
    only when the encoded text holds ``null``, as orjson writes every non-finite float, and
    looks at keys only when it holds a ``"null":`` key.
    """
    # Per item: one type() and a comparison or two; containers go on a stack (orjson already
    # bounded the depth). This walk runs on every payload that holds a None, so exact
    # built-in types come first and everything else takes the slow _children().
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        item = pop()
        kind = type(item)
        if kind is dict:
            items: Any = item.values()
            if keys:
                push(list(item))  # float keys are allowed (OPT_NON_STR_KEYS)
        elif kind is list or kind is tuple:
            items = item
        else:
            items = (item,)
        for child in items:
            kind = type(child)
            if kind is float:
                if not math.isfinite(child):
                    raise InvalidInput(
                        f"{what} holds {child!r}, which is not JSON (it would be stored as "
                        "null); store None, a string or a finite number instead"
                    )
            elif kind in _LEAVES:
                pass
            elif kind is dict or kind is list or kind is tuple:
                push(child)
            else:
                push(_children(child))


_LEAVES = frozenset({str, int, bool, type(None)})


def _children(item: Any) -> Any:
    """What orjson encodes of an object that is not an exact built-in type, as a container."""
    if isinstance(item, enum.Enum):
        return [item.value]
    if isinstance(item, dict):
        return dict(item)
    if isinstance(item, list | tuple):
        return list(item)
    if isinstance(item, float):
        return [float(item)]
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return [getattr(item, f.name) for f in dataclasses.fields(item)]
    return ()  # str and int subclasses, datetimes, UUIDs...: no float inside


def loads(data: bytes | str | None) -> Any:
    """Parse JSON written by :func:`dumps` (``None`` stays ``None``)."""
    if data is None:
        return None
    return orjson.loads(data)


def seconds(value: float | timedelta, what: str = "duration", *, allow_zero: bool = False) -> float:
    """A duration given as seconds (int/float) or a ``timedelta``, as float seconds.

    Raises InvalidInput for a negative, NaN or infinite value, and for zero unless
    ``allow_zero``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | timedelta):
        raise InvalidInput(f"{what} must be seconds (int or float) or a timedelta, got {value!r}")
    result = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if math.isnan(result) or math.isinf(result) or result < 0 or (result == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidInput(f"{what} must be a finite number of seconds {bound}, got {value!r}")
    return result


def milliseconds(
    value: float | timedelta, what: str = "duration", *, allow_zero: bool = False
) -> int:
    """Like :func:`seconds`, as whole milliseconds (at least 1 unless zero is allowed)."""
    ms = round(seconds(value, what, allow_zero=allow_zero) * 1000)
    return ms if allow_zero else max(1, ms)
