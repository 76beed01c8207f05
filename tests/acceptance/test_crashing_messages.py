"""A message whose callback kills its worker process (out of memory, a crash in native code).

Its transaction dies with the process, so nothing inside it can count the attempt: workers
record each batch outside it (pgpubsub.inflight). Without that, such a message came back
after every restart, forever, and took the rest of its batch down with it each time.
"""

from __future__ import annotations

import pytest
from django.db import transaction

import pgpubsub
from pgpubsub.models import InFlightBatch, Notification
from testapp.channels import Task
from tests.acceptance.conftest import MAX_ATTEMPTS, StartListen, task_keys
from tests.support.processes import wait_for

TASK = "testapp.channels.Task"


@pytest.mark.django_db(transaction=True)
def test_a_message_that_kills_its_worker_is_charged_each_time_then_marked_failed(
    listen: StartListen,
) -> None:
    process = listen("--processes", "2", "--channels", TASK)
    first_workers = set(process.wait_for_workers(2))

    # One transaction: the killer is claimed in one batch with the others.
    good = [f"good {number:02}" for number in range(20)]
    with transaction.atomic():
        for key in good[:10]:
            pgpubsub.notify(Task, key=key)
        pgpubsub.notify(Task, key="killer", crash=True)
        for key in good[10:]:
            pgpubsub.notify(Task, key=key)

    wait_for(
        lambda: Notification.objects.failed().exists() and len(task_keys()) >= len(good),
        timeout=60,
        message="the 20 good tasks done and the killer marked failed",
    )
    killer = Notification.objects.get()
    output = process.output()
    restarted = set(process.worker_pids().values()) - first_workers
    process.stop()

    assert task_keys() == good  # each exactly once, though batches died with their workers
    assert killer.payload["kwargs"]["key"] == "killer"
    assert killer.attempts == MAX_ATTEMPTS
    assert killer.failed_at is not None
    assert "worker process running this message ended before it finished" in killer.last_error
    assert "was running when its worker process ended" in output
    assert "marked failed" in output
    assert "was killed by signal 9, SIGKILL (kill -9, or the out-of-memory killer)" in output
    assert restarted, "the supervisor replaced the killed workers"
    assert not InFlightBatch.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_callback_raising_systemexit_or_keyboardinterrupt_is_a_failed_attempt_of_its_message(
    listen: StartListen,
) -> None:
    """Such a message once stalled its channel: its batch was rolled back, its attempt never
    counted, and every worker that claimed it died. Now it is that message's failure."""
    process = listen("--processes", "2", "--channels", TASK)
    workers = set(process.wait_for_workers(2))

    good = [f"good {number:02}" for number in range(30)]
    with transaction.atomic():  # one batch: the poison messages among the good ones
        for key in good[:10]:
            pgpubsub.notify(Task, key=key)
        pgpubsub.notify(Task, key="exits", raise_base="SystemExit")
        for key in good[10:20]:
            pgpubsub.notify(Task, key=key)
        pgpubsub.notify(Task, key="interrupts", raise_base="KeyboardInterrupt")
        pgpubsub.notify(Task, key="bare", raise_base="BaseException")
        for key in good[20:]:
            pgpubsub.notify(Task, key=key)

    wait_for(
        lambda: Notification.objects.failed().count() == 3 and len(task_keys()) >= len(good),
        timeout=60,
        message="the 30 good tasks done and the 3 poison messages marked failed",
    )
    pgpubsub.notify(Task, key="sent later")
    wait_for(lambda: "sent later" in task_keys(), message="a later message handled")
    output = process.output()
    pids_after = set(process.worker_pids().values())
    process.stop()

    assert task_keys() == sorted([*good, "sent later"])  # each exactly once
    failed = {n.payload["kwargs"]["key"]: n for n in Notification.objects.failed()}
    assert set(failed) == {"exits", "interrupts", "bare"}
    for key, exception in [
        ("exits", "SystemExit: 3"),
        ("interrupts", "KeyboardInterrupt"),
        ("bare", "BaseException: task bare raised"),
    ]:
        assert failed[key].attempts == MAX_ATTEMPTS
        assert exception in failed[key].last_error
        assert "run_task" in failed[key].last_error  # the traceback
        assert f"Notification {failed[key].pk} of channel {TASK} failed: a callback raised" in (
            output
        )
    assert pids_after == workers, "the workers carried on: none died or was restarted"
    assert "exited with code" not in output
