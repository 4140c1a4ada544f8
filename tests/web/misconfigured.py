"""Apps that must not start: ``uvicorn web.misconfigured:short_key`` and friends."""

import os

from fastapi import FastAPI

from redkit.web import RateLimitConfig, RedkitWeb, SessionConfig

WHICH = os.environ.get("MISCONFIGURED", "")

app = FastAPI()
if WHICH == "short_key":
    # Checked where it is written: the import fails with redkit's message.
    RedkitWeb(app, sessions=SessionConfig(signing_key="too-short"))
elif WHICH == "bad_cache_name":
    # Only the cache itself checks its name: the app's start-up fails.
    from redkit.web import CacheConfig

    RedkitWeb(app, cache=CacheConfig(name="no spaces allowed"))
else:
    # A server that does not answer (REDIS_URL points at a closed port): start-up fails.
    RedkitWeb(app, rate_limits=RateLimitConfig())
