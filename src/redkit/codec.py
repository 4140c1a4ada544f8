"""Values as JSON (orjson), with a size cap; durations as seconds. Never pickle.

Every primitive stores user data through :func:`dumps` so that a value that is not JSON, or
is larger than the configured cap, is refused with :class:`~redkit.errors.InvalidInput`
*before* anything is written.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import orjson

from redkit.errors import InvalidInput

__all__ = ["DEFAULT_MAX_BYTES", "dumps", "loads", "milliseconds", "seconds"]

DEFAULT_MAX_BYTES = 1024 * 1024
"""Default cap on one stored value (1 MiB); each primitive lets the caller change it."""


def dumps(value: Any, *, max_bytes: int = DEFAULT_MAX_BYTES, what: str = "value") -> bytes:
    """``value`` as JSON bytes; InvalidInput if it is not JSON-serialisable or too large."""
    try:
        data = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise InvalidInput(f"{what} is not JSON-serialisable: {exc}") from exc
    if len(data) > max_bytes:
        raise InvalidInput(
            f"{what} is {len(data):,} bytes as JSON, over the {max_bytes:,}-byte cap; "
            "store less, or raise the cap (max_bytes=...)"
        )
    return data


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
