"""Django's tasks framework on pgpubsub (pgpubsub.tasks), run by real ``listen`` processes."""

from __future__ import annotations

import datetime
import os
import signal
import tempfile
from pathlib import Path

import pytest
from django.db import transaction
from django.utils import timezone

from pgpubsub.tasks.compat import TaskResultStatus
from pgpubsub.tasks.models import StoredTask
from testapp import tasks
from testapp.models import Author
from tests.acceptance.conftest import StartListen
from tests.support.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def finished(task: object, result_id: str, timeout: float = 10.0) -> object:
    """The result of a task once it is SUCCESSFUL or FAILED."""
    return wait_for(
        lambda: (r := task.get_result(result_id)).is_finished and r,  # type: ignore[attr-defined]
        timeout=timeout,
        message=f"task {result_id} finished",
    )


def test_a_task_runs_and_its_result_is_stored(listen: StartListen) -> None:
    listen("--processes", "2").wait_for_workers(2)
    result = tasks.add.enqueue(2, 40)
    done = finished(tasks.add, result.id)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == 42
    assert done.attempts == 1 and done.worker_ids[0].startswith("pgpubsub worker ")
    assert done.enqueued_at <= done.started_at <= done.finished_at


def test_a_task_of_a_rolled_back_transaction_never_runs(listen: StartListen) -> None:
    listen().wait_for_workers(1)
    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.record_run.enqueue("rolled back")
        raise RuntimeError("roll back")
    with transaction.atomic():
        after = tasks.record_run.enqueue("committed")
    finished(tasks.record_run, after.id)
    # Enqueued before the one that ran, it would have run first: it never existed.
    assert list(Author.objects.values_list("name", flat=True)) == ["committed"]
    assert StoredTask.objects.count() == 1


def test_tasks_run_by_priority_then_enqueue_order(listen: StartListen) -> None:
    listen().wait_for_workers(1)
    with transaction.atomic():  # all become visible at once
        for name, priority in [
            ("low", -5),
            ("first normal", 0),
            ("high", 90),
            ("second normal", 0),
        ]:
            last = tasks.record_run.using(priority=priority).enqueue(name)
    finished(tasks.record_run, last.id)
    wait_for(lambda: Author.objects.count() == 4)
    assert list(Author.objects.order_by("id").values_list("name", flat=True)) == [
        "high",
        "first normal",
        "second normal",
        "low",
    ]


def test_a_task_with_run_after_runs_then_and_not_before(listen: StartListen) -> None:
    # No poll comes to the rescue: the doorbell tells the worker when the task is due.
    listen(env={"PGPUBSUB_POLL_INTERVAL": "60"}).wait_for_workers(1)
    run_after = timezone.now() + datetime.timedelta(seconds=1.5)
    result = tasks.add.using(run_after=run_after).enqueue(1, 2)
    done = finished(tasks.add, result.id)
    assert run_after <= done.started_at < run_after + datetime.timedelta(seconds=0.5)


def test_an_async_task_runs(listen: StartListen) -> None:
    listen().wait_for_workers(1)
    result = tasks.async_add.enqueue(1, 41)
    assert finished(tasks.async_add, result.id).return_value == 42


def test_a_failing_task_is_retried_then_kept_failed(listen: StartListen) -> None:
    process = listen()
    process.wait_for_workers(1)
    dead = tasks.always_fails.enqueue("boom")
    recovers = tasks.fails_first.enqueue("second time lucky")
    failed = finished(tasks.always_fails, dead.id)
    assert failed.status == TaskResultStatus.FAILED
    assert [e.exception_class_path for e in failed.errors] == ["builtins.ValueError"] * 2
    assert failed.attempts == 2  # task_options(max_attempts=2)
    ok = finished(tasks.fails_first, recovers.id)
    assert ok.status == TaskResultStatus.SUCCESSFUL and ok.return_value == 2
    assert "marked FAILED" in process.output()


def test_a_task_whose_worker_is_killed_is_retried_not_lost(listen: StartListen) -> None:
    process = listen()
    process.wait_for_workers(1)
    marker = Path(tempfile.mkdtemp(prefix="pgpubsub-task-")) / "pid"
    result = tasks.slow_once.enqueue(str(marker), "survivor")
    pid = int(wait_for(lambda: marker.exists() and marker.read_text(), message="task started"))
    assert tasks.slow_once.get_result(result.id).status == TaskResultStatus.RUNNING
    os.kill(pid, signal.SIGKILL)
    done = finished(tasks.slow_once, result.id, timeout=15)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == 2 and done.attempts == 2
    assert done.errors[0].exception_class_path == "pgpubsub.exceptions.WorkerDied"
    assert done.worker_ids[0] != done.worker_ids[1]
    assert list(Author.objects.values_list("name", flat=True)) == ["survivor"]


def test_a_task_past_its_time_limit_is_charged_an_attempt_and_its_effects_rolled_back(
    listen: StartListen,
) -> None:
    process = listen()
    process.wait_for_workers(1)
    stuck = tasks.stuck_once.enqueue("stuck")
    dead = tasks.always_stuck.enqueue()

    done = finished(tasks.stuck_once, stuck.id, timeout=30)
    failed = finished(tasks.always_stuck, dead.id, timeout=30)
    output = process.output()
    process.stop()

    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == 2 and done.attempts == 2
    (error,) = done.errors
    assert error.exception_class_path == "pgpubsub.exceptions.TimeLimitExceeded"
    assert "exceeded its time limit of 1 s" in error.traceback
    # Atomic: the hung attempt's Author went with its session.
    assert list(Author.objects.values_list("name", flat=True)) == ["stuck, attempt 2"]
    assert failed.status == TaskResultStatus.FAILED and failed.attempts == 1
    assert [e.exception_class_path for e in failed.errors] == [
        "pgpubsub.exceptions.TimeLimitExceeded"
    ]
    assert "exceeded its time limit of 1 s: stopping this worker (exit code 4)" in output
    assert "a message or a task ran past its time limit; starting its replacement" in output


def test_djangos_documented_examples_run_unchanged(listen: StartListen) -> None:
    listen().wait_for_workers(1)
    # docs/topics/tasks.txt of Django 6.0, with its example task (testapp.tasks.email_users).
    email_users = tasks.email_users
    result = email_users.enqueue(
        emails=["user@example.com"], subject="You have a message", message="Hello there!"
    )
    result_id = result.id
    assert result.status == TaskResultStatus.READY
    email_users.using(priority=10).enqueue(
        emails=["user@example.com"], subject="Urgent", message="Now"
    )
    later = email_users.using(run_after=timezone.now() + datetime.timedelta(seconds=1))
    later.enqueue(emails=["user@example.com"], subject="Later", message="Soon")
    wait_for(lambda: (result.refresh(), result.is_finished)[1], message="the email sent")
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 1  # send_mail's count of messages sent
    assert email_users.get_result(result_id).return_value == 1
    from pgpubsub.tasks.compat import task_backends

    assert task_backends["default"].get_result(result_id).id == result_id
