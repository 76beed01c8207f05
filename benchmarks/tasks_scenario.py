"""Scenario ``tasks``: pgpubsub.tasks side by side with django-tasks-db (the ORM-based
reference backend of Django's tasks framework), in one run, on the same database and machine.

For each backend: the enqueue rate (one transaction per task, and all in one transaction), the
end-to-end rate of no-op tasks enqueued in one transaction with 2 worker processes started and
ready before (from the commit to the last task finished), and the latency from an enqueuing
transaction's commit to its task's start at a steady rate. django-tasks-db runs with its
defaults (``db_worker``, 1 s poll interval); it is installed by the ``bench`` extra only.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import transaction
from harness import MANAGE_PY, BenchmarkError, percentile, wait_for


@dataclass(frozen=True)
class Backend:
    """One backend compared: its label in the figures and its TASKS alias."""

    label: str
    alias: str


PGPUBSUB = Backend("pgpubsub", "default")
TASKS_DB = Backend("django_tasks_db", "db")


def backends() -> list[Backend]:
    """The backends installed: pgpubsub always, django-tasks-db with the ``bench`` extra."""
    return [PGPUBSUB] + ([TASKS_DB] if importlib.util.find_spec("django_tasks_db") else [])


def _table(backend: Backend) -> Any:
    if backend is PGPUBSUB:
        from pgpubsub.tasks.models import StoredTask

        return StoredTask.objects.filter(backend=backend.alias)
    from django_tasks_db.models import DBTaskResult

    return DBTaskResult.objects.filter(backend_name=backend.alias)


def clear(backend: Backend) -> None:
    _table(backend).delete()


def finished_count(backend: Backend) -> int:
    return int(_table(backend).filter(status__in=["SUCCESSFUL", "FAILED"]).count())


def last_finished(backend: Backend) -> float:
    from django.db.models import Max

    latest = _table(backend).aggregate(latest=Max("finished_at"))["latest"]
    return float(latest.timestamp())


def all_successful(backend: Backend, count: int) -> bool:
    return int(_table(backend).filter(status="SUCCESSFUL").count()) == count


def enqueue_single(backend: Backend, count: int) -> float:
    """Enqueue ``count`` no-op tasks, each in its own transaction; tasks/s."""
    from benchapp.tasks import noop

    task = noop.using(backend=backend.alias)
    started = time.perf_counter()
    for _ in range(count):
        task.enqueue()
    return count / (time.perf_counter() - started)


def enqueue_in_one_transaction(backend: Backend, count: int) -> tuple[float, float]:
    """Enqueue ``count`` no-op tasks in one transaction; tasks/s and the commit time."""
    from benchapp.tasks import noop

    task = noop.using(backend=backend.alias)
    started = time.perf_counter()
    with transaction.atomic():
        for _ in range(count):
            task.enqueue()
        committed = time.time()
    return count / (time.perf_counter() - started), committed


@contextmanager
def workers(backend: Backend, env: dict[str, str], log_dir: Path) -> Iterator[None]:
    """Two worker processes of ``backend``, started and ready; always stopped."""
    if backend is PGPUBSUB:
        from harness import listen_process

        with listen_process(
            "--task-queues",
            "default",
            "--no-restart-on-failure",
            processes=2,
            env=env,
            log_dir=log_dir,
        ) as listen:
            listen.wait_ready()
            yield
        return
    logs = [log_dir / f"db_worker_{number}.log" for number in range(2)]
    started = []
    for log in logs:
        with log.open("w") as output:
            started.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(MANAGE_PY),
                        "db_worker",
                        "--backend",
                        backend.alias,
                        "--no-startup-delay",
                    ],
                    env=env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    try:
        wait_for(
            lambda: (
                all("Starting worker" in log.read_text() for log in logs)
                or any(p.poll() is not None for p in started)
            ),
            timeout=60,
            message="2 db_worker processes to start",
        )
        if any(p.poll() is not None for p in started):
            raise BenchmarkError("db_worker exited:\n" + logs[0].read_text()[-2000:])
        yield
    finally:
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for process in started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()


def end_to_end(backend: Backend, count: int) -> tuple[float, float, bool]:
    """``count`` no-op tasks in one transaction while the workers run: the enqueue rate, tasks/s
    from the commit to the last task finished, and whether each ran once, successfully."""
    clear(backend)
    enqueue_rate, committed = enqueue_in_one_transaction(backend, count)
    wait_for(
        lambda: finished_count(backend) >= count,
        timeout=120 + count / 50,
        message=f"{count} tasks of {backend.label} to finish",
        interval=0.05,
    )
    return (
        enqueue_rate,
        count / (last_finished(backend) - committed),
        all_successful(backend, count),
    )


def latencies(backend: Backend, rate: float, seconds: float) -> tuple[list[float], bool]:
    """Tasks enqueued one per transaction at ``rate``/s for ``seconds``: the milliseconds from
    each commit to its task's start."""
    from benchapp.tasks import started_at

    clear(backend)
    task = started_at.using(backend=backend.alias)
    total = int(rate * seconds)
    committed: dict[str, float] = {}
    start = time.monotonic()
    for number in range(total):
        delay = start + number / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        result = task.enqueue()
        committed[result.id] = time.time()
    wait_for(
        lambda: finished_count(backend) >= total,
        timeout=60,
        message=f"{total} latency tasks of {backend.label}",
        interval=0.05,
    )
    delays = [
        (float(task.get_result(result_id).return_value) - at) * 1000
        for result_id, at in committed.items()
    ]
    return delays, all_successful(backend, total)


def run(ctx: Any) -> Any:
    """The scenario: figures ``tasks.<backend>.<what>`` and their ratios."""
    from scenarios import Result

    result = Result()
    sizes = ctx.sizes
    found = backends()
    if TASKS_DB not in found:
        result.notes.append(
            "django-tasks-db is not installed (pip install 'django-pgpubsub-reliable[bench]'): "
            "pgpubsub.tasks only"
        )
    correct: list[bool] = []
    for backend in found:
        clear(backend)
        singles = [enqueue_single(backend, sizes.tasks_single) for _ in range(sizes.runs)]
        clear(backend)
        result.add(f"tasks.{backend.label}.enqueue_single", "tasks/s", singles)
        rates, e2e, p50, p99 = [], [], [], []
        with workers(backend, ctx.env, ctx.log_dir):
            end_to_end(backend, sizes.warmup_rows)  # warm-up, not measured
            for _ in range(sizes.runs):
                enqueue_rate, rate, ok = end_to_end(backend, sizes.tasks_rows)
                rates.append(enqueue_rate)
                e2e.append(rate)
                correct.append(ok)
                delays, ok = latencies(backend, sizes.latency_rate, sizes.latency_seconds)
                p50.append(percentile(delays, 0.5))
                p99.append(percentile(delays, 0.99))
                correct.append(ok)
        clear(backend)
        result.add(f"tasks.{backend.label}.enqueue_one_transaction", "tasks/s", rates)
        result.add(f"tasks.{backend.label}.end_to_end", "tasks/s", e2e)
        result.add(f"tasks.{backend.label}.latency_p50", "ms", p50)
        result.add(f"tasks.{backend.label}.latency_p99", "ms", p99)
    result.checks["tasks.every_task_ran_once"] = all(correct)
    result.notes.append(
        f"{sizes.tasks_rows} no-op tasks per end-to-end run, 2 worker processes per backend; "
        f"latency: {int(sizes.latency_rate * sizes.latency_seconds)} tasks at "
        f"{sizes.latency_rate:.0f}/s"
    )
    result.messages = sizes.tasks_rows * sizes.runs
    return result
