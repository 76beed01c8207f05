"""The benchmark harness: the database, ``listen`` subprocesses, polling, and statistics.

Nothing here knows about scenarios; ``scenarios.py`` composes these pieces.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgpubsub import testing

BENCH_DIR = Path(__file__).resolve().parent
MANAGE_PY = BENCH_DIR / "manage.py"
DEFAULT_SERVER_URL = "postgres://postgres@127.0.0.1:5432/"


class BenchmarkError(Exception):
    """A scenario could not produce its figures (a timeout, a dead process, a lost message)."""


# --- the database ------------------------------------------------------------------------


def bench_env(database: str, conn_max_age: str = "0") -> dict[str, str]:
    """The environment of the benchmark project's processes (this one and its children)."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "benchsettings",
        "PGPUBSUB_BENCH_DB": database,
        "PGPUBSUB_BENCH_CONN_MAX_AGE": conn_max_age,
        "PYTHONUNBUFFERED": "1",
    }


def recreate_database(database: str, *, create: bool = True) -> None:
    """Drop ``database`` (disconnecting its sessions) and, unless told not to, create it."""
    import psycopg2
    from benchsettings import server_settings
    from psycopg2 import sql

    server = server_settings(os.environ.get("DATABASE_URL", DEFAULT_SERVER_URL))
    connection = psycopg2.connect(
        dbname="postgres",
        user=server["USER"],
        password=server["PASSWORD"],
        host=server["HOST"],
        port=server["PORT"],
    )
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            name = sql.Identifier(database)
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            if create:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(name))
    finally:
        connection.close()


def dsn() -> dict[str, Any]:
    """psycopg2 connection keywords of Django's default database (for raw worker scripts)."""
    from django.db import connection

    params = dict(connection.get_connection_params())
    # Django's own connection options, and those of psycopg 3 when Django uses it.
    for key in ("cursor_factory", "pool", "context", "prepare_threshold"):
        params.pop(key, None)
    return params


# --- waiting -----------------------------------------------------------------------------


def wait_for(
    condition: Callable[[], Any],
    timeout: float,
    message: str,
    interval: float = 0.02,
    on_tick: Callable[[], None] | None = None,
) -> Any:
    """Poll ``condition`` until it returns a truthy value; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if on_tick is not None:
            on_tick()
        if time.monotonic() > deadline:
            raise BenchmarkError(f"timed out after {timeout:.0f} s waiting for {message}")
        time.sleep(interval)


# --- processes ---------------------------------------------------------------------------


def memory_kib(pid: int, key: str) -> int | None:
    """A ``/proc/<pid>/status`` memory figure in KiB, e.g. ``VmHWM`` (peak RSS), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class ListenProcess:
    """A running ``manage.py listen --processes N`` (:class:`pgpubsub.testing.ListenProcess`)."""

    def __init__(self, started: testing.ListenProcess, processes: int) -> None:
        self.started = started
        self.process = started.process
        self.processes = processes

    def output(self) -> str:
        return self.started.output()

    def worker_pids(self) -> list[int]:
        """The pids of the workers the supervisor started, by worker number."""
        pids = self.started.worker_pids()
        return [pids[number] for number in sorted(pids)]

    def wait_ready(self, timeout: float = 60.0) -> list[int]:
        """Wait until every worker listens (its readiness event); return the worker pids."""
        try:
            return self.started.wait_ready(self.processes, timeout)
        except testing.ListenFailed as exc:
            raise BenchmarkError(str(exc)) from None

    def check_running(self) -> None:
        if self.process.poll() is not None:
            raise BenchmarkError(f"listen exited with {self.process.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the supervisor and its whole tree (workers run in process groups of their own)."""
        self.started.stop(timeout=40)


@contextmanager
def listen_process(
    *args: str, processes: int, env: dict[str, str], log_dir: Path
) -> Iterator[ListenProcess]:
    """Run ``manage.py listen --processes N *args`` until the block ends, then stop it."""
    started = testing.ListenProcess.start(
        MANAGE_PY,
        "--processes",
        str(processes),
        *args,
        env=env,
        log_dir=log_dir,
        new_session=True,  # a Ctrl-C reaches run.py only, which stops the tree
    )
    handle = ListenProcess(started, processes)
    try:
        yield handle
    finally:
        handle.stop()


@contextmanager
def py_spy(pids: Sequence[int], directory: Path | None, label: str) -> Iterator[None]:
    """Sample ``pids`` with ``py-spy record`` (collapsed stacks) while the block runs."""
    if directory is None:
        yield
        return
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    executable = shutil.which("py-spy", path=search)
    if executable is None:
        raise BenchmarkError("--py-spy needs py-spy: pip install py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    recorders = [
        subprocess.Popen(
            [
                executable,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "200",
                "--nonblocking",
                "--idle",
                "--format",
                "raw",
                "--output",
                str(directory / f"{label}-{pid}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]
    try:
        yield
    finally:
        for recorder in recorders:
            recorder.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        for recorder in recorders:
            try:
                recorder.wait(timeout=30)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait()


# --- statistics --------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """The median, min and max of one metric over the runs of a scenario."""

    unit: str
    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def as_json(self) -> dict[str, Any]:
        return {
            "median": round(self.median, 3),
            "min": round(self.min, 3),
            "max": round(self.max, 3),
            "unit": self.unit,
            "runs": len(self.values),
        }


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` percentile (0..1) of ``values``, linearly interpolated."""
    ordered = sorted(values)
    if not ordered:
        raise BenchmarkError("no values to take a percentile of")
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
