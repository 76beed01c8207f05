"""What is queued, retrying and failed, per channel and per task queue, and who is listening:
for people on call."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from django.db import connections
from django.db.models import Count, Min
from django.utils import timezone

from pgpubsub.connection import WORKER_APPLICATION_NAME
from pgpubsub.models import STATE_FILTERS, WAITING, Notification, State
from pgpubsub.registry import registry
from pgpubsub.tasks.models import LIVE_STATES, TASK_STATE_FILTERS, StoredTask, TaskState
from pgpubsub.tasks.work import pgpubsub_backends


@dataclass
class ChannelStatus:
    channel: str
    pg_name: str
    lockable: bool | None
    listeners: list[str] = field(default_factory=list)
    #: Stored notifications in each :class:`~pgpubsub.models.State`.
    new: int = 0
    retrying: int = 0
    failed: int = 0
    handled: int = 0
    #: Age of the oldest notification waiting (new or retrying).
    oldest_waiting_seconds: float | None = None

    def counts(self) -> dict[str, int]:
        """The count of each state, by the state's name."""
        return {state.value: getattr(self, state.value) for state in State}


@dataclass
class TaskQueueStatus:
    """The stored tasks of one queue of a ``pgpubsub.tasks`` backend."""

    backend: str
    queue: str
    #: Stored tasks in each :class:`~pgpubsub.tasks.models.TaskState`.
    due: int = 0
    scheduled: int = 0
    running: int = 0
    failed: int = 0
    #: Results kept; None when not counted (the metrics leave them out: see collect_status).
    successful: int | None = None
    #: How long the task due longest has waited for a worker since it became due.
    oldest_due_seconds: float | None = None

    @property
    def label(self) -> str:
        """``backend:queue``, as ``listen --task-queues`` takes it."""
        return f"{self.backend}:{self.queue}"

    def counts(self) -> dict[str, int]:
        """The count of each state counted, by the state's name."""
        counts = {state.value: getattr(self, state.value) for state in TaskState}
        return {state: count for state, count in counts.items() if count is not None}


@dataclass
class StatusReport:
    channels: list[ChannelStatus]
    workers_connected: int
    notify_queue_usage: float
    #: Per queue of the ``pgpubsub.tasks`` backends of the database; None when ``TASKS`` has
    #: none (the report then says nothing about tasks).
    tasks: list[TaskQueueStatus] | None = None

    def as_dict(self) -> dict[str, Any]:
        report = asdict(self)
        if self.tasks is None:
            del report["tasks"]
        return report

    def problems(self, *, max_age: float | None, max_failed: int | None) -> list[str]:
        """Threshold breaches, worded for an alert."""
        found = []
        for status in self.channels:
            age = status.oldest_waiting_seconds
            if max_age is not None and age is not None and age > max_age:
                found.append(
                    f"{status.channel}: oldest waiting notification is {age:.0f} s old "
                    f"(limit {max_age:.0f} s)"
                )
            if max_failed is not None and status.failed > max_failed:
                found.append(
                    f"{status.channel}: {status.failed} failed notifications (limit {max_failed})"
                )
        for queue in self.tasks or []:
            age = queue.oldest_due_seconds
            if max_age is not None and age is not None and age > max_age:
                found.append(
                    f"task queue {queue.label}: oldest due task has waited {age:.0f} s "
                    f"(limit {max_age:.0f} s)"
                )
            if max_failed is not None and queue.failed > max_failed:
                found.append(
                    f"task queue {queue.label}: {queue.failed} failed tasks (limit {max_failed})"
                )
        return found


def collect_status(using: str, *, task_results: bool = True) -> StatusReport:
    """Count stored notifications per channel and stored tasks per queue, and look up
    connected workers.

    ``task_results``: also count the results kept (SUCCESSFUL tasks). Unlike the other
    states, they have no partial index and can be millions of rows (``RESULT_RETENTION``), so
    counting them reads the table: the metrics, read at every scrape, leave them out.
    """
    connection = connections[using]
    statuses = {
        channel.listen_safe_name(): ChannelStatus(
            channel=channel.name(),
            pg_name=channel.listen_safe_name(),
            lockable=channel.lock_notifications,
            listeners=[
                f"{listener.callback.__module__}.{listener.callback.__qualname__}"
                for listener in registry.listeners_for(channel)
            ],
        )
        for channel in registry.channels()
    }
    counts = (
        Notification.objects.using(using)
        .values("channel")
        .order_by("channel")
        .annotate(
            **{state.value: Count("id", filter=STATE_FILTERS[state]) for state in State},
            oldest=Min("created_at", filter=WAITING),
        )
    )
    now = timezone.now()
    for row in counts:
        status = statuses.setdefault(
            row["channel"],
            ChannelStatus(channel=row["channel"], pg_name=row["channel"], lockable=None),
        )
        for state in State:
            setattr(status, state.value, row[state.value])
        if row["oldest"] is not None:
            status.oldest_waiting_seconds = max((now - row["oldest"]).total_seconds(), 0.0)
    with connection.cursor() as cursor:
        cursor.execute(
            # A worker may hold several connections that carry its name (one per pid).
            "SELECT count(DISTINCT application_name) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE %s",
            [WORKER_APPLICATION_NAME + "%"],
        )
        workers = cursor.fetchone()[0]
        cursor.execute("SELECT pg_notification_queue_usage()")
        usage = float(cursor.fetchone()[0])
    return StatusReport(
        channels=sorted(statuses.values(), key=lambda s: s.channel),
        workers_connected=workers,
        notify_queue_usage=usage,
        tasks=collect_task_status(using, results=task_results),
    )


def collect_task_status(using: str, *, results: bool = True) -> list[TaskQueueStatus] | None:
    """Count the stored tasks of each queue of the ``pgpubsub.tasks`` backends of database
    ``using``, and queues of other backends that still have rows; None without such a backend.

    ``results``: also count the SUCCESSFUL ones (see :func:`collect_status`).
    """
    backends = {
        alias: backend
        for alias, backend in pgpubsub_backends().items()
        if backend.database == using
    }
    if not backends:
        return None

    def empty(alias: str, queue: str) -> TaskQueueStatus:
        return TaskQueueStatus(alias, queue, successful=0 if results else None)

    queues = {
        (alias, queue): empty(alias, queue)
        for alias, backend in backends.items()
        for queue in backend.queues
    }

    def queue_of(row: dict[str, Any]) -> TaskQueueStatus:
        key = (row["backend"], row["queue_name"])
        return queues.setdefault(key, empty(*key))

    tasks = StoredTask.objects.using(using).values("backend", "queue_name").order_by()
    live = tasks.live().annotate(
        **{state.value: Count("id", filter=TASK_STATE_FILTERS[state]) for state in LIVE_STATES},
        oldest=Min("available_at", filter=TASK_STATE_FILTERS[TaskState.DUE]),
    )
    now = timezone.now()
    for row in live:
        queue = queue_of(row)
        for state in LIVE_STATES:
            setattr(queue, state.value, row[state.value])
        if row["oldest"] is not None:
            queue.oldest_due_seconds = max((now - row["oldest"]).total_seconds(), 0.0)
    if results:
        for row in tasks.successful().annotate(count=Count("id")):
            queue_of(row).successful = row["count"]
    return sorted(queues.values(), key=lambda q: (q.backend, q.queue))
