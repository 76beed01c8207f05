"""A callback that hangs: past its time limit, its worker process is replaced.

The message is charged a failed attempt with an error that says so, goes through its retries
to a dead letter like any failing message, and the rest of its batch is handled exactly once.
A hung worker does not outlive its supervisor either.
"""

from __future__ import annotations

import os
import signal

import pytest
from django.db import transaction

import pgpubsub
from pgpubsub.models import InFlightBatch, Notification
from testapp.channels import Announcement, Task
from testapp.listeners import HANGING_ANNOUNCEMENT
from testapp.models import ListenerEvent
from tests.acceptance.conftest import MAX_ATTEMPTS, SHUTDOWN_TIMEOUT, StartListen, task_keys
from tests.support.processes import holds_open_transaction, is_running, wait_for

TASK = "testapp.channels.Task"
ANNOUNCEMENT = "testapp.channels.Announcement"
#: Longer than any test: the callback hangs, as far as the worker can tell.
HANG = 120.0


@pytest.mark.django_db(transaction=True)
def test_a_message_past_its_time_limit_is_charged_and_dead_lettered_and_its_batch_handled_once(
    listen: StartListen,
) -> None:
    process = listen(
        "--processes", "2", "--channels", TASK, env={"PGPUBSUB_MESSAGE_TIME_LIMIT": "1"}
    )
    first_workers = set(process.wait_for_workers(2))

    good = [f"good {number:02}" for number in range(20)]
    with transaction.atomic():  # one batch: the hung message among the good ones
        for key in good[:10]:
            pgpubsub.notify(Task, key=key)
        pgpubsub.notify(Task, key="hangs", sleep=HANG)
        for key in good[10:]:
            pgpubsub.notify(Task, key=key)

    wait_for(
        lambda: Notification.objects.failed().exists() and len(task_keys()) >= len(good),
        timeout=30,
        message="the good tasks done and the hung one marked failed",
    )
    pgpubsub.notify(Task, key="sent later")
    wait_for(lambda: "sent later" in task_keys(), message="a message sent afterwards handled")
    output = process.output()
    replaced = set(process.worker_pids().values()) - first_workers
    process.stop()

    assert task_keys() == sorted([*good, "sent later"])  # each exactly once
    hung = Notification.objects.get()
    assert hung.payload["kwargs"]["key"] == "hangs"
    assert hung.attempts == MAX_ATTEMPTS
    assert hung.failed_at is not None
    assert "exceeded its time limit of 1 s in testapp.listeners.run_task" in hung.last_error
    assert "PGPUBSUB_MESSAGE_TIME_LIMIT" in hung.last_error
    assert f"Notification {hung.pk} of channel {TASK} exceeded its time limit of 1 s" in output
    assert "a message or a task ran past its time limit; starting its replacement" in output
    assert replaced, "the supervisor replaced the hung workers"
    assert not InFlightBatch.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_message_stuck_in_a_query_is_charged_and_its_locks_released_at_once(
    listen: StartListen,
) -> None:
    """The callback waits in the driver's C code for a query that would run 2 minutes: the
    watchdog ends the batch's database session too, or the query would hold the batch's row
    locks long after its worker is gone."""
    process = listen(
        "--processes",
        "2",
        "--channels",
        TASK,
        env={"PGPUBSUB_MESSAGE_TIME_LIMIT": "1", "PGPUBSUB_MAX_ATTEMPTS": "1"},
    )
    process.wait_for_workers(2)

    good = [f"good {number}" for number in range(5)]
    with transaction.atomic():
        pgpubsub.notify(Task, key="stuck", query_sleep=HANG)
        for key in good:
            pgpubsub.notify(Task, key=key)

    wait_for(
        lambda: Notification.objects.failed().exists() and len(task_keys()) >= len(good),
        timeout=20,
        message="the good tasks done and the stuck one marked failed, long before its query ends",
    )
    process.stop()

    assert task_keys() == good
    stuck = Notification.objects.get()
    assert stuck.attempts == 1 and stuck.failed_at is not None
    assert "exceeded its time limit of 1 s in testapp.listeners.run_task" in stuck.last_error


@pytest.mark.django_db(transaction=True)
def test_a_worker_busy_with_a_hung_message_stops_when_its_supervisor_is_killed(
    listen: StartListen,
) -> None:
    """No time limit here: the worker is asked to stop by the kernel, and exits when its
    message is not done PGPUBSUB_SHUTDOWN_TIMEOUT seconds later."""
    process = listen("--channels", TASK)
    (worker,) = process.wait_for_workers(1)
    pgpubsub.notify(Task, key="hangs", sleep=HANG)
    wait_for(lambda: holds_open_transaction(worker), message="the worker busy with the message")

    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL
    wait_for(
        lambda: not is_running(worker),
        timeout=SHUTDOWN_TIMEOUT + 5,
        message="the orphaned worker to exit",
    )

    assert "The supervising process is gone: stopping" in process.output()
    message = Notification.objects.get()  # rolled back: stored for the next worker
    assert message.attempts == 0


@pytest.mark.django_db(transaction=True)
def test_a_fanout_message_past_its_time_limit_ends_its_worker_and_the_next_one_listens(
    listen: StartListen,
) -> None:
    process = listen("--channels", ANNOUNCEMENT, env={"PGPUBSUB_MESSAGE_TIME_LIMIT": "1"})
    (hung,) = process.wait_for_workers(1)

    pgpubsub.notify(Announcement, text=HANGING_ANNOUNCEMENT)
    process.wait_listening(2)  # the replacement of the hung worker
    pgpubsub.notify(Announcement, text="after")
    wait_for(
        lambda: ListenerEvent.objects.filter(object_key="after").exists(),
        message="an announcement sent afterwards handled",
    )
    output = process.output()
    process.stop()

    assert not is_running(hung)
    assert list(ListenerEvent.objects.values_list("object_key", flat=True)) == ["after"]
    assert (
        f"A fan-out message of channel {ANNOUNCEMENT} exceeded its time limit of 1 s in "
        "testapp.listeners.record_announcement: stopping this worker (exit code 4)"
    ) in output
    assert "a message or a task ran past its time limit; starting its replacement" in output
