"""``manage.py pgpubsub status``: counts per channel, JSON output and health checks."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

import pgpubsub
from pgpubsub.models import Notification
from testapp.channels import Task

pytestmark = pytest.mark.django_db


def _status(*args: str) -> str:
    out = StringIO()
    call_command("pgpubsub", "status", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def prepared() -> None:
    for key in ("a", "b", "c", "d"):
        pgpubsub.notify(Task, key=key)
    first, second, *_ = Notification.objects.order_by("id")
    Notification.objects.filter(pk=first.pk).update(attempts=3, failed_at=timezone.now())
    Notification.objects.filter(pk=second.pk).update(attempts=1)


def test_status_json_counts_new_retrying_and_failed_per_channel(prepared: None) -> None:
    report = json.loads(_status("--json"))
    (task,) = [c for c in report["channels"] if c["channel"] == "testapp.channels.Task"]
    assert (task["new"], task["retrying"], task["failed"]) == (2, 1, 1)
    assert task["lockable"] is True
    assert task["listeners"] == ["testapp.listeners.run_task"]
    assert task["oldest_waiting_seconds"] >= 0
    assert report["workers_connected"] == 0
    assert 0 <= report["notify_queue_usage"] < 1


def test_status_check_exits_non_zero_when_failed_notifications_exceed_the_limit(
    prepared: None,
) -> None:
    with pytest.raises(SystemExit) as exited:
        _status("--check", "--max-failed", "0")
    assert exited.value.code == 1
    assert "testapp.channels.Task" in _status("--check", "--max-failed", "1")


def test_status_check_exits_non_zero_when_the_oldest_waiting_is_too_old(prepared: None) -> None:
    Notification.objects.update(created_at=timezone.now() - timedelta(hours=1))
    with pytest.raises(SystemExit) as exited:
        _status("--check", "--max-age", "60")
    assert exited.value.code == 1
    _status("--check", "--max-age", "7200")
