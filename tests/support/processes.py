"""Real ``manage.py listen`` processes for tests: started, awaited, and always stopped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from django.db import connection, connections

from pgpubsub import testing
from pgpubsub.testing import descendants, is_running  # noqa: F401 (for the tests)

MANAGE_PY = Path(__file__).resolve().parents[2] / "testapp" / "manage.py"


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


class ListenProcess(testing.ListenProcess):
    """A running ``manage.py listen`` (see :class:`pgpubsub.testing.ListenProcess`)."""

    def wait_for_output(self, text: str, count: int = 1, timeout: float = 30.0) -> None:
        """Wait until the output holds ``text`` ``count`` times (what is logged, not readiness:
        wait for that with :meth:`wait_for_workers`)."""
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

    def wait_for_workers(self, count: int, timeout: float = 30.0) -> list[int]:
        """Wait until ``count`` workers listen; return the workers' pids, by worker number."""
        return self.wait_ready(count, timeout)


@contextmanager
def listen_process(*args: str, env: dict[str, str] | None = None) -> Iterator[ListenProcess]:
    """Run ``manage.py listen *args`` against the test database until the block ends."""
    log_dir = tempfile.mkdtemp(prefix="pgpubsub-listen-")
    full_env = {**os.environ, **test_database_env()}
    full_env.update(env or {})
    handle = ListenProcess.start(MANAGE_PY, *args, env=full_env, log_dir=log_dir)
    try:
        yield handle
    finally:
        handle.stop(timeout=20)
        shutil.rmtree(log_dir, ignore_errors=True)


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
