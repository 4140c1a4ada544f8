"""An app on a real uvicorn server in the test's own event loop (the HTTP tests' one helper)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from redkit.embedded import find_free_port


@asynccontextmanager
async def serve_in_loop(app: Any, **config: Any) -> AsyncIterator[str]:
    """``app`` on uvicorn on loopback (a free port), in this event loop, until the block ends.

    Yields the base URL, or with ``uds=path`` the socket's path. ``config``: any other
    ``uvicorn.Config`` option (``lifespan``, ``timeout_graceful_shutdown``, ``ws``, ...).
    """
    uds = config.get("uds")
    if uds is None:
        config["port"] = port = find_free_port()
    config.setdefault("host", "127.0.0.1")
    config.setdefault("log_level", "warning")
    server = uvicorn.Server(uvicorn.Config(app, **config))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(1000):  # bounded: 10 s
            if server.started:
                break
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)
        yield uds if uds is not None else f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
