"""notify_at() and notify_later(): messages stored for later, due on the database's clock."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.db import transaction
from django.utils import timezone

import pgpubsub
from pgpubsub import Channel, PayloadError
from pgpubsub.connection import ListenConnection
from pgpubsub.functions import DELAYED_DOORBELL
from pgpubsub.models import Notification
from pgpubsub.queue import next_due
from pgpubsub.stored import process_stored_notifications
from testapp.channels import Announcement, PostTriggerChannel, Task
from testapp.models import ListenerEvent
from tests.integration.messaging import receive_through_sentinel

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class Appointment(Channel):
    """Fields named like the arguments of notify_at() and notify_later()."""

    when: str
    delay: int
    channel: str
    lock_notifications = True


def test_notify_later_stores_the_message_due_after_the_delay_on_the_database_clock() -> None:
    pgpubsub.notify_later(Task, datetime.timedelta(minutes=5), key="later")

    row = Notification.objects.get()
    assert datetime.timedelta(minutes=5) <= row.available_at - row.created_at
    assert row.available_at - row.created_at < datetime.timedelta(minutes=5, seconds=5)
    seconds = next_due([Task.listen_safe_name()], using="default")[Task.listen_safe_name()]
    assert 295 < seconds <= 300


def test_notify_later_accepts_seconds() -> None:
    pgpubsub.notify_later(Task, 90, key="later")

    row = Notification.objects.get()
    assert row.available_at - row.created_at >= datetime.timedelta(seconds=90)


def test_notify_at_stores_the_message_due_at_that_time() -> None:
    when = timezone.now() + datetime.timedelta(hours=2)

    pgpubsub.notify_at(Task, when, key="at")

    assert Notification.objects.get().available_at == when


def test_a_time_in_the_past_means_now() -> None:
    pgpubsub.notify_at(Task, timezone.now() - datetime.timedelta(days=1), key="past")

    assert process_stored_notifications([Task]) == 1
    assert ListenerEvent.objects.filter(listener="task", object_key="past").count() == 1


def test_a_message_for_later_is_not_handled_before_it_is_due() -> None:
    pgpubsub.notify_later(Task, 3600, key="later")
    pgpubsub.notify(Task, key="now")

    assert process_stored_notifications([Task]) == 1
    assert list(ListenerEvent.objects.values_list("object_key", flat=True)) == ["now"]
    assert Notification.objects.count() == 1


def test_a_message_for_later_is_sent_only_when_the_transaction_commits() -> None:
    with transaction.atomic():
        pgpubsub.notify_later(Task, 60, key="rolled back")
        transaction.set_rollback(True)

    assert not Notification.objects.exists()


def test_channel_fields_may_be_named_like_the_arguments() -> None:
    pgpubsub.notify_later(Appointment, 60, when="noon", delay=3, channel="phone")
    pgpubsub.notify_at(Appointment, timezone.now(), when="noon", delay=3, channel="phone")

    payloads = [row.payload for row in Notification.objects.order_by("id")]
    assert payloads == [{"kwargs": {"when": "noon", "delay": 3, "channel": "phone"}}] * 2


@pytest.mark.parametrize("send", [pgpubsub.notify_later, pgpubsub.notify_at])
def test_a_fan_out_channel_cannot_send_for_later(send: object) -> None:
    when = 5 if send is pgpubsub.notify_later else timezone.now()

    with pytest.raises(PayloadError, match=r"not lockable.*lock_notifications = True"):
        send(Announcement, when, text="hello")  # type: ignore[operator]


def test_a_trigger_channel_cannot_send_for_later() -> None:
    with pytest.raises(PayloadError, match="TriggerChannel"):
        pgpubsub.notify_later(PostTriggerChannel, 5)


def test_notify_at_refuses_a_time_without_time_zone() -> None:
    with pytest.raises(PayloadError, match="aware datetime"):
        pgpubsub.notify_at(Task, datetime.datetime(2030, 1, 1), key="naive")


@pytest.mark.parametrize("delay", [-1, datetime.timedelta(seconds=-1), "5", True, float("nan")])
def test_notify_later_refuses_a_delay_that_is_not_a_duration_of_at_least_0(delay: object) -> None:
    with pytest.raises(PayloadError, match="delay of at least 0"):
        pgpubsub.notify_later(Task, delay, key="bad")  # type: ignore[arg-type]

    assert not Notification.objects.exists()


def test_a_delayed_message_rings_the_doorbell_with_later(
    listen_to: Callable[..., ListenConnection], send_sentinel: Callable[[], None]
) -> None:
    listener = listen_to(Task.listen_safe_name())

    pgpubsub.notify_later(Task, 60, key="later")
    pgpubsub.notify(Task, key="now")

    received = receive_through_sentinel(listener, send_sentinel)
    assert [message.payload for message in received] == [DELAYED_DOORBELL, ""]
