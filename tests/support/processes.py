"""Real ``manage.py listen`` processes for tests: started, awaited, and always stopped."""

from __future__ import annotations

import os
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

from django.db import connection

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


def test_database_url() -> str:
    """The URL of the database the current test uses (pytest-django's test database)."""
    settings = connection.settings_dict
    password = f":{settings['PASSWORD']}" if settings["PASSWORD"] else ""
    return (
        f"postgres://{settings['USER']}{password}@{settings['HOST']}:{settings['PORT']}"
        f"/{settings['NAME']}"
    )


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

    def stop(self) -> None:
        """Stop the process and every worker it started."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=20)
        # Kill the whole tree: workers run in process groups of their own.
        for pid in _descendants(self.process.pid):
            _kill(pid)
        if self.process.poll() is None:
            _kill(self.process.pid)
            self.process.wait(timeout=10)


def _descendants(pid: int) -> list[int]:
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
        children.extend(_descendants(child))
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
    full_env = {**os.environ, "DATABASE_URL": test_database_url(), "PYTHONUNBUFFERED": "1"}
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
