"""The supervisor: restarts a killed worker unless told not to; both start methods work."""

from __future__ import annotations

import os
import signal

import pytest

import pgpubsub
from pgpubsub.models import Notification
from testapp.channels import Announcement
from testapp.models import Author, ListenerEvent, Post
from tests.acceptance.conftest import StartListen
from tests.support.processes import ListenProcess, is_running, wait_for

ANNOUNCEMENT = "testapp.channels.Announcement"


def announcement_pids(text: str) -> list[int]:
    """The pids of the workers that handled the announcement ``text`` so far."""
    return sorted(
        ListenerEvent.objects.filter(listener="announcement", object_key=text).values_list(
            "pid", flat=True
        )
    )


def announce_and_collect(text: str, expected: int) -> list[int]:
    pgpubsub.notify(Announcement, text=text)
    return wait_for(
        lambda: len(pids := announcement_pids(text)) >= expected and pids,
        message=f"{expected} worker(s) to handle {text!r}",
    )


def kill_worker(process: ListenProcess, pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    process.wait_for_output(f"(pid {pid}) was killed by signal {signal.SIGKILL.value}")
    assert not is_running(pid)


@pytest.mark.django_db(transaction=True)
def test_supervisor_replaces_a_worker_killed_with_sigkill(listen: StartListen) -> None:
    process = listen("--processes", "2", "--channels", ANNOUNCEMENT)
    killed, survivor = process.wait_for_workers(2)

    kill_worker(process, killed)
    replacement = wait_for(
        lambda: process.worker_pids()[0] not in (killed, survivor) and process.worker_pids()[0],
        message="the supervisor to start a replacement",
    )
    assert replacement not in (killed, survivor)
    process.wait_listening(3)

    assert announce_and_collect("after the restart", 2) == sorted([replacement, survivor])
    process.stop()
    assert announcement_pids("after the restart") == sorted([replacement, survivor])


@pytest.mark.django_db(transaction=True)
def test_no_restart_on_failure_leaves_a_killed_worker_dead(listen: StartListen) -> None:
    process = listen("--processes", "2", "--no-restart-on-failure", "--channels", ANNOUNCEMENT)
    killed, survivor = process.wait_for_workers(2)

    kill_worker(process, killed)
    assert "not restarting (--no-restart-on-failure)" in process.output()
    assert announce_and_collect("one worker left", 1) == [survivor]
    assert process.process.poll() is None

    # Once no worker is left, the supervisor exits, reporting the failure.
    kill_worker(process, survivor)
    assert process.wait(timeout=10) == 1
    assert len(process.events("worker_started")) == 2
    assert announcement_pids("one worker left") == [survivor]


@pytest.mark.django_db(transaction=True)
def test_workers_stop_by_themselves_when_the_supervisor_is_killed(listen: StartListen) -> None:
    process = listen("--processes", "2", "--channels", ANNOUNCEMENT)
    workers = process.wait_for_workers(2)
    process.signal(signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL
    wait_for(
        lambda: not any(is_running(pid) for pid in workers),
        timeout=10,
        message="the orphaned workers to stop",
    )
    assert process.output().count("The supervising process is gone: stopping") == 2


@pytest.mark.django_db(transaction=True)
def test_fork_start_method_runs_workers(listen: StartListen) -> None:
    process = listen(
        "--worker-start-method",
        "fork",
        "--processes",
        "2",
        "--channels",
        "testapp.channels.AuthorTriggerChannel",
        ANNOUNCEMENT,
    )
    workers = process.wait_for_workers(2)
    Author.objects.bulk_create(Author(name=f"author {number}") for number in range(20))
    assert announce_and_collect("forked", 2) == sorted(workers)
    wait_for(
        lambda: Post.objects.count() >= 20 and not Notification.objects.exists(),
        message="20 first posts",
    )
    process.stop()
    assert Post.objects.count() == 20
    assert "Traceback" not in process.output()
