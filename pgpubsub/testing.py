"""Run ``manage.py listen`` as a subprocess, know when it is ready, and always stop it.

For tests, benchmarks and demos that need real worker processes. Readiness comes from the
events ``listen --ready-file`` writes (:mod:`pgpubsub.readiness`), never from log wording.

Example::

    with ListenProcess.start("manage.py", "--processes", "2") as process:
        pids = process.wait_ready(workers=2)
        ...  # send messages, watch their effects
    # stopped here: SIGTERM, then SIGKILL for anything still running
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from pgpubsub import readiness

_P = TypeVar("_P", bound="ListenProcess")


class ListenFailed(AssertionError):
    """``listen`` exited, or was not ready in time; the message holds its output."""


def wait_until(
    condition: Callable[[], Any],
    timeout: float,
    message: str,
    interval: float = 0.05,
    on_tick: Callable[[], None] = lambda: None,
) -> Any:
    """Poll ``condition`` until it returns a truthy value, and return that value.

    Raises:
        ListenFailed: ``timeout`` seconds passed (``message`` says what was awaited).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        on_tick()
        if time.monotonic() > deadline:
            raise ListenFailed(f"timed out after {timeout:g} s waiting for {message}")
        time.sleep(interval)


class ListenProcess:
    """A running ``manage.py listen``: its output goes to a log file, its events to another.

    Use :meth:`start`. Every method is safe to call after the process exited.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        log_path: Path,
        ready_path: Path,
        args: Sequence[str],
    ) -> None:
        self.process = process
        self.log_path = log_path
        self.ready_path = ready_path
        self.args = tuple(args)
        self._known_pids: set[int] = set()

    @classmethod
    def start(
        cls: type[_P],
        manage_py: str | Path,
        *args: str,
        env: dict[str, str] | None = None,
        log_dir: str | Path | None = None,
        new_session: bool = False,
    ) -> _P:
        """Start ``python manage_py listen *args --ready-file ...``.

        ``env`` replaces the environment (default: this process's); ``new_session`` keeps a
        terminal's Ctrl-C from reaching it (the caller stops it).
        """
        directory = Path(log_dir or tempfile.mkdtemp(prefix="pgpubsub-listen-"))
        directory.mkdir(parents=True, exist_ok=True)
        stem = f"listen-{os.getpid()}-{time.time_ns()}"
        log_path, ready_path = directory / f"{stem}.log", directory / f"{stem}.events"
        command = [sys.executable, str(manage_py), "listen", *args]
        command += ["--ready-file", str(ready_path)]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PYTHONUNBUFFERED": "1", **(env if env is not None else os.environ)},
                start_new_session=new_session,
            )
        return cls(process, log_path, ready_path, args)

    def __enter__(self) -> ListenProcess:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        """Everything ``listen`` wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The events written so far (of ``kind`` only, if given), oldest first."""
        events = readiness.read_events(self.ready_path)
        return [event for event in events if kind is None or event["event"] == kind]

    def worker_pids(self) -> dict[int, int]:
        """The pid of each supervised worker, by worker number, as last started."""
        pids = {
            event["worker"]: event["worker_pid"] for event in self.events(readiness.WORKER_STARTED)
        }
        self._known_pids.update(pids.values())
        return pids

    def wait_listening(
        self, count: int = 1, timeout: float = 30.0, on_tick: Callable[[], None] = lambda: None
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` "listening" events were written (one per worker and
        connection); return them all. ``on_tick`` runs between two looks."""

        def enough() -> list[dict[str, Any]] | None:
            if self.process.poll() is not None:
                raise ListenFailed(
                    f"listen {' '.join(self.args)} exited with code {self.process.returncode} "
                    f"before {count} worker(s) listened:\n{self.output()}"
                )
            events = self.events(readiness.LISTENING)
            return events if len(events) >= count else None

        try:
            result: list[dict[str, Any]] = wait_until(
                enough, timeout, f"{count} worker(s) to listen", on_tick=on_tick
            )
        except ListenFailed as exc:
            raise ListenFailed(f"{exc}\n{self.output()}") from None
        return result

    def wait_ready(
        self, workers: int = 1, timeout: float = 30.0, on_tick: Callable[[], None] = lambda: None
    ) -> list[int]:
        """Wait until ``workers`` workers listen; return their pids, by worker number.

        Raises:
            ListenFailed: ``listen`` exited first, or ``timeout`` seconds passed.
        """
        events = self.wait_listening(workers, timeout, on_tick)
        by_number = {event["worker"]: event["pid"] for event in events}
        self._known_pids.update(by_number.values())
        return [by_number[number] for number in sorted(by_number)]

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM ``listen`` and wait; then SIGKILL whatever of its tree still runs.

        Returns its exit code (None if it had to be killed).
        """
        # Remember the tree first: once the supervisor exits, its orphans are no longer
        # found through it. Workers it reported are remembered too, in case it died first.
        tree = {*descendants(self.process.pid), *self.worker_pids().values(), *self._known_pids}
        code: int | None = self.process.poll()
        if code is None:
            self.process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                code = self.process.wait(timeout=timeout)
        for pid in {*tree, *descendants(self.process.pid)}:
            if is_running(pid) and _is_python(pid):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        return code


def is_running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may contain spaces.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _is_python(pid: int) -> bool:
    """Whether ``pid`` still runs this Python (not a pid reused by another program)."""
    try:
        return os.readlink(f"/proc/{pid}/exe") == os.path.realpath(sys.executable)
    except OSError:
        return False


def descendants(pid: int) -> list[int]:
    """Children of ``pid``, their children, and so on (read from ``/proc``)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: split after it.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in parents.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found
