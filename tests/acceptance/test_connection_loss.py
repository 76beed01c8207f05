"""A worker whose database connections are cut reconnects by itself and loses nothing."""

from __future__ import annotations

import pytest
from django.db import connection

import pgpubsub
from pgpubsub.models import Notification
from testapp.channels import Task
from tests.acceptance.conftest import StartListen, task_keys
from tests.support.processes import backend_pids, wait_for


@pytest.mark.django_db(transaction=True)
def test_worker_reconnects_after_its_backends_are_terminated(listen: StartListen) -> None:
    process = listen("--channels", "testapp.channels.Task")
    (worker,) = process.wait_for_workers(1)
    pgpubsub.notify(Task, key="before")
    wait_for(lambda: task_keys() == ["before"], message="the first task")

    # The LISTEN connection and Django's connection (with DATABASE_POOL=1, also the idle
    # connections of Django's pool).
    old_backends = backend_pids(worker)
    assert len(old_backends) >= 2
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [old_backends]
        )
        # Django's connection may have closed itself in between (at each poll, with
        # CONN_MAX_AGE = 0); the long-lived LISTEN connection cannot have, and the log lines
        # below prove that it was cut.
        assert any(terminated for (terminated,) in cursor.fetchall())

    # Its NOTIFY may be lost while the worker reconnects: the stored message is not.
    pgpubsub.notify(Task, key="after")
    # Events, not time: the worker listens again (its second "listening" event), and then
    # drains what is stored.
    process.wait_listening(2)
    wait_for(
        lambda: not Notification.objects.exists(),
        message="the task sent after the connections were cut",
    )
    new_backends = backend_pids(worker)
    process.stop()

    assert task_keys() == ["after", "before"]
    output = process.output()
    assert "Lost the database connection" in output
    assert "reconnecting in" in output
    assert "Reconnected after" in output
    assert process.worker_pids() == {0: worker}  # the same worker, not a restarted one
    assert new_backends and not set(new_backends) & set(old_backends)


def _backend_in_transaction(client_pid: int) -> int | None:
    """The backend of process ``client_pid`` that is idle in a transaction (a batch's)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s) "
            "AND state = 'idle in transaction'",
            [backend_pids(client_pid)],
        )
        row = cursor.fetchone()
    return row[0] if row else None


@pytest.mark.django_db(transaction=True)
def test_a_message_whose_worker_lost_its_batch_connection_is_not_charged_an_attempt(
    listen: StartListen,
) -> None:
    """The batch's connection of one worker is cut while a callback runs: PostgreSQL rolls
    the batch back, and the other worker takes the message over. The message did nothing
    wrong: it is handled once, with no attempt counted and no error."""
    process = listen("--processes", "2", "--channels", "testapp.channels.Task")
    workers = process.wait_for_workers(2)
    # Long enough that the other worker takes the message over before this callback ends.
    pgpubsub.notify(Task, key="healthy", sleep=3.0)
    busy = wait_for(
        lambda: next((pid for pid in workers if _backend_in_transaction(pid)), None),
        message="a worker running the message",
    )
    backend = _backend_in_transaction(busy)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [backend])

    wait_for(lambda: task_keys() == ["healthy"], message="the message handled")
    output = process.output()
    process.stop()

    assert task_keys() == ["healthy"]
    assert not Notification.objects.filter(attempts__gt=0).exists()
    assert not Notification.objects.exclude(last_error="").exists()
    assert "lost its database connection in the middle of a batch" in output
    assert "will retry" not in output and "was running when its worker" not in output
