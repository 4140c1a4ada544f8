"""The threading twins of what the async source takes from ``asyncio``.

``tools/async_to_sync.py`` rewrites ``asyncio.X`` in the async source to ``_compat.X`` here;
a name missing from this module (and from the tool's ASYNCIO list) stops the generation,
so a new ``asyncio`` call in the async source is either given a twin here or marked with
``IS_ASYNC`` (see :mod:`redkit._codegen`).

In sync code the arguments of ``asyncio.gather(a(), b())`` are already results (the calls
ran, one after the other, as Python evaluated them), and ``asyncio.to_thread(f, x)`` is a
plain call: the caller's thread is the one that may block.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["gather", "sleep", "to_thread"]

_T = TypeVar("_T")
_P = ParamSpec("_P")


def gather(*results: _T) -> list[_T]:
    """The results, in order (they were computed as the arguments were evaluated)."""
    return list(results)


def sleep(delay: float) -> None:
    """Block the calling thread for ``delay`` seconds."""
    time.sleep(delay)


def to_thread(function: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Call ``function`` here: a sync caller is already on the thread that may block."""
    return function(*args, **kwargs)
