"""Retries come when they are due, a requeue wakes the workers, and the log shows the traffic.

The workers here poll once a minute: whatever happens sooner was woken, not polled.
"""

from __future__ import annotations

import datetime
import re

import pytest
from django.utils import timezone

import pgpubsub
from pgpubsub import queue
from pgpubsub.models import Notification
from testapp.channels import Task
from tests.acceptance.conftest import StartListen, task_keys
from tests.support.processes import wait_for

TASK = "testapp.channels.Task"
SLOW_POLL = {"PGPUBSUB_POLL_INTERVAL": "60"}


@pytest.mark.django_db(transaction=True)
def test_retries_follow_the_documented_doubling_schedule(listen: StartListen) -> None:
    backoff = 0.5
    process = listen(
        "--channels",
        TASK,
        env={**SLOW_POLL, "PGPUBSUB_RETRY_BACKOFF": str(backoff), "PGPUBSUB_MAX_ATTEMPTS": "4"},
    )
    process.wait_for_workers(1)

    pgpubsub.notify(Task, key="always fails", fail=True)
    attempts: dict[int, datetime.datetime] = {}

    def record_attempts() -> bool:
        row = Notification.objects.values("attempts", "last_attempt_at", "failed_at").get()
        if row["attempts"]:
            attempts.setdefault(row["attempts"], row["last_attempt_at"])
        return row["failed_at"] is not None

    wait_for(record_attempts, timeout=30, interval=0.01, message="4 attempts, then failed")
    process.stop()

    assert sorted(attempts) == [1, 2, 3, 4], "every attempt seen"
    gaps = [(attempts[n + 1] - attempts[n]).total_seconds() for n in (1, 2, 3)]
    for gap, due in zip(gaps, [backoff, 2 * backoff, 4 * backoff], strict=True):
        # Never early; late by the time to claim and run it (not by a 60-second poll).
        assert due <= gap < due + 1.0, (gaps, "expected 0.5, 1, 2 s")


@pytest.mark.django_db(transaction=True)
def test_a_requeued_message_wakes_the_listening_workers(listen: StartListen) -> None:
    process = listen("--channels", TASK, env=SLOW_POLL)
    process.wait_for_workers(1)
    Notification.objects.create(
        channel=Task.listen_safe_name(),
        payload={"kwargs": {"key": "requeued"}},
        attempts=5,
        failed_at=timezone.now(),
        last_error="failed before",
    )

    assert queue.retry_failed(using="default") == 1  # `manage.py pgpubsub retry`

    wait_for(lambda: task_keys() == ["requeued"], timeout=20, message="the requeued message")
    process.stop()
    assert not Notification.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_each_message_handled_is_logged_at_debug_and_the_traffic_summarised_at_info(
    listen: StartListen,
) -> None:
    for key in ("a", "b", "c"):
        pgpubsub.notify(Task, key=key)
    pgpubsub.notify(Task, key="bad", fail=True)
    ids = dict(Notification.objects.values_list("payload__kwargs__key", "id"))

    process = listen(
        "--channels",
        TASK,
        "--loglevel",
        "debug",
        env={**SLOW_POLL, "PGPUBSUB_PROGRESS_INTERVAL": "0.2", "PGPUBSUB_RETRY_BACKOFF": "60"},
    )
    process.wait_for_workers(1)
    wait_for(lambda: task_keys() == ["a", "b", "c"], message="the three good tasks")
    sent = iter(range(1000))

    def more_traffic_then_a_summary() -> bool:
        # A line comes with traffic, once an interval has passed since the previous one.
        pgpubsub.notify(Task, key=f"more {next(sent)}")
        return "In the last" in process.output()

    wait_for(more_traffic_then_a_summary, interval=0.3, message="a summary line")
    output = process.output()
    process.stop()

    for key in ("a", "b", "c"):
        assert f"Handled notification {ids[key]} of channel {TASK} (attempt 1) in " in output
    assert f"Handled notification {ids['bad']}" not in output
    assert f"Notification {ids['bad']} of channel {TASK} failed (attempt 1 of 3), will retry" in (
        output
    )
    summary = next(line for line in output.splitlines() if "In the last" in line)
    assert re.search(
        r": [4-9]\d* handled, 1 failed \(1 to be retried\); (nothing|oldest) wait", summary
    )
