"""Django ``TaskResult`` objects built from stored tasks."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from django.utils.module_loading import import_string

from pgpubsub.tasks.compat import Task, TaskError, TaskResult, TaskResultStatus
from pgpubsub.tasks.models import StoredTask
from pgpubsub.tasks.store import ClaimedTask


@functools.lru_cache(maxsize=1024)
def find_task(
    path: str, *, backend: str, queue_name: str, priority: int, run_after: datetime | None
) -> Task:
    """The Task stored under ``path``, with the queue, priority and ``run_after`` it was
    enqueued with. Cached: tasks are immutable, and a worker finds the same ones again and
    again (``Task.using`` validates each copy, which inspects the function's signature).

    Raises:
        ImportError: nothing by that path (the task was renamed or removed since).
        TypeError: the path names something other than a task.
    """
    found = import_string(path)
    if not isinstance(found, Task):
        raise TypeError(f"{path!r} is {found!r}, not a task (a function decorated with @task)")
    return found.using(
        backend=backend, queue_name=queue_name, priority=priority, run_after=run_after
    )


def build_result(
    task: Task,
    stored: ClaimedTask,
    *,
    backend: str,
    status: str,
    finished_at: datetime | None = None,
    return_value: Any = None,
) -> TaskResult:
    """A TaskResult of ``task`` from a stored task's fields."""
    result: TaskResult = TaskResult(
        task=task,
        id=str(stored.id),
        status=TaskResultStatus(status),
        enqueued_at=stored.enqueued_at,
        started_at=stored.started_at,
        finished_at=finished_at,
        last_attempted_at=stored.last_attempted_at,
        args=stored.args,
        kwargs=stored.kwargs,
        backend=backend,
        errors=[
            TaskError(exception_class_path=e["exception_class_path"], traceback=e["traceback"])
            for e in stored.errors
        ],
        worker_ids=list(stored.worker_ids),
    )
    object.__setattr__(result, "_return_value", return_value)
    return result


def result_of(row: StoredTask) -> TaskResult:
    """The TaskResult of a stored task row."""
    task = find_task(
        row.task_path,
        backend=row.backend,
        queue_name=row.queue_name,
        priority=row.priority,
        run_after=row.run_after,
    )
    stored = ClaimedTask(
        row.id,
        row.queue_name,
        row.task_path,
        row.priority,
        row.args,
        row.kwargs,
        row.run_after,
        row.enqueued_at,
        row.started_at,
        row.last_attempted_at,
        row.attempts,
        row.worker_ids,
        row.errors,
    )
    return build_result(
        task,
        stored,
        backend=row.backend,
        status=row.status,
        finished_at=row.finished_at,
        return_value=row.return_value,
    )
