"""Signals to a supervised ``listen``: exit codes, a second signal, SIGHUP, duplicates."""

from __future__ import annotations

import os
import signal

import pytest

import pgpubsub
from pgpubsub.models import Notification
from testapp.channels import Task
from tests.acceptance.conftest import StartListen, task_keys
from tests.support.processes import holds_open_transaction, is_running, wait_for

TASK = "testapp.channels.Task"


def task_pids(key: str) -> list[int]:
    from testapp.models import ListenerEvent

    events = ListenerEvent.objects.filter(listener="task", object_key=key)
    return list(events.values_list("pid", flat=True))


@pytest.mark.django_db(transaction=True)
def test_a_graceful_stop_exits_0_even_while_the_workers_are_starting(
    listen: StartListen,
) -> None:
    # SIGTERM as soon as the supervisor started its workers: before, it reached workers that
    # had not installed their handlers yet, which died of it (and listen exited 1).
    for attempt in range(4):
        process = listen("--processes", "2", "--channels", TASK)
        wait_for(
            lambda: len(process.worker_pids()) == 2,  # noqa: B023 (called in this turn)
            message="the supervisor to start 2 workers",
        )
        process.signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, f"attempt {attempt}:\n{process.output()}"
        assert "Traceback" not in process.output()


@pytest.mark.django_db(transaction=True)
def test_a_second_sigterm_to_the_supervisor_stops_its_workers_at_once(
    listen: StartListen,
) -> None:
    process = listen("--channels", TASK, env={"PGPUBSUB_SHUTDOWN_TIMEOUT": "60"})
    (worker,) = process.wait_for_workers(1)
    pgpubsub.notify(Task, key="slow", sleep=60.0)
    wait_for(lambda: holds_open_transaction(worker), message="the worker to claim the task")

    process.signal(signal.SIGTERM)
    process.wait_for_output("SIGUSR1 received")
    process.signal(signal.SIGTERM)  # right away: not taken for a duplicate
    assert process.wait(timeout=20) == 1
    assert "SIGQUIT (the supervisor stops at once): exiting now" in process.output()
    assert not is_running(worker)
    (stored,) = Notification.objects.all()
    assert (stored.attempts, stored.failed_at) == (0, None)


@pytest.mark.django_db(transaction=True)
def test_sigterm_to_the_supervisor_and_its_worker_alike_is_one_graceful_stop(
    listen: StartListen,
) -> None:
    # What systemd's default KillMode=control-group does: every process gets a SIGTERM. The
    # worker finishes its message, whichever signal comes first.
    process = listen("--channels", TASK, env={"PGPUBSUB_SHUTDOWN_TIMEOUT": "30"})
    (worker,) = process.wait_for_workers(1)
    pgpubsub.notify(Task, key="slow", sleep=2.0)
    wait_for(lambda: holds_open_transaction(worker), message="the worker to claim the task")

    os.kill(worker, signal.SIGTERM)
    process.signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0, process.output()
    assert task_keys() == ["slow"]
    assert "exiting now" not in process.output()


@pytest.mark.django_db(transaction=True)
def test_sighup_replaces_each_worker_after_its_current_message(listen: StartListen) -> None:
    process = listen("--processes", "2", "--channels", TASK)
    old_workers = process.wait_for_workers(2)
    pgpubsub.notify(Task, key="slow", sleep=2.0)
    wait_for(
        lambda: any(holds_open_transaction(pid) for pid in old_workers),
        message="a worker to claim the task",
    )

    process.signal(signal.SIGHUP)
    new_workers = wait_for(
        lambda: (pids := set(process.worker_pids().values())).isdisjoint(old_workers) and pids,
        message="2 new workers",
    )
    process.wait_listening(4)
    assert task_keys() == ["slow"]  # finished by its worker before it exited
    assert not any(is_running(pid) for pid in old_workers)
    assert process.process.poll() is None

    pgpubsub.notify(Task, key="after")
    wait_for(lambda: task_pids("after"), message="a new worker to run the next task")
    assert set(task_pids("after")) <= new_workers
    assert "was killed" not in process.output()
    process.signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
