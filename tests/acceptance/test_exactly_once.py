"""Lockable channels: every message is handled exactly once, whatever the workers go through."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from django.db import connection, transaction
from django.db.models import Count

import pgpubsub
from pgpubsub.models import Notification
from testapp.channels import AsyncTask, Task
from testapp.models import Author, ListenerEvent, Post
from tests.acceptance.conftest import MAX_ATTEMPTS, POLL_INTERVAL, StartListen, task_keys
from tests.support.processes import holds_open_transaction, run_manage, wait_for

TASK = "testapp.channels.Task"
AUTHORS = "testapp.channels.AuthorTriggerChannel"


@pytest.mark.django_db(transaction=True)
def test_three_processes_give_each_of_500_authors_exactly_one_post(listen: StartListen) -> None:
    process = listen("--processes", "3", "--channels", AUTHORS)
    process.wait_for_workers(3)

    for number in range(100):
        Author.objects.create(name=f"single {number}")
    Author.objects.bulk_create(Author(name=f"bulk {number}") for number in range(300))
    for number in range(100, 200):
        Author(name=f"single {number}").save()

    wait_for(
        lambda: Post.objects.count() >= 500 and not Notification.objects.exists(),
        timeout=60,
        message="500 posts and an empty queue",
    )
    process.stop()  # nothing can run any more: the counts below are final
    assert Post.objects.count() == 500
    posts_per_author = Post.objects.values("author_id").annotate(n=Count("id"))
    assert {row["n"] for row in posts_per_author} == {1}
    assert {row["author_id"] for row in posts_per_author} == set(
        Author.objects.values_list("id", flat=True)
    )
    assert "Traceback" not in process.output()


@pytest.mark.django_db(transaction=True)
def test_message_of_a_worker_killed_mid_callback_is_processed_once_by_another(
    listen: StartListen,
) -> None:
    first = listen("--worker", "--channels", TASK)
    second = listen("--worker", "--channels", TASK)
    first.wait_for_workers(1)
    second.wait_for_workers(1)

    pgpubsub.notify(Task, key="slow", sleep=2.0)
    busy = wait_for(
        lambda: next((p for p in (first, second) if holds_open_transaction(p.pid)), None),
        message="a worker to claim the slow task",
    )
    survivor = second if busy is first else first
    busy.signal(signal.SIGKILL)
    assert busy.wait(timeout=10) == -signal.SIGKILL

    # The killed worker's transaction ends with its connection, which releases the row
    # lock; the survivor finds the message at its next poll and runs it (2 s).
    wait_for(
        lambda: not Notification.objects.exists(),
        timeout=POLL_INTERVAL + 2.0 + 5.0,
        message="the survivor to finish the message",
    )
    survivor.stop()
    events = ListenerEvent.objects.filter(listener="task", object_key="slow")
    assert [event.pid for event in events] == [survivor.pid]


@pytest.mark.django_db(transaction=True)
def test_message_of_a_worker_killed_mid_callback_is_processed_once_by_its_replacement(
    listen: StartListen,
) -> None:
    process = listen("--channels", TASK)
    (killed,) = process.wait_for_workers(1)

    pgpubsub.notify(Task, key="slow", sleep=2.0)
    wait_for(lambda: holds_open_transaction(killed), message="the worker to claim the task")
    os.kill(killed, signal.SIGKILL)
    replacement = wait_for(
        lambda: process.worker_pids()[0] != killed and process.worker_pids()[0],
        message="the supervisor to start a replacement",
    )

    wait_for(
        lambda: not Notification.objects.exists(),
        timeout=15,
        message="the replacement to finish the message",
    )
    process.stop()
    events = ListenerEvent.objects.filter(listener="task", object_key="slow")
    assert [event.pid for event in events] == [replacement]
    assert replacement != killed


@pytest.mark.django_db(transaction=True)
def test_poison_message_is_marked_failed_without_blocking_the_others(
    listen: StartListen,
) -> None:
    process = listen("--worker", "--channels", TASK)
    process.wait_for_workers(1)

    # One transaction: the poison message is claimed in the same batch as the good ones.
    with transaction.atomic():
        for number in range(50):
            pgpubsub.notify(Task, key=f"good {number:03}")
        pgpubsub.notify(Task, key="poison", fail=True)
        for number in range(50, 99):
            pgpubsub.notify(Task, key=f"good {number:03}")

    wait_for(
        lambda: Notification.objects.failed().exists() and len(task_keys()) >= 99,
        timeout=30,
        message="99 good tasks done and the poison marked failed",
    )
    assert task_keys() == [f"good {number:03}" for number in range(99)]
    (poison,) = Notification.objects.all()
    assert poison.payload["kwargs"]["key"] == "poison"
    assert poison.attempts == MAX_ATTEMPTS
    assert poison.failed_at is not None
    assert "ValueError: task poison was asked to fail" in poison.last_error
    assert "marked failed" in process.output()

    output = run_manage("pgpubsub", "retry", "--channel", TASK)
    assert "Re-queued 1 failed notification(s)" in output

    # Retried with a fresh count of attempts: the payload still fails, so it ends failed again.
    wait_for(
        lambda: Notification.objects.filter(failed_at__gt=poison.failed_at).exists(),
        timeout=30,
        message="the retried poison message to be attempted and marked failed again",
    )
    process.stop()
    (retried,) = Notification.objects.all()
    assert retried.attempts == MAX_ATTEMPTS
    assert retried.last_attempt_at > poison.failed_at
    assert "poison" not in task_keys()


@pytest.fixture
def failing_inserts_of_flaky_events(transactional_db: None) -> Iterator[None]:
    """Until dropped, the database refuses ListenerEvent rows with object_key 'flaky'."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE FUNCTION acceptance_refuse_flaky() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.object_key = 'flaky' THEN
                    RAISE EXCEPTION 'flaky outage';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER acceptance_refuse_flaky BEFORE INSERT ON testapp_listenerevent
            FOR EACH ROW EXECUTE FUNCTION acceptance_refuse_flaky();
            """
        )
    yield
    drop_flaky_outage()


def drop_flaky_outage() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "DROP TRIGGER IF EXISTS acceptance_refuse_flaky ON testapp_listenerevent;"
            "DROP FUNCTION IF EXISTS acceptance_refuse_flaky();"
        )


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("failing_inserts_of_flaky_events")
def test_retry_requeues_a_failed_message_which_then_runs_once(listen: StartListen) -> None:
    process = listen("--worker", "--channels", TASK)
    process.wait_for_workers(1)

    pgpubsub.notify(Task, key="flaky")
    pgpubsub.notify(Task, key="fine")
    wait_for(
        lambda: Notification.objects.failed().exists(),
        timeout=30,
        message="the flaky message to be marked failed",
    )
    (failed,) = Notification.objects.all()
    assert failed.attempts == MAX_ATTEMPTS
    assert "flaky outage" in failed.last_error
    assert task_keys() == ["fine"]

    drop_flaky_outage()  # the outage is over
    output = run_manage("pgpubsub", "retry", "--id", str(failed.pk))
    assert "Re-queued 1 failed notification(s)" in output

    # retry sends no NOTIFY: the worker finds the message at its next poll.
    wait_for(
        lambda: not Notification.objects.exists(),
        timeout=POLL_INTERVAL + 5,
        message="the retried message to be processed",
    )
    process.stop()
    assert task_keys() == ["fine", "flaky"]
    assert set(ListenerEvent.objects.values_list("pid", flat=True)) == {process.pid}


@pytest.mark.django_db(transaction=True)
def test_message_breaking_a_deferred_foreign_key_fails_alone(listen: StartListen) -> None:
    # The first post of a deleted author violates a foreign key that Django defers to COMMIT:
    # that message fails, the rest of its batch is committed.
    gone = Author.objects.create(name="gone")
    gone_id = gone.pk
    gone.delete()
    for number in range(5):
        Author.objects.create(name=f"author {number}")

    process = listen("--worker", "--channels", AUTHORS)
    wait_for(
        lambda: Notification.objects.failed().exists() and Post.objects.count() >= 5,
        timeout=30,
        message="5 first posts and the deleted author's message marked failed",
    )
    process.stop()
    assert sorted(Post.objects.values_list("author__name", flat=True)) == [
        f"author {number}" for number in range(5)
    ]
    (failed,) = Notification.objects.all()
    assert failed.payload["new"]["id"] == gone_id
    assert failed.attempts == MAX_ATTEMPTS
    assert "violates foreign key constraint" in failed.last_error


@pytest.mark.django_db(transaction=True)
def test_two_processes_run_an_async_listener_exactly_once_and_retry_its_failures(
    listen: StartListen,
) -> None:
    process = listen("--processes", "2", "--channels", "testapp.channels.AsyncTask")
    process.wait_for_workers(2)

    keys = [f"async {number}" for number in range(100)]
    for key in keys:
        pgpubsub.notify(AsyncTask, key=key)
        if key.endswith("0"):
            pgpubsub.notify(AsyncTask, key=f"{key} bad", fail=True)

    # A failing message is retried, then kept as a dead letter, and its writes are gone.
    wait_for(
        lambda: (
            Notification.objects.count() == 10
            and Notification.objects.filter(failed_at__isnull=False).count() == 10
        ),
        timeout=60,
        message="100 handled and 10 dead letters",
    )
    process.stop()
    events = ListenerEvent.objects.filter(listener="async_task")
    assert sorted(events.values_list("object_key", flat=True)) == sorted(keys)
    assert set(events.values_list("pid", flat=True)) <= set(process.worker_pids().values())
    assert set(Notification.objects.values_list("attempts", flat=True)) == {MAX_ATTEMPTS}
