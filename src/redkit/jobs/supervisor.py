"""``redkit worker --processes N``: N worker processes under one supervisor.

One Python process runs one event loop on one core. The supervisor starts N children, each a
full ``redkit worker`` (its own event loop, connections and worker id), and stays out of the
jobs' way: it holds no connection and claims nothing, so a child's crash costs only that
child's running jobs (their leases expire and any worker takes them up again).

- A child that exits while the supervisor runs is started again after a backoff that doubles
  with each quick crash (0.5 s, 1 s, 2 s, ... at most 30 s) and resets once a child has lived
  for 30 s, so a broken deployment does not spin.
- SIGTERM or SIGINT to the supervisor is sent on to every child as SIGTERM: each stops
  claiming and lets its running jobs finish for its grace period. Children still alive
  ``grace`` + 10 s later are killed.
- Each child is in a process group of its own (a terminal's Ctrl-C reaches the supervisor
  alone, which forwards it once) and, on Linux, is sent SIGTERM by the kernel should the
  supervisor itself die: no orphan keeps running jobs unsupervised.
- Each child's line in ``redkit jobs workers`` names the supervisor's pid, the child's index
  and its restarts (the environment tells the child).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from redkit.errors import InvalidInput

__all__ = ["Supervisor", "parse_processes"]

log = logging.getLogger("redkit.jobs.supervisor")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
HEALTHY_AFTER = 30.0
"""A child that lived this long (seconds) is healthy: its next crash restarts it at once."""
KILL_MARGIN = 10.0
POLL = 0.1


def parse_processes(value: str | int) -> int:
    """``--processes``: an int >= 1, or ``auto`` (the CPUs this process may run on)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"--processes must be a number >= 1 or 'auto', got {value!r}") from None
    if n < 1:
        raise InvalidInput(f"--processes must be a number >= 1 or 'auto', got {value!r}")
    return n


@dataclass
class _Child:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    quick_crashes: int = 0
    start_at: float = 0.0


def _child_setup() -> None:
    """In the child, before exec: a process group of its own, and SIGTERM on the parent's
    death (Linux's PR_SET_PDEATHSIG; elsewhere the children outlive a SIGKILLed parent)."""
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


class Supervisor:
    """Runs ``argv`` (one ``redkit worker`` without ``--processes``) ``processes`` times."""

    def __init__(self, argv: Sequence[str], processes: int, grace: float) -> None:
        if processes < 1:
            raise InvalidInput(f"processes must be >= 1, got {processes!r}")
        self.argv = list(argv)
        self.children = [_Child(i) for i in range(processes)]
        self.grace = grace
        self._signal: int | None = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signal = signum

    def _start(self, child: _Child) -> None:
        env = {
            **os.environ,
            "REDKIT_SUPERVISOR_PID": str(os.getpid()),
            "REDKIT_WORKER_INDEX": str(child.index),
            "REDKIT_WORKER_RESTARTS": str(child.restarts),
        }
        child.proc = subprocess.Popen(
            self.argv, env=env, stdin=subprocess.DEVNULL, preexec_fn=_child_setup
        )
        child.started = time.monotonic()
        log.info("child %d started: pid %d", child.index, child.proc.pid)

    def _reap(self, child: _Child, code: int) -> None:
        assert child.proc is not None
        lived = time.monotonic() - child.started
        child.quick_crashes = 0 if lived >= HEALTHY_AFTER else child.quick_crashes + 1
        delay = 0.0
        if child.quick_crashes:
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (child.quick_crashes - 1))
        log.warning(
            "child %d (pid %d) exited with %d after %.1f s; restarting in %.1f s",
            child.index,
            child.proc.pid,
            code,
            lived,
            delay,
        )
        child.proc = None
        child.restarts += 1
        child.start_at = time.monotonic() + delay

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT, then stop the children; returns the exit code."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            while self._signal is None:
                now = time.monotonic()
                for child in self.children:
                    if child.proc is None:
                        if now >= child.start_at:
                            self._start(child)
                    elif (code := child.proc.poll()) is not None:
                        self._reap(child, code)
                time.sleep(POLL)
            return self._stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop(self) -> int:
        live = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        log.info("signal %s: stopping %d child(ren)", self._signal, len(live))
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace + KILL_MARGIN
        worst = 0
        for proc in live:
            try:
                code = proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("child pid %d outlived its grace period: killed", proc.pid)
                proc.kill()
                code = proc.wait()
            worst = worst or (code if code > 0 else 0)
        return worst
