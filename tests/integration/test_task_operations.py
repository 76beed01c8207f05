"""Failed tasks (pgpubsub.tasks) in `manage.py pgpubsub failed|retry` and in the admin."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from pgpubsub.tasks.models import StoredTask
from testapp import tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def failed_task() -> StoredTask:
    result = tasks.always_fails.enqueue("boom")
    StoredTask.objects.filter(pk=result.id).update(
        status="FAILED",
        attempts=2,
        errors=[
            {
                "exception_class_path": "builtins.ValueError",
                "traceback": "Traceback (most recent call last):\nValueError: boom",
            }
        ],
    )
    return StoredTask.objects.get(pk=result.id)


def _run(*args: str) -> str:
    out = StringIO()
    call_command("pgpubsub", *args, stdout=out)
    return out.getvalue()


def test_failed_lists_failed_tasks_after_the_notifications(failed_task: StoredTask) -> None:
    tasks.add.enqueue(1, 2)  # READY: not listed
    output = _run("failed")
    assert "No failed notifications." in output
    assert "Failed tasks" in output
    (row,) = [line for line in output.splitlines() if "testapp.tasks" in line]
    assert row.split()[:3] == [str(failed_task.pk), "2", "testapp.tasks.always_fails"]
    assert row.endswith("ValueError: boom")


def test_failed_without_failed_tasks_prints_what_it_printed_before() -> None:
    tasks.add.enqueue(1, 2)
    assert _run("failed") == "No failed notifications.\n"


def test_retry_tasks_makes_failed_tasks_ready_with_a_fresh_attempt_count(
    failed_task: StoredTask,
) -> None:
    assert _run("retry", "--task", str(failed_task.pk)) == "Re-queued 1 failed task(s).\n"
    failed_task.refresh_from_db()
    assert (failed_task.status, failed_task.attempts) == ("READY", 0)
    assert len(failed_task.errors) == 1  # kept
    assert _run("retry", "--tasks") == "Re-queued 0 failed task(s).\n"


def test_retry_of_tasks_with_notification_filters_is_refused(failed_task: StoredTask) -> None:
    with pytest.raises(CommandError, match="remove --id and --channel"):
        _run("retry", "--tasks", "--id", "1")


def test_the_admin_lists_tasks_and_shows_a_failed_ones_traceback(
    admin_client: Client, failed_task: StoredTask
) -> None:
    page = admin_client.get(reverse("admin:pgpubsub_storedtask_changelist")).content.decode()
    assert "testapp.tasks.always_fails" in page and "ValueError: boom" in page
    url = reverse("admin:pgpubsub_storedtask_change", args=[failed_task.pk])
    detail = admin_client.get(url).content.decode()
    assert "Traceback (most recent call last)" in detail
    assert "&quot;boom&quot;" in detail


def test_the_admin_retries_failed_tasks(admin_client: Client, failed_task: StoredTask) -> None:
    response = admin_client.post(
        reverse("admin:pgpubsub_storedtask_changelist"),
        {"action": "retry_failed_tasks", "_selected_action": [failed_task.pk]},
        follow=True,
    )
    assert "1 failed task(s) will run again now." in response.content.decode()
    failed_task.refresh_from_db()
    assert (failed_task.status, failed_task.attempts) == ("READY", 0)
