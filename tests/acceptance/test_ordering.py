"""Per-key ordering: two worker processes, callbacks of varying length, each key in order."""

from __future__ import annotations

import random

import pytest
from django.db import transaction

import pgpubsub
from pgpubsub.models import InFlightBatch, Notification
from testapp.channels import OrderedTask
from testapp.models import ListenerEvent
from tests.acceptance.conftest import StartListen
from tests.support.processes import wait_for

ORDERED = "testapp.channels.OrderedTask"


def sequences() -> dict[str, list[int]]:
    """The seq of each key's handled messages, in the order they were handled."""
    found: dict[str, list[int]] = {}
    for key, detail in (
        ListenerEvent.objects.filter(listener="ordered")
        .order_by("id")
        .values_list("object_key", "detail")
    ):
        found.setdefault(key, []).append(detail["seq"])
    return found


def handled_count() -> int:
    return ListenerEvent.objects.filter(listener="ordered").count()


@pytest.mark.django_db(transaction=True)
def test_two_workers_handle_each_keys_messages_one_at_a_time_in_order(
    listen: StartListen,
) -> None:
    process = listen("--processes", "2", "--channels", ORDERED)
    process.wait_for_workers(2)
    durations = random.Random(15)
    keys = [f"k{number}" for number in range(5)]

    for seq in range(8):
        for key in keys:
            pgpubsub.notify(OrderedTask, key=key, seq=seq, sleep=durations.choice([0, 0.01, 0.03]))

    wait_for(lambda: handled_count() >= 40, timeout=60, message="40 ordered tasks")
    process.stop()
    assert sequences() == {key: list(range(8)) for key in keys}


@pytest.mark.django_db(transaction=True)
def test_a_key_is_not_held_back_while_another_keys_message_runs(listen: StartListen) -> None:
    process = listen("--processes", "2", "--channels", ORDERED)
    process.wait_for_workers(2)

    pgpubsub.notify(OrderedTask, key="slow", seq=0, sleep=5)
    # Sent only once the slow message runs, so no worker can have claimed both in one batch.
    wait_for(InFlightBatch.objects.exists, timeout=30, message="the slow message to start")
    pgpubsub.notify(OrderedTask, key="fast", seq=0)

    wait_for(lambda: handled_count() >= 2, timeout=60, message="both ordered tasks")
    process.stop()
    events = list(ListenerEvent.objects.filter(listener="ordered").order_by("id"))
    # The other worker ran the fast key while the slow one was still in its callback.
    assert [event.object_key for event in events] == ["fast", "slow"]
    assert events[0].pid != events[1].pid


@pytest.mark.django_db(transaction=True)
def test_a_retrying_message_holds_back_the_later_ones_of_its_key_only(
    listen: StartListen,
) -> None:
    process = listen("--processes", "2", "--channels", ORDERED)
    process.wait_for_workers(2)

    pgpubsub.notify(OrderedTask, key="retried", seq=0, fail_attempts=1)
    for seq in range(1, 4):
        pgpubsub.notify(OrderedTask, key="retried", seq=seq)
        pgpubsub.notify(OrderedTask, key="other", seq=seq)

    wait_for(lambda: handled_count() >= 7, timeout=60, message="7 ordered tasks")
    process.stop()
    assert sequences() == {"retried": [0, 1, 2, 3], "other": [1, 2, 3]}


@pytest.mark.django_db(transaction=True)
def test_after_a_dead_letter_the_later_messages_of_its_key_go_on(listen: StartListen) -> None:
    process = listen("--processes", "2", "--channels", ORDERED)
    process.wait_for_workers(2)

    pgpubsub.notify(OrderedTask, key="k", seq=0, fail_attempts=99)
    pgpubsub.notify(OrderedTask, key="k", seq=1)
    pgpubsub.notify(OrderedTask, key="k", seq=2)

    wait_for(lambda: handled_count() >= 2, timeout=60, message="2 ordered tasks")
    process.stop()
    assert sequences() == {"k": [1, 2]}
    (dead,) = Notification.objects.failed()
    first_after = ListenerEvent.objects.filter(listener="ordered").order_by("id").first()
    assert first_after is not None
    assert dead.failed_at is not None and first_after.created_at >= dead.failed_at


@pytest.mark.django_db(transaction=True)
def test_a_key_with_a_backlog_and_a_retry_in_it_is_handled_in_order_by_two_workers(
    listen: StartListen,
) -> None:
    process = listen("--processes", "2", "--channels", ORDERED)
    process.wait_for_workers(2)
    durations = random.Random(16)

    # One transaction: the workers find a backlog of the key, taken a batch at a time.
    with transaction.atomic():
        for seq in range(240):
            pgpubsub.notify(
                OrderedTask,
                key="busy" if seq % 8 else f"other{seq}",
                seq=seq,
                sleep=durations.choice([0, 0, 0.002]),
                fail_attempts=1 if seq == 101 else 0,
            )

    wait_for(lambda: handled_count() >= 240, timeout=60, message="240 ordered tasks")
    process.stop()
    found = sequences()
    assert found.pop("busy") == [seq for seq in range(240) if seq % 8]
    assert found == {f"other{seq}": [seq] for seq in range(0, 240, 8)}
