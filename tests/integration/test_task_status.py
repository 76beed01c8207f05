"""Stored tasks (pgpubsub.tasks) in ``manage.py pgpubsub status`` and in the metrics' gauges:
their states, defined once (pgpubsub.tasks.models.TaskState)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from prometheus_client import CollectorRegistry

from pgpubsub.metrics import WorkerMetrics
from pgpubsub.tasks.models import StoredTask, TaskState
from pgpubsub.tasks.runner import run_tasks
from testapp import tasks

pytestmark = pytest.mark.django_db

#: A project whose TASKS has no backend of pgpubsub's.
NOT_OURS = {"default": {"BACKEND": "pgpubsub.tasks.no_such_backend.Backend"}}


def enqueue(state: TaskState, *, queue: str = "default", due_for: float = 0.0) -> StoredTask:
    """A stored task in ``state``; a due one has been due for ``due_for`` seconds."""
    now = timezone.now()
    fields: dict[str, object] = {
        TaskState.DUE: {"available_at": now - timedelta(seconds=due_for)},
        TaskState.SCHEDULED: {"available_at": now + timedelta(hours=1)},
        TaskState.RUNNING: {"status": "RUNNING", "attempts": 1, "lease": 7},
        TaskState.FAILED: {"status": "FAILED", "attempts": 3, "finished_at": now},
        TaskState.SUCCESSFUL: {"status": "SUCCESSFUL", "attempts": 1, "finished_at": now},
    }[state]
    return StoredTask.objects.create(
        backend="default", queue_name=queue, task_path="testapp.tasks.add", **fields
    )


@pytest.fixture
def one_in_each_state() -> dict[TaskState, StoredTask]:
    return {state: enqueue(state, due_for=600) for state in TaskState}


def run_status(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("pgpubsub", "status", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_each_task_is_in_one_state_and_the_querysets_agree(
    one_in_each_state: dict[TaskState, StoredTask],
) -> None:
    objects = StoredTask.objects
    for state, stored in one_in_each_state.items():
        assert list(objects.in_state(state)) == [stored], state
    assert set(objects.waiting()) == {
        one_in_each_state[TaskState.DUE],
        one_in_each_state[TaskState.SCHEDULED],
    }
    assert list(objects.due()) == [one_in_each_state[TaskState.DUE]]
    assert list(objects.failed()) == [one_in_each_state[TaskState.FAILED]]
    assert set(objects.live()) == {
        task for state, task in one_in_each_state.items() if state != TaskState.SUCCESSFUL
    }


def test_status_json_counts_each_state_per_task_queue(
    one_in_each_state: dict[TaskState, StoredTask],
) -> None:
    report = json.loads(run_status("--json")[0])

    default, emails = report["tasks"]
    assert default == {
        "backend": "default",
        "queue": "default",
        "due": 1,
        "scheduled": 1,
        "running": 1,
        "failed": 1,
        "successful": 1,
        "oldest_due_seconds": pytest.approx(600, abs=60),
    }
    # Every queue of the backend is listed, with or without tasks.
    assert emails == {
        "backend": "default",
        "queue": "emails",
        **dict.fromkeys(["due", "scheduled", "running", "failed", "successful"], 0),
        "oldest_due_seconds": None,
    }


def test_the_oldest_due_age_counts_from_when_the_task_became_due_not_from_enqueue() -> None:
    retry = enqueue(TaskState.DUE, due_for=30)
    StoredTask.objects.filter(pk=retry.pk).update(enqueued_at=timezone.now() - timedelta(days=1))
    enqueue(TaskState.SCHEDULED)
    enqueue(TaskState.SCHEDULED, queue="emails")  # waiting, but not due: no oldest due

    default, emails = json.loads(run_status("--json")[0])["tasks"]

    assert default["oldest_due_seconds"] == pytest.approx(30, abs=20)
    assert (emails["scheduled"], emails["oldest_due_seconds"]) == (1, None)


def test_status_shows_queues_that_still_have_tasks_but_are_no_longer_configured() -> None:
    StoredTask.objects.filter(pk=enqueue(TaskState.FAILED).pk).update(
        backend="old", queue_name="reports"
    )

    queues = json.loads(run_status("--json")[0])["tasks"]

    assert [(q["backend"], q["queue"], q["failed"]) for q in queues] == [
        ("default", "default", 0),
        ("default", "emails", 0),
        ("old", "reports", 1),
    ]


def test_status_prints_a_row_per_task_queue(
    one_in_each_state: dict[TaskState, StoredTask],
) -> None:
    enqueue(TaskState.DUE, queue="emails")
    output = run_status()[0]

    lines = output.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("task queue")))
    assert lines[header].split() == [
        "task",
        "queue",
        "due",
        "scheduled",
        "running",
        "failed",
        "successful",
        "oldest",
        "due",
    ]
    default, emails = lines[header + 1], lines[header + 2]
    assert default.split()[:6] == ["default:default", "1", "1", "1", "1", "1"]
    assert default.endswith(" s")
    assert emails.split()[:6] == ["default:emails", "1", "0", "0", "0", "0"]
    assert lines[header + 3].startswith("Workers connected:")


@override_settings(TASKS=NOT_OURS)
def test_status_says_nothing_of_tasks_without_a_pgpubsub_tasks_backend() -> None:
    output = run_status()[0]
    assert "task queue" not in output
    assert "tasks" not in json.loads(run_status("--json")[0])


def test_status_check_fails_on_failed_tasks_as_on_failed_notifications() -> None:
    enqueue(TaskState.FAILED)
    enqueue(TaskState.FAILED, queue="emails")

    with pytest.raises(SystemExit) as exited:
        run_status("--check", "--max-failed", "0")
    assert exited.value.code == 1

    err = StringIO()
    with pytest.raises(SystemExit):
        call_command(
            "pgpubsub", "status", "--check", "--max-failed", "0", stdout=StringIO(), stderr=err
        )
    assert err.getvalue().splitlines() == [
        "CHECK FAILED: task queue default:default: 1 failed tasks (limit 0)",
        "CHECK FAILED: task queue default:emails: 1 failed tasks (limit 0)",
    ]
    assert run_status("--check", "--max-failed", "1")[1] == ""
    assert run_status("--check")[1] == ""  # without thresholds, as for notifications


def test_status_check_fails_when_the_oldest_due_task_waited_too_long() -> None:
    enqueue(TaskState.DUE, due_for=3600)
    enqueue(TaskState.SCHEDULED)  # not due: never too old

    err = StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command(
            "pgpubsub", "status", "--check", "--max-age", "60", stdout=StringIO(), stderr=err
        )
    assert exited.value.code == 1
    (problem,) = err.getvalue().splitlines()
    assert problem.startswith("CHECK FAILED: task queue default:default: oldest due task has ")
    assert problem.endswith("(limit 60 s)")
    assert run_status("--check", "--max-age", "7200")[1] == ""


def test_counting_live_tasks_reads_partial_indexes_not_the_table() -> None:
    """Kept results can be millions of rows: the count the metrics run at every scrape must
    be answerable from the partial indexes of READY, RUNNING and FAILED tasks."""
    query = StoredTask.objects.live().values("backend", "queue_name").order_by()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = query.explain()
    assert "Seq Scan" not in plan, plan


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.connect()
    yield registry
    metrics.disconnect()


def test_task_gauges_count_live_states_per_queue_and_leave_kept_results_out(
    registry: CollectorRegistry, one_in_each_state: dict[TaskState, StoredTask]
) -> None:
    def gauge(status: str, queue: str = "default") -> float | None:
        labels = {"backend": "default", "queue": queue, "status": status}
        return registry.get_sample_value("pgpubsub_tasks", labels)

    assert [gauge(state) for state in ("due", "scheduled", "running", "failed")] == [1, 1, 1, 1]
    assert gauge("failed", queue="emails") == 0
    assert gauge("successful") is None
    oldest = registry.get_sample_value(
        "pgpubsub_tasks_oldest_due_seconds", {"backend": "default", "queue": "default"}
    )
    assert oldest == pytest.approx(600, abs=60)
    no_due = {"backend": "default", "queue": "emails"}
    assert registry.get_sample_value("pgpubsub_tasks_oldest_due_seconds", no_due) is None


@override_settings(TASKS=NOT_OURS)
def test_no_task_gauges_without_a_pgpubsub_tasks_backend(registry: CollectorRegistry) -> None:
    enqueue(TaskState.FAILED)
    families = {metric.name for metric in registry.collect() if metric.samples}
    assert "pgpubsub_tasks" not in families


@pytest.mark.django_db(transaction=True)
def test_task_counters_count_started_attempts_and_finished_tasks_by_status(
    registry: CollectorRegistry,
) -> None:
    tasks.add.enqueue(1, 2)
    tasks.always_fails.using(queue_name="emails").enqueue("boom")  # two attempts, then FAILED

    run_tasks()
    StoredTask.objects.filter(status="READY").update(available_at=timezone.now())
    run_tasks()

    def counter(name: str, queue: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"backend": "default", "queue": queue, **labels})

    assert counter("pgpubsub_tasks_started_total", "default") == 1
    assert counter("pgpubsub_tasks_started_total", "emails") == 2
    assert counter("pgpubsub_tasks_finished_total", "default", status="successful") == 1
    assert counter("pgpubsub_tasks_finished_total", "emails", status="failed") == 1
    assert counter("pgpubsub_tasks_finished_total", "emails", status="successful") is None
