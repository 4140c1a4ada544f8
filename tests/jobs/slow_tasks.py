"""A functions module that takes its time to import (``redkit worker jobs.slow_tasks``): it
writes ``$JOBS_TEST_MARKER`` when its import begins, then sleeps, so that a test can signal a
worker that is still starting up."""

from __future__ import annotations

import os
import time
from pathlib import Path

Path(os.environ["JOBS_TEST_MARKER"]).write_text("importing")
time.sleep(float(os.environ.get("JOBS_TEST_IMPORT_SLEEP", "5")))


async def noop(payload: object) -> None:
    return None


functions = {"noop": noop}
