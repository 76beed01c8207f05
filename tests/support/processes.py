"""Real ``manage.py listen`` processes for tests: started, awaited, and always stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import connection, connections

MANAGE_PY = Path(__file__).resolve().parents[2] / "testapp" / "manage.py"

_STARTED_WORKER = re.compile(r"Started worker (\d+) \(pid (\d+)\)")


def wait_for(
    condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, message: str = ""
) -> Any:
    """Poll ``condition`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message or condition}")
        time.sleep(interval)


def test_database_url(alias: str = "default") -> str:
    """The URL of database ``alias`` as the current test uses it (pytest-django's test database)."""
    settings = connections[alias].settings_dict
    password = f":{settings['PASSWORD']}" if settings["PASSWORD"] else ""
    return (
        f"postgres://{settings['USER']}{password}@{settings['HOST']}:{settings['PORT']}"
        f"/{settings['NAME']}"
    )


def test_database_env() -> dict[str, str]:
    """Environment variables pointing a ``manage.py`` subprocess at the test databases.

    DATABASE_URL for "default", OTHER_DATABASE_URL for "other" (testapp/settings.py).
    """
    return {
        "DATABASE_URL": test_database_url("default"),
        "OTHER_DATABASE_URL": test_database_url("other"),
        "PYTHONUNBUFFERED": "1",
    }


@dataclass
class ListenProcess:
    """A running ``manage.py listen``; its combined output goes to a log file."""

    process: subprocess.Popen[bytes]
    log_path: Path
    _closed: bool = field(default=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, count: int = 1, timeout: float = 30.0) -> None:
        wait_for(
            lambda: self.output().count(text) >= count or self.process.poll() is not None,
            timeout,
            message=f"{text!r} x{count} in the output of listen",
        )
        if self.output().count(text) < count:
            raise AssertionError(
                f"listen exited with {self.process.returncode} before printing {text!r}:\n"
                + self.output()
            )

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout=timeout)

    def worker_pids(self) -> dict[int, int]:
        """The pid of each supervised worker slot, as the supervisor last logged it."""
        return {int(slot): int(pid) for slot, pid in _STARTED_WORKER.findall(self.output())}

    def wait_for_workers(self, count: int, timeout: float = 30.0) -> list[int]:
        """Wait until ``count`` workers listen; return the workers' pids, slot by slot."""
        self.wait_for_output("Listening on", count=count, timeout=timeout)
        pids = self.worker_pids()
        return [pids[slot] for slot in sorted(pids)]

    def stop(self) -> None:
        """Stop the process and every worker it started."""
        # Remember the tree first: once the parent exits, its orphans are no longer found
        # through it. Workers it logged are remembered too, in case it was killed already.
        tree = {*descendants(self.process.pid), *self.worker_pids().values()}
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=20)
        # Kill the whole tree: workers run in process groups of their own.
        for pid in {*tree, *descendants(self.process.pid)}:
            if is_running(pid) and _started_by_listen(pid):
                _kill(pid)
        if self.process.poll() is None:
            _kill(self.process.pid)
            self.process.wait(timeout=10)


def is_running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the command name, which is in parentheses and may contain spaces.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _started_by_listen(pid: int) -> bool:
    """Whether ``pid`` runs ``manage.py`` or a multiprocessing child (not a reused pid)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "manage.py" in command or "multiprocessing" in command


def descendants(pid: int) -> list[int]:
    """Children of ``pid``, their children, and so on."""
    children: list[int] = []
    try:
        listing = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
        ).stdout
    except FileNotFoundError:
        return children
    for line in listing.split():
        child = int(line)
        children.append(child)
        children.extend(descendants(child))
    return children


def _kill(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@contextmanager
def listen_process(*args: str, env: dict[str, str] | None = None) -> Iterator[ListenProcess]:
    """Run ``manage.py listen *args`` against the test database until the block ends."""
    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 (outlives this statement)
        prefix="pgpubsub-listen-", suffix=".log", delete=False
    )
    full_env = {**os.environ, **test_database_env()}
    full_env.update(env or {})
    process = subprocess.Popen(
        [sys.executable, str(MANAGE_PY), "listen", *args],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=full_env,
    )
    handle = ListenProcess(process, Path(log_file.name))
    try:
        yield handle
    finally:
        handle.stop()
        log_file.close()
        os.unlink(log_file.name)


def run_manage(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> str:
    """Run ``manage.py *args`` against the test database to its end; return its output.

    Raises ``subprocess.CalledProcessError`` (with the output) when it exits non-zero.
    """
    full_env = {**os.environ, **test_database_env()}
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, str(MANAGE_PY), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )
    if result.returncode:
        raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout)
    return result.stdout


def backend_pids(client_pid: int) -> list[int]:
    """PostgreSQL backend pids serving the TCP connections that process ``client_pid`` holds.

    The client's sockets are found in ``/proc``; their local ports are the ``client_port``
    of the backends in ``pg_stat_activity``.
    """
    inodes = set()
    with suppress(FileNotFoundError):
        for fd in Path(f"/proc/{client_pid}/fd").iterdir():
            with suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    ports = []
    for table in ("tcp", "tcp6"):
        with suppress(FileNotFoundError):
            for line in Path(f"/proc/{client_pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    if not ports:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s) AND pid <> "
            "pg_backend_pid()",
            [ports],
        )
        return sorted(row[0] for row in cursor.fetchall())


def holds_open_transaction(client_pid: int, for_at_least: float = 0.2) -> bool:
    """Whether a connection of process ``client_pid`` is idle in a transaction.

    A worker's connection is idle in a transaction while a callback runs Python code (for
    example sleeps): it then holds the row locks of the messages it claimed. Requiring the
    state to last ``for_at_least`` seconds leaves out the brief ones of a claim that finds
    nothing.
    """
    backends = backend_pids(client_pid)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s) "
            "AND state = 'idle in transaction' AND state_change < now() - %s * interval '1 s'",
            [backends, for_at_least],
        )
        return bool(cursor.fetchone()[0])
