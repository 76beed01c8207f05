"""PGPUBSUB_KEEP_HANDLED: handled messages kept, marked handled, out of every count of waiting
messages, and pruned by workers in small batches once older than the period."""

from __future__ import annotations

import datetime
import logging

import pytest
from django.test import override_settings
from django.utils import timezone

import pgpubsub
from pgpubsub import queue
from pgpubsub.conf import get_settings
from pgpubsub.housekeeping import Housekeeping
from pgpubsub.models import Notification, State
from pgpubsub.status import collect_status
from pgpubsub.stored import StoredProcessor, process_stored_notifications
from testapp.channels import OrderedTask, Task
from testapp.models import ListenerEvent

pytestmark = pytest.mark.django_db(transaction=True)

WEEK = datetime.timedelta(days=7)


def handled_keys() -> list[str]:
    return sorted(
        ListenerEvent.objects.filter(listener="task").values_list("object_key", flat=True)
    )


def task_rows() -> list[Notification]:
    return list(Notification.objects.filter(channel=Task.listen_safe_name()).order_by("id"))


def test_without_the_setting_handled_messages_are_deleted() -> None:
    pgpubsub.notify(Task, key="a")

    assert process_stored_notifications([Task]) == 1
    assert task_rows() == []


@override_settings(PGPUBSUB_KEEP_HANDLED=WEEK)
def test_handled_messages_are_kept_marked_with_their_time_and_worker() -> None:
    pgpubsub.notify(Task, key="a")
    pgpubsub.notify(Task, key="b")
    before = timezone.now()

    handled = StoredProcessor(worker="worker under test").drain(Task).processed

    rows = task_rows()
    assert handled == 2
    assert [(row.status, row.handled_by) for row in rows] == [
        (State.HANDLED, "worker under test")
    ] * 2
    assert all(before <= row.handled_at <= timezone.now() for row in rows)  # type: ignore[operator]
    assert handled_keys() == ["a", "b"]
    # Handled means handled: not claimed again, not waiting.
    assert process_stored_notifications([Task]) == 0
    assert handled_keys() == ["a", "b"]


@override_settings(PGPUBSUB_KEEP_HANDLED=3600, PGPUBSUB_RETRY_BACKOFF=3600)
def test_a_failed_attempt_is_not_marked_handled_and_the_rest_of_its_batch_is() -> None:
    pgpubsub.notify(Task, key="good")
    pgpubsub.notify(Task, key="bad", fail=True)
    pgpubsub.notify(Task, key="also good")

    assert process_stored_notifications([Task]) == 2

    states = {row.payload["kwargs"]["key"]: row.status for row in task_rows()}
    assert states == {"good": State.HANDLED, "bad": State.RETRYING, "also good": State.HANDLED}
    bad = Notification.objects.get(payload__kwargs__key="bad")
    assert (bad.handled_at, bad.handled_by) == (None, None)


@override_settings(PGPUBSUB_KEEP_HANDLED=WEEK)
def test_kept_messages_count_as_handled_and_never_as_waiting() -> None:
    pgpubsub.notify(Task, key="handled")
    process_stored_notifications([Task])
    pgpubsub.notify(Task, key="waiting")
    names = [Task.listen_safe_name()]

    (status,) = [s for s in collect_status("default").channels if s.pg_name == names[0]]
    assert status.counts() == {"new": 1, "retrying": 0, "failed": 0, "handled": 1}
    assert queue.count_due(names, using="default") == 1
    assert Notification.objects.waiting().count() == 1
    assert Notification.objects.in_state(State.HANDLED).count() == 1


@override_settings(PGPUBSUB_KEEP_HANDLED=WEEK)
def test_a_kept_message_does_not_hold_back_the_next_message_of_its_key() -> None:
    pgpubsub.notify(OrderedTask, key="k", seq=1)
    process_stored_notifications([OrderedTask])
    pgpubsub.notify(OrderedTask, key="k", seq=2)

    assert process_stored_notifications([OrderedTask]) == 1
    seen = sorted(
        row.payload["kwargs"]["seq"] for row in Notification.objects.in_state(State.HANDLED)
    )
    assert seen == [1, 2]


def kept(key: str, handled_ago: datetime.timedelta) -> Notification:
    return Notification.objects.create(
        channel=Task.listen_safe_name(),
        payload={"kwargs": {"key": key}},
        handled_at=timezone.now() - handled_ago,
        handled_by="a worker",
    )


def remaining_keys() -> list[str]:
    return sorted(row.payload["kwargs"]["key"] for row in Notification.objects.all())


def test_pruning_deletes_only_handled_messages_older_than_the_period_in_batches(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for number in range(5):
        kept(f"old {number}", WEEK + datetime.timedelta(hours=1))
    kept("recent", datetime.timedelta(days=6))
    Notification.objects.create(
        channel=Task.listen_safe_name(),
        payload={"kwargs": {"key": "old dead letter"}},
        created_at=timezone.now() - 2 * WEEK,
        failed_at=timezone.now() - 2 * WEEK,
    )
    Notification.objects.create(
        channel=Task.listen_safe_name(),
        payload={"kwargs": {"key": "old waiting"}},
        created_at=timezone.now() - 2 * WEEK,
        available_at=timezone.now() - 2 * WEEK,
    )
    housekeeping = Housekeeping(get_settings(), "default", batch=2)

    with caplog.at_level(logging.INFO, logger="pgpubsub.housekeeping"):
        assert housekeeping.prune_handled(WEEK) is True

    assert remaining_keys() == ["old dead letter", "old waiting", "recent"]
    assert "Pruned 5 handled messages older than 7 days" in caplog.messages


@override_settings(PGPUBSUB_KEEP_HANDLED=datetime.timedelta(hours=1))
def test_a_worker_prunes_kept_messages_at_its_housekeeping_and_not_without_the_setting() -> None:
    kept("old", datetime.timedelta(hours=2))
    kept("new", datetime.timedelta(minutes=10))

    Housekeeping(get_settings(), "default").run_if_due()
    assert remaining_keys() == ["new"]

    kept("old again", datetime.timedelta(hours=2))
    with override_settings(PGPUBSUB_KEEP_HANDLED=None):
        Housekeeping(get_settings(), "default").run_if_due()
    assert remaining_keys() == ["new", "old again"]
