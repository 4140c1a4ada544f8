"""Markers that ``tools/async_to_sync.py`` understands, for the few places where the async
source and the sync API it generates (``redkit._sync``) must differ.

``if IS_ASYNC: <async code> else: <sync code>``
    The generator keeps the ``else`` branch (``if not IS_ASYNC:`` keeps the body; when that
    body ends in ``return``, it is an early sync exit and the rest of the block, the async
    version, is dropped). At run time
    ``IS_ASYNC`` is True here, so the async source runs its branch; mypy is told that the
    name is always true (``always_true`` in pyproject.toml), so it checks the sync branch
    only where it matters, in the generated module.

``if IS_ASYNC and condition: a else: b``
    The generator keeps ``b``: an async-only step under a condition.

``x if IS_ASYNC else y``
    The generator keeps ``y``.

``@async_only``
    On a function, method or class: the generator leaves it out of the sync module (a
    concurrency device with no sync counterpart, or a test that only means something with
    an event loop).

Say *why* the two differ in a comment beside the marker: each one is a place the sync API
behaves differently, and the only one.
"""

from __future__ import annotations

from typing import Final, TypeVar

__all__ = ["IS_ASYNC", "async_only"]

IS_ASYNC: Final = True

_T = TypeVar("_T")


def async_only(obj: _T) -> _T:
    """Leave ``obj`` out of the generated sync module (it stays as it is here)."""
    return obj
