"""``listen --poll-only``: serving lockable channels without LISTEN (pgbouncer)."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

import pgpubsub
from testapp.channels import Task
from tests.acceptance.conftest import StartListen, task_keys
from tests.support.processes import wait_for


def test_poll_only_worker_processes_stored_messages_without_listen(listen: StartListen) -> None:
    worker = listen(
        "--worker", "--poll-only", "--channels", "testapp.channels.Task", "--loglevel", "info"
    )
    worker.wait_for_output("by polling every")
    for key in ("a", "b", "c"):
        pgpubsub.notify(Task, key=key)
    wait_for(lambda: task_keys() == ["a", "b", "c"], timeout=15, message="polled tasks")


@pytest.mark.django_db
def test_poll_only_refuses_fanout_channels_it_could_never_receive() -> None:
    with pytest.raises(
        CommandError, match=r"--poll-only cannot serve fan-out channels.*Announcement"
    ):
        call_command("listen", "--worker", "--poll-only")
