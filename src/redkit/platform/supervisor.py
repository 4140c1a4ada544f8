"""``redkit up``: start every part of the platform, watch them, stop them all cleanly.

In order: the embedded Valkey (unless ``REDIS_URL``), the embedded PostgreSQL (unless
``DATABASE_URL``), the platform database and its tables, the projects' ACL users again (an
embedded Valkey forgets them when it restarts), the SMTP sink (unless ``--smtp-url``), then
one process per service (``auth``, ``projects``, ``worker`` x N, and ``gateway`` last). When
the gateway's ``/healthz`` answers 200 the table of URLs is printed and
``<data dir>/up.json`` written (the parts, their URLs and pids, for tools and tests).

A service process that exits is started again (after 1, 2, 4 ... up to 30 s). SIGINT/SIGTERM
stop the gateway first, then the other services, then the sink, PostgreSQL and Valkey; each
child gets SIGTERM, then SIGKILL after a bounded wait. Every child is also asked (Linux
``PR_SET_PDEATHSIG``) to die if this process dies without cleaning up, so nothing is orphaned.

The embedded Valkey is this process's own (not shared with ``redkit server``): its
unauthenticated ``default`` user may only ``PING``; the platform connects as the ACL user
``redkit`` with a random password kept in ``<data dir>/valkey.password`` (mode 0600). Without
that, a project's ACL user would be pointless: anyone could connect as ``default``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from sqlalchemy import select

import redkit
from redkit.embedded import ValkeyProcess, find_free_port
from redkit.errors import ConfigurationError, EmbeddedServerError
from redkit.platform.auth import ensure_admin
from redkit.platform.config import PlatformConfig, parse_allowed_hosts
from redkit.platform.db import Database, Project
from redkit.platform.mail import MailSink
from redkit.platform.postgres import EmbeddedPostgres, ensure_database
from redkit.platform.provision import Provisioner
from redkit.platform.services import Role

__all__ = ["Part", "Supervisor", "UpOptions"]

PLATFORM_DATABASE = "redkit"
ADMIN_USER = "redkit"


@dataclass
class UpOptions:
    """What ``redkit up`` was given."""

    data_dir: Path = Path(".redkit")
    port: int = 8000
    host: str = "127.0.0.1"
    redis_url: str | None = None
    database_url: str | None = None
    smtp_url: str | None = None
    workers: int = 1
    namespace: str = "platform"
    ready_timeout: float = 90.0


@dataclass
class Part:
    """One row of the table: a server or a service process."""

    name: str
    url: str
    pid: int | None = None
    note: str = ""


@dataclass
class _Child:
    name: str
    role: Role
    port: int
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    log: Path = field(default_factory=Path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _die_with_parent() -> None:
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _secret_file(path: Path, nbytes: int = 32) -> str:
    """The secret kept in ``path`` (created with mode 0600 on first use)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}@{host}" if user else f"{scheme}://{host}"


class Supervisor:
    """Runs the whole platform in this process's foreground (see the module docstring)."""

    def __init__(self, options: UpOptions) -> None:
        self.options = options
        self.data_dir = options.data_dir.resolve()
        self.valkey: ValkeyProcess | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.sink: MailSink | None = None
        self.rk: redkit.Redkit | None = None
        self.children: list[_Child] = []
        self.config: PlatformConfig | None = None
        self.parts: list[Part] = []
        self._stopping = asyncio.Event()

    # -- servers (started in the main thread: PR_SET_PDEATHSIG follows the forking thread) --

    def start_servers(self) -> tuple[str, str]:
        """Start the embedded Valkey and PostgreSQL (unless given URLs); return both URLs."""
        options = self.options
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if options.redis_url:
            redis_url = options.redis_url
            self.parts.append(Part("valkey", _redact(redis_url), note="given"))
        else:
            password = _secret_file(self.data_dir / "valkey.password")
            valkey_dir = self.data_dir / "valkey"
            valkey_dir.mkdir(parents=True, exist_ok=True)
            acl = valkey_dir / "users.acl"
            sha = hashlib.sha256(password.encode()).hexdigest()
            acl.write_text(
                "user default on nopass resetchannels -@all +ping\n"
                f"user {ADMIN_USER} on #{sha} ~* &* +@all\n"
            )
            acl.chmod(0o600)
            self.valkey = ValkeyProcess(
                valkey_dir,
                config={
                    "appendonly": "yes",
                    "appendfsync": "everysec",
                    "save": "",
                    "aclfile": str(acl),
                },
                die_with_parent=True,
            ).start()
            redis_url = (
                f"redis://{ADMIN_USER}:{quote(password, safe='')}@127.0.0.1:{self.valkey.port}"
            )
            self.parts.append(Part("valkey", _redact(redis_url), self.valkey.pid, "embedded"))
        if options.database_url:
            database_url = options.database_url
            self.parts.append(Part("postgres", _redact(database_url), note="given"))
        else:
            self.postgres = EmbeddedPostgres(self.data_dir / "postgres").start()
            database_url = self.postgres.url
            pid = self.postgres.process.pid if self.postgres.process else None
            self.parts.append(Part("postgres", _redact(database_url), pid, "embedded"))
        return redis_url, database_url

    def stop_servers(self) -> None:
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        if self.valkey is not None:
            self.valkey.stop()
            self.valkey = None

    # -- the platform itself -------------------------------------------------------------

    async def prepare(self, redis_url: str, database_url: str) -> PlatformConfig:
        """Platform database and tables, projects' ACL users, the SMTP sink; the config."""
        options = self.options
        platform_url = await ensure_database(database_url, PLATFORM_DATABASE)
        db = Database(platform_url)
        try:
            await db.create_all()
            admin_email = os.environ.get("REDKIT_ADMIN_EMAIL") or "admin@redkit.localhost"
            _, generated = await ensure_admin(
                db, admin_email, os.environ.get("REDKIT_ADMIN_PASSWORD") or None
            )
            if generated is not None:
                self.parts.append(
                    Part("admin", admin_email, note=f"password (shown once): {generated}")
                )
            self.rk = await redkit.connect(redis_url, namespace=options.namespace)
            public_redis = _without_credentials(redis_url)
            provisioner = Provisioner(self.rk, database_url, public_redis)
            async with db.reading() as session:
                projects = (await session.scalars(select(Project))).all()
            for project in projects:
                if project.redis_password_sha256:
                    await provisioner.restore_acl_user(project.name, project.redis_password_sha256)
        finally:
            await db.close()
        if options.smtp_url:
            smtp_url = options.smtp_url
            self.parts.append(Part("smtp", _redact(smtp_url), note="given"))
        else:
            self.sink = await MailSink(self.rk).start()
            smtp_url = self.sink.url
            self.parts.append(Part("smtp sink", smtp_url, os.getpid(), "in this process"))
        secret = _secret_file(self.data_dir / "platform.secret", 48)
        self.children = [
            _Child("auth", "auth", find_free_port()),
            _Child("projects", "projects", find_free_port()),
            *(
                _Child(
                    f"worker-{n}" if options.workers > 1 else "worker", "worker", find_free_port()
                )
                for n in range(1, options.workers + 1)
            ),
            _Child("gateway", "gateway", options.port or find_free_port()),
        ]
        by_role = {c.name: c for c in self.children}
        self.config = PlatformConfig(
            redis_url=redis_url,
            database_url=platform_url,
            secret=secret,
            smtp_url=smtp_url,
            namespace=options.namespace,
            auth_url=by_role["auth"].url,
            projects_url=by_role["projects"].url,
            worker_urls=tuple(c.url for c in self.children if c.role == "worker"),
            project_redis_url=public_redis,
            secure_cookies=options.host not in ("127.0.0.1", "localhost", "::1"),
            allowed_hosts=allowed_hosts(options),
        )
        return self.config

    def _spawn(self, child: _Child) -> None:
        assert self.config is not None
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        child.log = logs / f"{child.name}.log"
        env = {**os.environ, **self.config.to_env()}
        argv = [sys.executable, "-m", "redkit.cli", "up", "--role", child.role]
        argv += ["--port", str(child.port)]
        if child.role == "gateway":
            argv += ["--host", self.options.host]
        with open(child.log, "ab") as log:
            child.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                # Its own session: a terminal's Ctrl-C reaches this process only, which then
                # stops the children in order.
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )

    async def _wait_healthy(
        self, child: _Child, deadline: float, client: httpx.AsyncClient
    ) -> None:
        while True:
            if child.process is not None and child.process.poll() is not None:
                raise EmbeddedServerError(
                    f"{child.name} exited with code {child.process.returncode} during start; "
                    f"its log ({child.log}) ends with:\n{_tail(child.log)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get(f"{child.url}/healthz")
                if response.status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"{child.name} did not become healthy within {self.options.ready_timeout:g} s;"
                    f" its log ({child.log}) ends with:\n{_tail(child.log)}"
                )
            await asyncio.sleep(0.1)

    async def start_children(self) -> None:
        deadline = time.monotonic() + self.options.ready_timeout
        async with httpx.AsyncClient(timeout=3) as client:
            services = [c for c in self.children if c.role != "gateway"]
            for child in services:
                self._spawn(child)
            await asyncio.gather(*(self._wait_healthy(c, deadline, client) for c in services))
            gateway = self.children[-1]
            self._spawn(gateway)
            await self._wait_healthy(gateway, deadline, client)
        for child in self.children:
            assert child.process is not None
            url = child.url
            if child.role == "gateway":
                url = f"http://{self.options.host}:{child.port}"
            self.parts.append(Part(child.name, url, child.process.pid, f"logs/{child.log.name}"))

    async def watch(self) -> None:
        """Restart a child that exited, with backoff, until asked to stop."""
        while not self._stopping.is_set():
            now = time.monotonic()
            for child in self.children:
                process = child.process
                if process is None or process.poll() is None:
                    if process is None and now >= child.next_start:
                        self._spawn(child)
                    continue
                child.restarts += 1
                delay = min(30.0, 2.0 ** min(child.restarts - 1, 5))
                print(
                    f"{child.name} exited with code {process.returncode}; "
                    f"starting it again in {delay:g} s (log: {child.log})",
                    file=sys.stderr,
                    flush=True,
                )
                child.process = None
                child.next_start = now + delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 0.5)

    def stop(self) -> None:
        self._stopping.set()

    async def stop_children(self) -> None:
        timeout = 15.0
        # The gateway first (no new requests), then the services and workers together.
        gateway = [c for c in self.children if c.role == "gateway"]
        others = [c for c in self.children if c.role != "gateway"]
        for group in (gateway, others):
            await asyncio.gather(*(asyncio.to_thread(_terminate, c, timeout) for c in group))

    async def stop_platform(self) -> None:
        await self.stop_children()
        if self.sink is not None:
            await self.sink.stop()
            self.sink = None
        if self.rk is not None:
            await self.rk.close()
            self.rk = None

    def write_state(self) -> Path:
        path = self.data_dir / "up.json"
        state = {
            "pid": os.getpid(),
            # Not the admin row: its generated password is shown once, on the terminal only.
            "parts": [p.__dict__ for p in self.parts if p.name != "admin"],
            "gateway": f"http://{self.options.host}:{self.children[-1].port}",
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)
        return path

    def remove_state(self) -> None:
        with contextlib.suppress(OSError):
            (self.data_dir / "up.json").unlink()


def _terminate(child: _Child, timeout: float) -> None:
    process = child.process
    if process is None:
        return
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    child.process = None


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# The names of this machine a browser may use for a gateway bound to loopback.
LOOPBACK_HOSTS = ("localhost", "*.localhost", "127.0.0.1", "[::1]")


def allowed_hosts(options: UpOptions) -> tuple[str, ...] | None:
    """The gateway's Host names: ``REDKIT_ALLOWED_HOSTS`` if set (``*``: any), else this
    machine's names for a loopback gateway. A gateway on another address must be told its
    public names: guessing would either refuse its users or answer any Host."""
    value = os.environ.get("REDKIT_ALLOWED_HOSTS", "").strip()
    if value:
        return parse_allowed_hosts(value)
    if options.host in ("127.0.0.1", "localhost", "::1"):
        return LOOPBACK_HOSTS
    raise ConfigurationError(
        f"--host {options.host} serves other machines: set REDKIT_ALLOWED_HOSTS to the names "
        "clients use (e.g. REDKIT_ALLOWED_HOSTS=platform.example.com), or to '*' for any Host"
    )


def check_options(options: UpOptions) -> None:
    if options.workers < 1 or options.workers > 32:
        raise ConfigurationError("--workers must be between 1 and 32")
    if not 0 <= options.port <= 65535:
        raise ConfigurationError("--port must be a TCP port (0 for a free one)")
    allowed_hosts(options)


def run(options: UpOptions, on_ready: Any = None) -> int:
    """Run the platform until SIGINT/SIGTERM; the exit code. ``on_ready(parts)`` prints."""
    check_options(options)
    supervisor = Supervisor(options)
    loop = asyncio.new_event_loop()
    stop_requested = False

    def request_stop(signum: int, frame: Any) -> None:
        nonlocal stop_requested
        stop_requested = True
        loop.call_soon_threadsafe(supervisor.stop)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        redis_url, database_url = supervisor.start_servers()

        async def main() -> None:
            try:
                await supervisor.prepare(redis_url, database_url)
                await supervisor.start_children()
                supervisor.write_state()
                if on_ready is not None:
                    on_ready(supervisor.parts)
                if not stop_requested:
                    await supervisor.watch()
            finally:
                await supervisor.stop_platform()

        loop.run_until_complete(main())
        return 0
    finally:
        supervisor.remove_state()
        supervisor.stop_servers()
        loop.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
