"""In-flight records: a message whose callbacks kill the worker process is charged an attempt.

A worker records each claimed batch on its own autocommit connection before running it and
deletes the record in the batch's transaction. Here a dead worker is what it leaves in the
database: its record, committed, and its batch's messages, unlocked. The real thing, a worker
killed by SIGKILL in a callback, is in tests/acceptance/test_crashing_messages.py.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.test import override_settings
from django.utils import timezone

import pgpubsub
from pgpubsub import Channel, inflight
from pgpubsub.connection import open_listen_connection
from pgpubsub.exceptions import TimeLimitExceeded, WorkerDied
from pgpubsub.models import InFlightBatch, Notification
from pgpubsub.signals import notification_failed
from pgpubsub.stored import StoredProcessor
from testapp.channels import Task
from testapp.models import ListenerEvent

# The records are committed by another connection: the tests commit too.
pytestmark = pytest.mark.django_db(transaction=True)

DEAD_WORKER = "pgpubsub worker 4242 on a-host-that-is-gone"
WORKER = "pgpubsub worker under test"


@dataclass
class Watched(Channel):
    """A lockable channel whose listener each test registers."""

    key: str
    lock_notifications = True


@pytest.fixture
def journal() -> Iterator[inflight.Journal]:
    """A journal on a connection of its own, as a worker has."""
    connection = open_listen_connection("default")
    journal = inflight.Journal(WORKER, "default")
    journal.attach(connection)
    yield journal
    connection.close()


def processor_with(journal: inflight.Journal) -> StoredProcessor:
    """A processor as a worker has (made in the test, so that it reads the test's settings)."""
    return StoredProcessor(journal=journal)


def send(channel: type[Channel], *keys: str) -> list[int]:
    """Send one message per key; return the ids of every stored message, oldest first."""
    for key in keys:
        pgpubsub.notify(channel, key=key)
    return list(Notification.objects.order_by("id").values_list("id", flat=True))


def left_by_a_dead_worker(ids: list[int], running_id: int | None) -> InFlightBatch:
    return InFlightBatch.objects.create(
        notification_ids=ids, running_id=running_id, worker=DEAD_WORKER
    )


def handled_keys() -> list[str]:
    events = ListenerEvent.objects.filter(listener="task").order_by("object_key")
    return list(events.values_list("object_key", flat=True))


def test_a_batch_leaves_no_record_when_it_commits(journal: inflight.Journal) -> None:
    send(Task, "a", "b", "c")

    result = processor_with(journal).process_batch(Task)

    assert (result.processed, result.failed) == (3, 0)
    assert not InFlightBatch.objects.exists()


@override_settings(PGPUBSUB_RETRY_BACKOFF=30.0)
def test_a_batch_redone_after_a_raising_callback_leaves_no_record(
    journal: inflight.Journal,
) -> None:
    send(Task, "a")
    pgpubsub.notify(Task, key="raises", fail=True)
    send(Task, "b")

    result = processor_with(journal).process_batch(Task)

    assert (result.processed, result.failed) == (2, 1)
    assert not InFlightBatch.objects.exists()
    assert Notification.objects.get().attempts == 1  # charged once, by its exception


Records = list[tuple[list[int], int | None, str]]


def committed_records() -> Records:
    """The in-flight records as another connection sees them: committed ones only."""
    connection = open_listen_connection("default")
    try:
        rows = connection.execute(
            "SELECT notification_ids, running_id, worker FROM pgpubsub_inflight ORDER BY id", []
        )
    finally:
        connection.close()
    return [(list(ids), running_id, worker) for ids, running_id, worker in rows]


@pytest.fixture
def records_seen(isolated_registry: None) -> dict[str, Records]:
    """The committed records each Watched message's listener saw while it ran, by key.

    The listener raises for the key "raises".
    """
    seen: dict[str, Records] = {}

    @pgpubsub.listener(Watched)
    def look(key: str) -> None:
        seen.setdefault(key, []).extend(committed_records())
        if key == "raises":
            raise RuntimeError("makes the batch run message by message")

    return seen


def test_a_batch_is_recorded_before_its_callbacks_run(
    journal: inflight.Journal, records_seen: dict[str, Records]
) -> None:
    ids = send(Watched, "a", "b")

    processor_with(journal).process_batch(Watched)

    # Which message of a batch runs is not recorded (a round trip per message saved) ...
    assert records_seen == {"a": [(ids, None, WORKER)], "b": [(ids, None, WORKER)]}
    assert committed_records() == []


def test_a_batch_run_message_by_message_records_which_message_runs(
    journal: inflight.Journal, records_seen: dict[str, Records]
) -> None:
    batch = send(Watched, "a", "raises", "b")
    a, raises, b = batch

    processor_with(journal).process_batch(Watched)

    # ... until one fails: then the batch is redone one message at a time, each one named.
    assert records_seen == {
        "a": [(batch, None, WORKER), (batch, a, WORKER)],
        "raises": [(batch, None, WORKER), (batch, raises, WORKER)],
        "b": [(batch, b, WORKER)],
    }
    assert committed_records() == []


def test_a_batch_taken_over_from_a_dead_worker_records_which_message_runs(
    journal: inflight.Journal, records_seen: dict[str, Records]
) -> None:
    batch = send(Watched, "killer", "next")
    killer, following = batch
    left_by_a_dead_worker(batch, running_id=killer)

    processor_with(journal).process_batch(Watched)

    # The killer is charged, not run; the one left is run with its name recorded, in case it
    # kills this worker too. The dead worker's record goes when this batch commits.
    assert records_seen == {"next": [(batch, killer, DEAD_WORKER), (batch, following, WORKER)]}
    assert committed_records() == []


@override_settings(PGPUBSUB_RETRY_BACKOFF=30.0, PGPUBSUB_MAX_ATTEMPTS=3)
def test_the_message_a_dead_worker_was_running_is_charged_and_the_rest_is_handled(
    journal: inflight.Journal,
) -> None:
    first, running, last = send(Task, "first", "killer", "last")
    left_by_a_dead_worker([first, running, last], running_id=running)
    before = timezone.now()

    result = processor_with(journal).process_batch(Task)

    assert (result.claimed, result.processed, result.failed) == (3, 2, 1)
    assert handled_keys() == ["first", "last"]
    charged = Notification.objects.get()
    assert charged.pk == running
    assert charged.attempts == 1
    assert charged.failed_at is None
    assert charged.available_at >= before + datetime.timedelta(seconds=29)
    assert "worker process running this message ended before it finished" in charged.last_error
    assert DEAD_WORKER in charged.last_error
    assert not InFlightBatch.objects.exists()


def test_a_worker_still_connected_lost_only_its_batch_and_its_message_is_not_charged(
    journal: inflight.Journal,
) -> None:
    """Its batch's connection was cut (the batch rolled back); the worker lives on."""
    name = inflight.WorkerName.for_this_process("pgpubsub worker")
    alive = open_listen_connection("default", name.connection)
    try:
        first, running = send(Task, "first", "running")
        InFlightBatch.objects.create(
            notification_ids=[first, running], running_id=running, worker=name.label
        )

        result = processor_with(journal).process_batch(Task)
    finally:
        alive.close()

    assert (result.processed, result.failed) == (2, 0)
    assert handled_keys() == ["first", "running"]
    # Left for its worker to delete when it notices (pruned otherwise).
    assert InFlightBatch.objects.filter(worker=name.label).exists()


def test_a_worker_that_stopped_itself_says_why_in_the_error_of_its_running_message(
    journal: inflight.Journal,
) -> None:
    name = inflight.WorkerName.for_this_process("pgpubsub worker")
    # Its connection is not gone yet: the message is charged all the same.
    alive = open_listen_connection("default", name.connection)
    failures: list[BaseException] = []

    def receiver(sender: object, error: BaseException, **kwargs: object) -> None:
        failures.append(error)

    notification_failed.connect(receiver)
    try:
        writer = inflight.Journal(name.label, "default")
        writer.attach(alive)
        running, last = send(Task, "hangs", "last")
        record = InFlightBatch.objects.create(notification_ids=[running, last], worker=name.label)
        writer.stopped(record.pk, running, "exceeded its time limit of 1 s in shop.listeners.x")

        result = processor_with(journal).process_batch(Task)
    finally:
        notification_failed.disconnect(receiver)
        alive.close()

    assert (result.processed, result.failed) == (1, 1)
    assert handled_keys() == ["last"]
    charged = Notification.objects.get()
    assert charged.pk == running and charged.attempts == 1
    assert charged.last_error.startswith(
        "This message exceeded its time limit of 1 s in shop.listeners.x: its worker process "
        f"({name.label}, batch started"
    )
    assert [type(error) for error in failures] == [TimeLimitExceeded]
    assert not InFlightBatch.objects.exists()


@override_settings(PGPUBSUB_MAX_ATTEMPTS=3)
def test_a_message_that_killed_its_worker_max_attempts_times_is_marked_failed(
    journal: inflight.Journal,
) -> None:
    (killer,) = send(Task, "killer")
    Notification.objects.filter(pk=killer).update(attempts=2)
    left_by_a_dead_worker([killer], running_id=killer)

    processor_with(journal).process_batch(Task)

    failed = Notification.objects.get()
    assert (failed.attempts, failed.failed_at is not None) == (3, True)
    assert Notification.objects.failed().count() == 1


def test_without_a_running_message_nothing_is_charged_and_all_is_handled(
    journal: inflight.Journal,
) -> None:
    ids = send(Task, "a", "b", "c")
    left_by_a_dead_worker(ids, running_id=None)

    result = processor_with(journal).process_batch(Task)

    assert (result.processed, result.failed) == (3, 0)
    assert handled_keys() == ["a", "b", "c"]
    assert not Notification.objects.exists()
    assert not InFlightBatch.objects.exists()


def test_records_are_settled_without_a_journal_too() -> None:
    """process_stored_notifications() in a shell or a test also settles dead workers' batches."""
    first, running = send(Task, "first", "killer")
    left_by_a_dead_worker([first, running], running_id=running)

    assert pgpubsub.process_stored_notifications([Task]) == 1

    assert Notification.objects.get().attempts == 1
    assert not InFlightBatch.objects.exists()


def test_the_charge_is_reported_to_notification_failed_receivers(
    journal: inflight.Journal,
) -> None:
    (killer,) = send(Task, "killer")
    left_by_a_dead_worker([killer], running_id=killer)
    received: list[dict[str, object]] = []

    def receiver(sender: object, **kwargs: object) -> None:
        received.append({"sender": sender, **kwargs})

    notification_failed.connect(receiver)
    try:
        processor_with(journal).process_batch(Task)
    finally:
        notification_failed.disconnect(receiver)

    (report,) = received
    assert report["sender"] is Task
    assert report["notification_id"] == killer
    assert report["attempt"] == 1
    assert report["will_retry"] is True
    assert isinstance(report["error"], WorkerDied)


def test_prune_deletes_records_whose_messages_are_all_gone_or_failed() -> None:
    pending, failed = send(Task, "pending", "failed")
    Notification.objects.filter(pk=failed).update(failed_at=timezone.now())
    keeps = left_by_a_dead_worker([pending, failed], running_id=None)
    left_by_a_dead_worker([failed], running_id=failed)
    left_by_a_dead_worker([pending + 1000], running_id=None)

    assert inflight.prune(using="default") == 2

    assert list(InFlightBatch.objects.values_list("pk", flat=True)) == [keeps.pk]
