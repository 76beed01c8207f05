"""SIGTERM: a clean exit within PGPUBSUB_SHUTDOWN_TIMEOUT, no orphans, no lost message."""

from __future__ import annotations

import signal

import pytest

import pgpubsub
from pgpubsub.models import Notification
from testapp.channels import Task
from tests.acceptance.conftest import StartListen, task_keys
from tests.support.processes import descendants, holds_open_transaction, is_running, wait_for

TASK = "testapp.channels.Task"


@pytest.mark.django_db(transaction=True)
def test_sigterm_stops_an_idle_supervisor_and_all_its_workers_with_exit_code_0(
    listen: StartListen,
) -> None:
    # A shutdown timeout far longer than the test may take: an exit 0 (not a kill at the
    # timeout) shows that idle workers stop as soon as they are asked to.
    process = listen("--processes", "2", env={"PGPUBSUB_SHUTDOWN_TIMEOUT": "600"})
    workers = process.wait_for_workers(2)
    tree = descendants(process.pid)
    assert set(workers) <= set(tree)

    process.signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0

    wait_for(
        lambda: not any(is_running(pid) for pid in tree),
        timeout=5,
        message=f"the processes {tree} started by listen to end",
    )
    output = process.output()
    assert output.count("stopped: 0 processed, 0 failed") == 2
    assert "All workers stopped" in output
    assert "Traceback" not in output


@pytest.mark.django_db(transaction=True)
def test_sigterm_stops_an_idle_single_worker_with_exit_code_0(listen: StartListen) -> None:
    process = listen("--worker", env={"PGPUBSUB_SHUTDOWN_TIMEOUT": "600"})
    process.wait_for_workers(1)
    assert descendants(process.pid) == []  # the worker runs in the command's process
    process.signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert "stopped: 0 processed, 0 failed" in process.output()


@pytest.mark.django_db(transaction=True)
def test_sigterm_during_a_slow_callback_finishes_the_message_then_exits(
    listen: StartListen,
) -> None:
    process = listen("--channels", TASK, env={"PGPUBSUB_SHUTDOWN_TIMEOUT": "10"})
    (worker,) = process.wait_for_workers(1)
    pgpubsub.notify(Task, key="slow", sleep=3.0)
    wait_for(lambda: holds_open_transaction(worker), message="the worker to claim the task")

    process.signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    assert task_keys() == ["slow"]
    assert not Notification.objects.exists()
    assert "stopped: 1 processed, 0 failed" in process.output()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("signals", "shutdown_timeout", "last_words"),
    [
        (1, "1", "(PGPUBSUB_SHUTDOWN_TIMEOUT): exiting"),
        (2, "30", "Second SIGTERM: exiting now"),
    ],
    ids=["shutdown-timeout", "second-sigterm"],
)
def test_worker_stopped_before_a_slow_callback_ends_leaves_the_message_stored(
    listen: StartListen, signals: int, shutdown_timeout: str, last_words: str
) -> None:
    # Stopped by the shutdown timeout (1 s < 3 s of sleep) or by a second SIGTERM: the
    # unfinished message's transaction is rolled back and the message stays stored.
    process = listen(
        "--worker", "--channels", TASK, env={"PGPUBSUB_SHUTDOWN_TIMEOUT": shutdown_timeout}
    )
    process.wait_for_workers(1)
    pgpubsub.notify(Task, key="slow", sleep=3.0)
    wait_for(lambda: holds_open_transaction(process.pid), message="the worker to claim the task")

    for number in range(1, signals + 1):
        # The second right after the first is logged: no window in which it is ignored.
        process.signal(signal.SIGTERM)
        process.wait_for_output("SIGTERM", count=number)
    assert process.wait(timeout=10) == 1
    assert last_words in process.output()
    assert task_keys() == []
    (stored,) = Notification.objects.all()
    assert (stored.attempts, stored.failed_at) == (0, None)

    # Not lost: the next worker runs it, once.
    successor = listen("--worker", "--channels", TASK)
    wait_for(lambda: not Notification.objects.exists(), timeout=15, message="the task to run")
    successor.stop()
    assert task_keys() == ["slow"]
