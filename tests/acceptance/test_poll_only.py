"""``listen --poll-only``: serving lockable channels without LISTEN (pgbouncer)."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

import pgpubsub
from pgpubsub.options import WorkerOptions
from pgpubsub.worker import connection_factory
from testapp.channels import Task
from tests.acceptance.conftest import StartListen, task_keys
from tests.support.processes import wait_for


def test_poll_only_worker_processes_stored_messages_without_listen(listen: StartListen) -> None:
    worker = listen(
        "--worker", "--poll-only", "--channels", "testapp.channels.Task", "--loglevel", "info"
    )
    (ready,) = worker.wait_listening(1)
    assert ready["poll_only"] is True
    for key in ("a", "b", "c"):
        pgpubsub.notify(Task, key=key)
    wait_for(lambda: task_keys() == ["a", "b", "c"], timeout=15, message="polled tasks")
    assert "by polling every 0.5 s (no LISTEN)" in worker.output()


@pytest.mark.django_db
@pytest.mark.parametrize("poll_only", [True, False])
def test_a_poll_only_worker_connection_listens_on_nothing(poll_only: bool) -> None:
    """What the server says the worker's own connection listens on (pg_listening_channels)."""
    options = WorkerOptions(channels=("testapp.channels.Task",), poll_only=poll_only)
    connection = connection_factory(options)()
    try:
        connection.listen([Task.listen_safe_name()])  # what the worker's session does
        listening = connection.execute("SELECT pg_listening_channels()", [])
    finally:
        connection.close()
    assert listening == ([] if poll_only else [(Task.listen_safe_name(),)])


@pytest.mark.django_db
def test_poll_only_refuses_fanout_channels_it_could_never_receive() -> None:
    with pytest.raises(
        CommandError, match=r"--poll-only cannot serve fan-out channels.*Announcement"
    ):
        call_command("listen", "--worker", "--poll-only")
