"""Stored messages are never lost: recovered at start, and found by polling without a NOTIFY."""

from __future__ import annotations

import json
import re

import pytest
from django.db import connection

import pgpubsub
from pgpubsub import codec
from pgpubsub.models import Notification
from testapp.channels import Task, Tick
from testapp.models import Author, Post
from tests.acceptance.conftest import POLL_INTERVAL, StartListen, task_keys
from tests.support.processes import wait_for

#: Slack for a loaded machine on top of the delays under test.
MARGIN = 2.0


def store_without_notify(key: str) -> None:
    """Store a Task message as pgpubsub would, but without NOTIFY (as if it were lost)."""
    payload = json.loads(codec.dumps(Task.build_payload({"key": key})))
    Notification.objects.create(channel=Task.listen_safe_name(), payload=payload)


@pytest.mark.django_db(transaction=True)
def test_recover_processes_messages_stored_while_nothing_listened(listen: StartListen) -> None:
    for number in range(150):  # more than one batch (PGPUBSUB_BATCH_SIZE = 100)
        pgpubsub.notify(Task, key=f"task {number:03}")
    Author.objects.bulk_create(Author(name=f"author {number}") for number in range(20))
    assert Notification.objects.count() == 170

    process = listen(
        "--recover", "--channels", "testapp.channels.Task", "testapp.channels.AuthorTriggerChannel"
    )
    process.wait_for_output("Recovery finished")
    assert "Recovering 170 stored notification(s) of 2 channel(s)" in process.output()
    assert "Recovery finished: 170 notification(s)" in process.output()
    process.stop()
    assert not Notification.objects.exists()
    assert task_keys() == [f"task {number:03}" for number in range(150)]
    assert Post.objects.count() == 20


@pytest.mark.django_db(transaction=True)
def test_without_recover_stored_messages_are_found_within_the_poll_interval(
    listen: StartListen,
) -> None:
    pgpubsub.notify(Task, key="stored before start")

    process = listen("--worker", "--channels", "testapp.channels.Task")
    process.wait_for_workers(1)
    wait_for(
        lambda: not Notification.objects.exists(),
        timeout=POLL_INTERVAL + MARGIN,
        message="the message stored before the start",
    )

    # No NOTIFY wakes the worker: only its poll finds the message.
    store_without_notify("stored silently")
    wait_for(
        lambda: not Notification.objects.exists(),
        timeout=POLL_INTERVAL + MARGIN,
        message="the poll to find the message stored without NOTIFY",
    )
    process.stop()
    assert task_keys() == ["stored before start", "stored silently"]


def store_backlog(count: int) -> None:
    """Store ``count`` Tick messages in one statement, as if sent while nothing listened."""
    table = Notification._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (channel, payload, created_at, attempts, available_at, "
            "last_error) SELECT %s, %s::jsonb, now(), 0, now(), '' FROM generate_series(1, %s)",
            [Tick.listen_safe_name(), codec.dumps(Tick.build_payload({"number": 0})), count],
        )


@pytest.mark.django_db(transaction=True)
def test_recover_logs_progress_over_a_large_backlog(listen: StartListen) -> None:
    backlog = 20_000
    store_backlog(backlog)

    # A progress line after every batch (PGPUBSUB_BATCH_SIZE = 100) rather than every 5 s.
    process = listen(
        "--worker",
        "--recover",
        "--channels",
        "testapp.channels.Tick",
        env={"PGPUBSUB_PROGRESS_INTERVAL": "0"},
    )
    process.wait_for_output("Recovery finished", timeout=60)
    output = process.output()
    process.stop()

    assert f"Recovering {backlog} stored notification(s) of 1 channel(s)" in output
    progress = re.findall(
        rf"Recovery: (\d+)/{backlog} done, \d+/s, about (\d+ s|unknown) left", output
    )
    done = [int(count) for count, _ in progress]
    assert list(dict.fromkeys(done)) == list(range(100, backlog + 1, 100))
    assert progress[-1][1] == "0 s"
    assert f"Recovery finished: {backlog} notification(s)" in output
    assert "\r" not in output  # not a terminal: no progress bar
    assert not Notification.objects.exists()
