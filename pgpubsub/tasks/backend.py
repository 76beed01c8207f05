"""``pgpubsub.tasks.PgPubSubBackend``: Django's task backend interface on pgpubsub's queue."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from django.conf import settings as django_settings
from django.core.checks import CheckMessage
from django.core.checks import Error as CheckError
from django.db import connections
from django.utils.module_loading import import_string

from pgpubsub.tasks import store
from pgpubsub.tasks.arguments import json_problem, to_json
from pgpubsub.tasks.compat import (
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_enqueued,
)
from pgpubsub.tasks.models import StoredTask
from pgpubsub.tasks.options import BackendOptions
from pgpubsub.tasks.results import result_of

#: Queue names: they travel in NOTIFY payloads and are typed on command lines.
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class PgPubSubBackend(BaseTaskBackend):
    """Stores tasks in PostgreSQL, in the caller's transaction; ``manage.py listen`` runs them.

    ``TASKS = {"default": {"BACKEND": "pgpubsub.tasks.PgPubSubBackend", "QUEUES": ["default"],
    "OPTIONS": {"ATOMIC": False, "MAX_ATTEMPTS": 5}}}``. See the guide "Background tasks".

    Enqueue is transactional: a task enqueued in a transaction that rolls back never runs,
    and one enqueued in a transaction that commits always runs (no ``on_commit`` needed).
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.backend_options, self._option_problems = BackendOptions.parse(self.options)

    @property
    def database(self) -> str:
        """The alias of the database the tasks are stored in."""
        return self.backend_options.database

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:  # type: ignore[override,unused-ignore]
        """Store ``task`` with its arguments in the current transaction of the backend's
        database, and ring the workers' doorbell at its commit.

        Raises:
            InvalidTask: the task, its queue or its arguments are not acceptable (for example
                an argument that is not JSON-serialisable).
        """
        self.validate_task(task)
        _check_findable(task)
        args_json = _to_json(list(args), task, "args")
        kwargs_json = _to_json(dict(kwargs), task, "kwargs")
        pk, enqueued_at = store.insert(
            using=self.database,
            backend=self.alias,
            queue_name=task.queue_name,
            task_path=task.module_path,
            priority=task.priority,
            args_json=args_json,
            kwargs_json=kwargs_json,
            run_after=task.run_after,
        )
        result: TaskResult = TaskResult(
            task=task,
            id=str(pk),
            status=_ready(),
            enqueued_at=enqueued_at,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=json.loads(args_json),
            kwargs=json.loads(kwargs_json),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        """The stored state of the task ``result_id`` of this backend.

        Raises:
            TaskResultDoesNotExist: no such task (never enqueued, or pruned).
        """
        try:
            pk = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(
                f"No task result {result_id!r}: the ids of this backend are integers."
            ) from None
        row = StoredTask.objects.using(self.database).filter(pk=pk, backend=self.alias).first()
        if row is None:
            raise TaskResultDoesNotExist(
                f"No task result {result_id!r} on backend {self.alias!r}: never enqueued here, "
                "or deleted after OPTIONS['RESULT_RETENTION'] seconds."
            )
        return result_of(row)

    def check(self, **kwargs: Any) -> list[CheckMessage]:
        """Options, queue names and database of this backend (``manage.py check``)."""
        return list(self._problems())

    def _problems(self) -> Iterator[CheckMessage]:
        where = f"TASKS[{self.alias!r}]"
        for problem in self._option_problems:
            yield CheckError(f"{where}['OPTIONS']: {problem}.", id="pgpubsub.E201")
        for queue in sorted(self.queues):
            if not isinstance(queue, str) or not _QUEUE_NAME.match(queue):
                yield CheckError(
                    f"{where}['QUEUES']: {queue!r} is not a valid queue name.",
                    hint="Use 1 to 100 letters, digits, '_', '.' or '-'.",
                    id="pgpubsub.E202",
                )
        if not self.queues:
            yield CheckError(
                f"{where}['QUEUES'] is empty: workers would run none of its tasks.",
                hint="Leave QUEUES out (['default']) or name the queues.",
                id="pgpubsub.E203",
            )
        if self.database not in django_settings.DATABASES:
            yield CheckError(
                f"{where}['OPTIONS']['DATABASE'] is {self.database!r}, not an alias of DATABASES.",
                id="pgpubsub.E204",
            )
        elif connections[self.database].vendor != "postgresql":
            yield CheckError(
                f"{where}: database {self.database!r} is not PostgreSQL.",
                id="pgpubsub.E205",
            )


def _check_findable(task: Task) -> None:
    """That a worker finds ``task`` again by its path (the name stored with it)."""
    try:
        found = import_string(task.module_path)
    except ImportError as exc:
        raise InvalidTask(
            f"Task {task.module_path!r} cannot be enqueued: a worker could not import it "
            f"({exc}). Define tasks at module level in an importable module."
        ) from None
    if getattr(found, "func", None) is not task.func:
        raise InvalidTask(
            f"Task {task.module_path!r} cannot be enqueued: that path names {found!r}, not "
            "this task, so a worker would not find it. Give the task's function a module-level "
            "name of its own, decorated with @task."
        )


def _ready() -> TaskResultStatus:
    return TaskResultStatus("READY")


def _to_json(value: Any, task: Task, name: str) -> str:
    """``value`` as JSON text, or an error naming the first argument that JSON cannot hold
    as it is (Django requires arguments to round-trip through JSON)."""
    problem = json_problem(value, name)
    if problem is not None:
        raise InvalidTask(
            f"Task {task.module_path!r} cannot be enqueued: {problem}. Arguments must be "
            "JSON-serialisable (str, int, float, bool, None, lists and dicts with str keys): "
            "pass an id rather than a model instance, an ISO string rather than a datetime."
        )
    return to_json(value)
