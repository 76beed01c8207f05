"""SQL on stored tasks (:class:`~pgpubsub.tasks.models.StoredTask`): enqueue, claim, record
outcomes, find the tasks of dead workers, prune. Values are bound parameters; the table name
is Django's, quoted.

Leases: a worker's session holds an advisory lock ``(LEASE_CLASS, lease)`` while it runs
tasks, and each task it claims is marked RUNNING with that ``lease`` in a statement that
commits at once. PostgreSQL releases the lock when the worker's session ends, so a RUNNING
task whose lock nobody holds was left by a worker that died (``kill -9``, the out-of-memory
killer, a lost machine): :func:`orphaned` finds it, and it is charged an attempt.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.utils import timezone

from pgpubsub.models import quoted_table
from pgpubsub.tasks.models import FAILED, READY, RUNNING, SUCCESSFUL, StoredTask
from pgpubsub.tasks.options import RetryPolicy

#: The first key of the advisory locks of task leases ("pgps"); the second is the lease.
LEASE_CLASS = 0x70677073

#: Makes the statement's own transaction commit asynchronously, as in pgpubsub.inflight: a
#: claim or an outcome lost in a server crash leaves the task READY, or RUNNING without a
#: lease holder, so it runs again; it is never lost.
_ASYNC_COMMIT = "(SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"

_MAX_TRACEBACK = 20_000

_COLUMNS = (
    "id, queue_name, task_path, priority, args::text, kwargs::text, run_after, enqueued_at, "
    "started_at, last_attempted_at, attempts, worker_ids::text, errors::text, lease"
)


def doorbell(backend: str) -> str:
    """The NOTIFY channel that tells workers of ``backend``'s new tasks (payload: the queue)."""
    return f"pgpubsub.tasks.{backend}"


#: The payload of a doorbell for a task that is not due yet (run_after; no queue name has a
#: colon): workers look up when
#: it will be, rather than claim.
LATER = ":later"


@dataclass(frozen=True)
class ClaimedTask:
    """A task marked RUNNING by this worker (or the row of a result)."""

    id: int
    queue_name: str
    task_path: str
    priority: int
    args: list[Any]
    kwargs: dict[str, Any]
    run_after: datetime | None
    enqueued_at: datetime
    started_at: datetime | None
    last_attempted_at: datetime | None
    #: Attempts so far, this one included.
    attempts: int
    worker_ids: list[str]
    errors: list[dict[str, str]]
    #: The lease it is RUNNING under.
    lease: int | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> ClaimedTask:
        (pk, queue, path, priority, args, kwargs, run_after, enqueued, started, last) = row[:10]
        attempts, worker_ids, errors, lease = row[10:14]
        return cls(
            pk,
            queue,
            path,
            priority,
            json.loads(args),
            json.loads(kwargs),
            run_after,
            enqueued,
            started,
            last,
            attempts,
            json.loads(worker_ids),
            json.loads(errors),
            lease,
        )


def insert(
    *,
    using: str,
    backend: str,
    queue_name: str,
    task_path: str,
    priority: int,
    args_json: str,
    kwargs_json: str,
    run_after: datetime | None,
) -> tuple[int, datetime]:
    """Store a task and ring its backend's doorbell, in the current transaction (so that
    both happen at its commit, or never); return the task's id and enqueue time."""
    table = quoted_table(StoredTask, using)
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"WITH task AS (INSERT INTO {table} (backend, queue_name, task_path, priority, "
            "args, kwargs, status, enqueued_at, run_after, available_at, attempts, worker_ids, "
            "errors) VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, statement_timestamp(), "
            "%s, greatest(statement_timestamp(), %s), 0, '[]', '[]') "
            "RETURNING id, enqueued_at, available_at > enqueued_at AS later) "
            "SELECT id, enqueued_at, pg_notify(%s, CASE WHEN later THEN %s ELSE %s END)::text "
            "FROM task",
            [
                backend,
                queue_name,
                task_path,
                priority,
                args_json,
                kwargs_json,
                READY,
                run_after,
                run_after,
                doorbell(backend),
                LATER,
                queue_name,
            ],
        )
        pk, enqueued_at, _ = cursor.fetchone()
    return int(pk), enqueued_at


def claim(
    *,
    using: str,
    backend: str,
    queues: Sequence[str],
    worker_id: str,
    lease: int,
    limit: int = 1,
) -> list[ClaimedTask]:
    """Mark up to ``limit`` due READY tasks RUNNING under ``lease``, highest priority first,
    then oldest; committed at once (call it outside a transaction)."""
    table = quoted_table(StoredTask, using)
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS task SET status = %s, attempts = task.attempts + 1, "
            "started_at = coalesce(task.started_at, statement_timestamp()), "
            "last_attempted_at = statement_timestamp(), "
            "worker_ids = task.worker_ids || jsonb_build_array(%s::text), lease = %s "
            f"FROM {_ASYNC_COMMIT}, (SELECT id FROM {table} WHERE backend = %s AND status = %s "
            "AND queue_name = ANY(%s) AND available_at <= statement_timestamp() "
            "ORDER BY priority DESC, id LIMIT %s FOR UPDATE SKIP LOCKED) AS due "
            f"WHERE task.id = due.id RETURNING {_task_columns('task')}",
            [RUNNING, worker_id, lease, backend, READY, list(queues), limit],
        )
        rows = cursor.fetchall()
    tasks = [ClaimedTask.from_row(row) for row in rows]
    return sorted(tasks, key=lambda task: (-task.priority, task.id))


def release(tasks: Sequence[ClaimedTask], *, using: str, lease: int | None) -> None:
    """Hand claimed tasks that were not started back to the queue as they were before the
    claim (READY, the attempt and its worker id taken back), and ring their doorbells."""
    if not tasks:
        return
    table = quoted_table(StoredTask, using)
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"WITH released AS (UPDATE {table} SET status = %s, attempts = attempts - 1, "
            "worker_ids = worker_ids - (jsonb_array_length(worker_ids) - 1), lease = NULL, "
            "started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END "
            f"FROM {_ASYNC_COMMIT} WHERE id = ANY(%s) AND status = %s AND lease = %s "
            "RETURNING backend, queue_name) "
            "SELECT pg_notify(%s || backend, queue_name)::text FROM "
            "(SELECT DISTINCT backend, queue_name FROM released) AS rings",
            [READY, [task.id for task in tasks], RUNNING, lease, doorbell("")],
        )


def _task_columns(alias: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in _COLUMNS.split(", "))


def record_success(
    task_id: int, return_value_json: str, *, using: str, lease: int, asynchronous: bool
) -> bool:
    """Record a successful attempt; False if the task was no longer this lease's (a worker
    took it over, believing this one dead)."""
    table = quoted_table(StoredTask, using)
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET status = %s, return_value = %s::jsonb, "
            "finished_at = statement_timestamp(), lease = NULL "
            f"{'FROM ' + _ASYNC_COMMIT if asynchronous else ''} "
            "WHERE id = %s AND status = %s AND lease = %s",
            [SUCCESSFUL, return_value_json, task_id, RUNNING, lease],
        )
        return bool(cursor.rowcount)


def error_entry(exception_class_path: str, traceback_text: str) -> dict[str, str]:
    """One element of a task's ``errors`` (the fields of Django's ``TaskError``)."""
    return {
        "exception_class_path": exception_class_path,
        "traceback": traceback_text[-_MAX_TRACEBACK:],
    }


def record_failure(
    task: ClaimedTask,
    error: dict[str, str],
    *,
    using: str,
    lease: int | None,
    policy: RetryPolicy,
) -> bool | None:
    """Record a failed attempt: READY again after the policy's delay, or FAILED when the
    attempts are exhausted. Return True when FAILED, False when it will be retried, None if
    the task was no longer this lease's (``lease`` None: the lease is not checked)."""
    dead = task.attempts >= policy.max_attempts
    now = timezone.now()
    queryset = StoredTask.objects.using(using).filter(pk=task.id, status=RUNNING)
    if lease is not None:
        queryset = queryset.filter(lease=lease)
    updated = queryset.update(
        status=FAILED if dead else READY,
        errors=[*task.errors, error],
        available_at=now + timedelta(seconds=policy.delay(task.attempts)),
        finished_at=now if dead else None,
        lease=None,
    )
    return dead if updated else None


def orphaned(*, using: str, backend: str) -> list[ClaimedTask]:
    """Lock the RUNNING tasks of ``backend`` whose lease nobody holds (their worker died).
    Must run in a transaction, which records what becomes of them."""
    table = quoted_table(StoredTask, using)
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"SELECT {_COLUMNS} FROM {table} AS task WHERE backend = %s AND status = %s "
            "AND NOT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid = %s::oid AND objid = task.lease::oid AND objsubid = 2) "
            "ORDER BY id FOR UPDATE SKIP LOCKED",
            [backend, RUNNING, LEASE_CLASS],
        )
        return [ClaimedTask.from_row(row) for row in cursor.fetchall()]


def next_due(*, using: str, backend: str, queues: Sequence[str]) -> float | None:
    """Seconds until the earliest READY task of ``queues`` that is not due yet becomes due."""
    table = quoted_table(StoredTask, using)
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM min(available_at) - statement_timestamp())::float8 "
            f"FROM {table} WHERE backend = %s AND status = %s AND queue_name = ANY(%s) "
            "AND available_at > statement_timestamp()",
            [backend, READY, list(queues)],
        )
        (seconds,) = cursor.fetchone()
    return None if seconds is None else float(seconds)


def prune(*, using: str, backend: str, successful: float | None, failed: float | None) -> int:
    """Delete SUCCESSFUL tasks finished more than ``successful`` seconds ago, and FAILED ones
    more than ``failed`` seconds ago (None: keep them)."""
    deleted = 0
    now = timezone.now()
    for status, retention in ((SUCCESSFUL, successful), (FAILED, failed)):
        if retention is None:
            continue
        count, _ = (
            StoredTask.objects.using(using)
            .filter(
                backend=backend,
                status=status,
                finished_at__lt=now - timedelta(seconds=retention),
            )
            .delete()
        )
        deleted += count
    return deleted


def retry_failed(*, using: str, ids: Sequence[int] | None = None) -> int:
    """Make FAILED tasks (all, or those of ``ids``) READY now with a fresh attempt count, and
    ring their backends' doorbells. Their errors so far are kept."""
    queryset = StoredTask.objects.using(using).failed()
    if ids:
        queryset = queryset.filter(pk__in=ids)
    rings = sorted(set(queryset.values_list("backend", "queue_name")))
    count = queryset.update(status=READY, attempts=0, available_at=timezone.now(), finished_at=None)
    with connections[using].cursor() as cursor:
        for backend, queue_name in rings:
            cursor.execute("SELECT pg_notify(%s, %s)", [doorbell(backend), queue_name])
    return count


def take_lease(execute: Any, lease: int) -> bool:
    """Take the advisory lock of ``lease`` through ``execute`` (a session's statement runner);
    False if another session holds it."""
    rows = execute("SELECT pg_try_advisory_lock(%s, %s)", [LEASE_CLASS, lease])
    return bool(rows[0][0])


def release_lease(execute: Any, lease: int) -> None:
    """Release the advisory lock of ``lease`` taken with :func:`take_lease`."""
    execute("SELECT pg_advisory_unlock(%s, %s)", [LEASE_CLASS, lease])
