"""The stored tasks of :class:`pgpubsub.tasks.PgPubSubBackend`: one row per enqueued task,
which is also its result.

A row is inserted by ``enqueue`` in the caller's transaction, claimed by a worker with
``FOR UPDATE SKIP LOCKED`` (ready, due, highest priority first), and holds the outcome of
each attempt. The statuses are Django's (``TaskResultStatus``): READY (waiting, possibly for
a retry), RUNNING, SUCCESSFUL, FAILED (a dead letter: its attempts are exhausted).
"""

from __future__ import annotations

import enum

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

#: The statuses, spelled as Django's TaskResultStatus values (stored as text).
READY = "READY"
RUNNING = "RUNNING"
SUCCESSFUL = "SUCCESSFUL"
FAILED = "FAILED"
STATUSES = [(READY, "Ready"), (RUNNING, "Running"), (SUCCESSFUL, "Successful"), (FAILED, "Failed")]


class TaskState(str, enum.Enum):
    """The state of a stored task: the one vocabulary of ``pgpubsub status``, the metrics and
    the admin. Each task is in exactly one; READY is split by whether it is due yet."""

    #: READY and due: what a worker claims now (a new task, or a retry whose delay is over).
    DUE = "due"
    #: READY, due later: a ``run_after`` in the future, or a retry waiting for its delay.
    SCHEDULED = "scheduled"
    #: Claimed by a worker (or left by one that died, until a worker settles it).
    RUNNING = "running"
    #: Exhausted its attempts: a dead letter, kept for a person to inspect.
    FAILED = "failed"
    #: Succeeded; its result is kept for the backend's ``RESULT_RETENTION``.
    SUCCESSFUL = "successful"

    def __str__(self) -> str:
        return self.value


#: Each state as a filter. "Due" is judged by the database's clock, as the claim does.
TASK_STATE_FILTERS: dict[TaskState, Q] = {
    TaskState.DUE: Q(status=READY, available_at__lte=Now()),
    TaskState.SCHEDULED: Q(status=READY, available_at__gt=Now()),
    TaskState.RUNNING: Q(status=RUNNING),
    TaskState.FAILED: Q(status=FAILED),
    TaskState.SUCCESSFUL: Q(status=SUCCESSFUL),
}
#: The states of tasks still in the system's hands or a person's (not kept results). Each has
#: a partial index, so counting them reads the backlog, not the results kept.
LIVE_STATES = (TaskState.DUE, TaskState.SCHEDULED, TaskState.RUNNING, TaskState.FAILED)
#: The state of each finished status (``task_finished``'s ``TaskResult.status``).
FINISHED_STATES = {SUCCESSFUL: TaskState.SUCCESSFUL, FAILED: TaskState.FAILED}


class StoredTaskQuerySet(models.QuerySet["StoredTask"]):
    """Stored tasks by state (:class:`TaskState`), and waiting (due or scheduled)."""

    def in_state(self, state: TaskState | str) -> StoredTaskQuerySet:
        return self.filter(TASK_STATE_FILTERS[TaskState(state)])

    def waiting(self) -> StoredTaskQuerySet:
        """READY: due now or later."""
        return self.filter(status=READY)

    def due(self) -> StoredTaskQuerySet:
        """READY and due now: what a worker claims (``pgpubsub.tasks.store.claim``, whose SQL
        spells the same condition)."""
        return self.in_state(TaskState.DUE)

    def scheduled(self) -> StoredTaskQuerySet:
        """READY, due later (``run_after``, or a retry's delay)."""
        return self.in_state(TaskState.SCHEDULED)

    def running(self) -> StoredTaskQuerySet:
        return self.in_state(TaskState.RUNNING)

    def failed(self) -> StoredTaskQuerySet:
        """Tasks that exhausted their attempts (dead letters)."""
        return self.in_state(TaskState.FAILED)

    def successful(self) -> StoredTaskQuerySet:
        """Succeeded, result kept."""
        return self.in_state(TaskState.SUCCESSFUL)

    def live(self) -> StoredTaskQuerySet:
        """In one of :data:`LIVE_STATES`: written as one OR of the indexed statuses, so that
        PostgreSQL reads the partial indexes rather than the whole table."""
        return self.filter(Q(status=READY) | Q(status=RUNNING) | Q(status=FAILED))


class StoredTask(models.Model):
    """A task enqueued on a :class:`~pgpubsub.tasks.PgPubSubBackend`, and its result."""

    id = models.BigAutoField(primary_key=True)
    #: The alias of the backend in ``TASKS``.
    backend = models.CharField(max_length=100)
    queue_name = models.CharField(max_length=100)
    #: The dotted path of the Task object (its function's module and qualified name).
    task_path = models.TextField()
    priority = models.SmallIntegerField(default=0)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=STATUSES, default=READY)
    enqueued_at = models.DateTimeField(default=timezone.now)
    #: The task's ``run_after``, if it had one.
    run_after = models.DateTimeField(null=True, blank=True)
    #: When a worker may claim it: ``run_after``, enqueue time, or the time of the next retry.
    available_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    last_attempted_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    #: The worker of each attempt, in order (``TaskResult.worker_ids``).
    worker_ids = models.JSONField(default=list)
    #: ``{"exception_class_path": ..., "traceback": ...}`` of each failed attempt, in order.
    errors = models.JSONField(default=list)
    return_value = models.JSONField(null=True, blank=True)
    #: While RUNNING: the key of the advisory lock its worker's session holds. A RUNNING row
    #: whose lock nobody holds was left by a worker that died (pgpubsub.tasks.store).
    lease = models.IntegerField(null=True, blank=True)

    objects = StoredTaskQuerySet.as_manager()

    class Meta:
        app_label = "pgpubsub"
        db_table = "pgpubsub_task"
        verbose_name = "task"
        indexes = [
            # The claim: a backend's ready tasks, highest priority first, then oldest.
            models.Index(
                fields=["backend", "-priority", "id"],
                name="pgpubsub_task_ready",
                condition=Q(status=READY),
            ),
            # When the next task that is not due yet (run_after, retry) becomes due.
            models.Index(
                fields=["backend", "available_at"],
                name="pgpubsub_task_later",
                condition=Q(status=READY),
            ),
            # Finding the tasks of workers that died.
            models.Index(
                fields=["backend"], name="pgpubsub_task_running", condition=Q(status=RUNNING)
            ),
            # Counting and listing dead letters (status, metrics, pgpubsub failed, the admin).
            models.Index(
                fields=["backend", "queue_name"],
                name="pgpubsub_task_failed",
                condition=Q(status=FAILED),
            ),
            # Pruning finished tasks.
            models.Index(
                fields=["finished_at"],
                name="pgpubsub_task_finished",
                condition=Q(finished_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_path} #{self.pk}"

    def error_summary(self, limit: int = 120) -> str:
        """The last line of the last error's traceback, cut to ``limit`` characters."""
        if not self.errors:
            return ""
        lines = [line for line in str(self.errors[-1].get("traceback", "")).splitlines() if line]
        line = lines[-1].strip() if lines else ""
        return line if len(line) <= limit else line[: limit - 1] + "…"
