"""Push, not polling: one ticker per dashboard app reads the state once per tick and sends
each open dashboard the fragments that changed.

However many tabs are open, the process reads Redis once per tick for each distinct view
that is open (the overview, one queue's page, one job, ...), renders it once per role, and
hands the same HTML to every stream showing it. The ticker runs only while a stream is
open, so an idle dashboard costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from redkit.dashboard.security import Role
from redkit.errors import RedkitError

log = logging.getLogger("redkit.dashboard")

HISTORY_POINTS = 150
"""Sparkline points kept per series (bounded): at a tick of 2 s, the last 5 minutes."""
MAX_TOPICS = 256
"""Distinct views read per tick at most (bounds the ticker's work whatever clients ask)."""
MAX_STREAMS = 500
"""Open dashboard streams per app at most (each is a connection of its own)."""

Topic = tuple[Hashable, ...]
Sampler = Callable[[set[Hashable]], Awaitable[dict[str, Any]]]
"""Reads the state the open views need (called with the kinds of the open topics)."""
Renderer = Callable[[Topic, Role, dict[str, Any]], Awaitable[str]]


@dataclass(eq=False)
class Stream:
    """One open dashboard: the views it shows and what it was last sent."""

    topics: dict[str, Topic]
    """key in the page (``data-live``) -> the view's topic."""
    role: Role
    sent: dict[str, str] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, key: str, html: str) -> None:
        if self.sent.get(key) == html:
            return
        # Coalesced: a slow reader gets the latest fragment, never a growing backlog.
        self.pending[key] = html
        self.wake.set()

    def take(self) -> dict[str, str]:
        out, self.pending = self.pending, {}
        self.sent.update(out)
        self.wake.clear()
        return out


class History:
    """Bounded series for sparklines: name -> the last :data:`HISTORY_POINTS` values."""

    def __init__(self) -> None:
        self.series: dict[str, deque[float]] = {}

    def add(self, name: str, value: float) -> None:
        if name not in self.series:
            if len(self.series) >= 1000:
                return  # bounded: a namespace with thousands of queues gets no more series
            self.series[name] = deque(maxlen=HISTORY_POINTS)
        self.series[name].append(float(value))

    def get(self, name: str) -> list[float]:
        return list(self.series.get(name, ()))


class Broadcaster:
    """The ticker and the open streams of one dashboard app."""

    def __init__(self, sample: Sampler, render: Renderer, interval: float) -> None:
        self.sample = sample
        self.render = render
        self.interval = interval
        self.streams: set[Stream] = set()
        self.history = History()
        self.last_sample: dict[str, Any] = {}
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    def open(self, topics: dict[str, Topic], role: Role) -> Stream:
        if len(self.streams) >= MAX_STREAMS:
            raise RedkitError("too many open dashboards on this process")
        stream = Stream(topics, role)
        self.streams.add(stream)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="redkit-dashboard-ticker"
            )
        return stream

    def close(self, stream: Stream) -> None:
        self.streams.discard(stream)
        if not self.streams and self._task is not None:
            self._task.cancel()
            self._task = None

    async def aclose(self) -> None:
        task, self._task = self._task, None
        self.streams.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def tick(self) -> None:
        """Read once, render each open view once per role, offer it to its streams."""
        began = time.monotonic()
        kinds = {topic[0] for stream in self.streams for topic in stream.topics.values()}
        self.last_sample = await self.sample(kinds)
        self.ticks += 1
        wanted: dict[tuple[Topic, Role], list[tuple[Stream, str]]] = {}
        for stream in list(self.streams):
            for key, topic in stream.topics.items():
                slot = wanted.setdefault((topic, stream.role), [])
                if len(wanted) > MAX_TOPICS:
                    wanted.pop((topic, stream.role))
                    continue
                slot.append((stream, key))
        pairs = list(wanted)
        rendered = await asyncio.gather(
            *(self.render(topic, role, self.last_sample) for topic, role in pairs),
            return_exceptions=True,
        )
        for pair, html in zip(pairs, rendered, strict=True):
            if isinstance(html, BaseException):
                if not isinstance(html, RedkitError):
                    log.error("dashboard view %r failed", pair[0], exc_info=html)
                continue
            for stream, key in wanted[pair]:
                stream.offer(key, html)
        log.debug(
            "dashboard tick: %d views in %.1f ms", len(pairs), (time.monotonic() - began) * 1e3
        )

    async def _run(self) -> None:
        while self.streams:
            try:
                await self.tick()
            except RedkitError as exc:
                log.warning("dashboard tick failed: %s", exc)
            except Exception:
                log.exception("dashboard tick failed")
            await asyncio.sleep(self.interval)
