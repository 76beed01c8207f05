"""pgpubsub.current_message(): which stored message a callback is handling."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import override_settings

import pgpubsub
from pgpubsub import Channel, MessageInfo
from pgpubsub.models import Notification
from pgpubsub.registry import registry
from pgpubsub.stored import process_stored_notifications

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class Receipt(Channel):
    order_id: int
    fail_first: bool = False
    lock_notifications = True


@dataclass
class Shout(Channel):
    text: str


def _recorder(seen: list[MessageInfo | None]) -> Any:
    def record(order_id: int, fail_first: bool) -> None:
        seen.append(pgpubsub.current_message())

    return record


def test_a_callback_sees_its_message_and_none_is_running_outside() -> None:
    seen: list[MessageInfo | None] = []
    with registry.isolated():
        pgpubsub.listener(Receipt)(
            lambda order_id, fail_first: seen.append(pgpubsub.current_message())
        )
        pgpubsub.notify(Receipt, order_id=1)
        pgpubsub.notify(Receipt, order_id=2)
        stored = list(Notification.objects.order_by("id"))

        assert process_stored_notifications([Receipt]) == 2

    assert [(info.id, info.channel, info.attempt, info.replay_of) for info in seen] == [  # type: ignore[union-attr]
        (row.id, Receipt.name(), 1, None) for row in stored
    ]
    assert [info.created_at for info in seen] == [row.created_at for row in stored]  # type: ignore[union-attr]
    assert pgpubsub.current_message() is None


@override_settings(PGPUBSUB_RETRY_BACKOFF=0)
def test_a_retry_keeps_the_id_and_counts_the_attempt() -> None:
    seen: list[tuple[int, int]] = []

    def send(order_id: int, fail_first: bool) -> None:
        info = pgpubsub.current_message()
        assert info is not None
        seen.append((info.id, info.attempt))
        if fail_first and info.attempt == 1:
            raise ValueError("the mail server is down")

    with registry.isolated():
        pgpubsub.listener(Receipt)(send)
        pgpubsub.notify(Receipt, order_id=1, fail_first=True)
        (row,) = Notification.objects.all()
        process_stored_notifications([Receipt])
        process_stored_notifications([Receipt])

    # The first attempt ran twice (optimistic, then isolated), both as attempt 1.
    assert seen[-1] == (row.id, 2)
    assert {attempt for _, attempt in seen[:-1]} == {1}
    assert {message_id for message_id, _ in seen} == {row.id}


def test_a_replayed_copy_names_its_original() -> None:
    seen: list[MessageInfo | None] = []
    with registry.isolated():
        pgpubsub.listener(Receipt)(
            lambda order_id, fail_first: seen.append(pgpubsub.current_message())
        )
        copy = Notification.objects.create(
            channel=Receipt.listen_safe_name(), payload={"kwargs": {"order_id": 3}}, replay_of=41
        )
        process_stored_notifications([Receipt])

    assert seen[0] is not None
    assert (seen[0].id, seen[0].replay_of) == (copy.id, 41)


def test_an_async_callback_sees_its_message() -> None:
    seen: list[Any] = []

    async def send(order_id: int, fail_first: bool) -> None:
        seen.append(await pgpubsub.acurrent_message())

    with registry.isolated():
        pgpubsub.listener(Receipt)(send)
        pgpubsub.notify(Receipt, order_id=1)
        process_stored_notifications([Receipt])

    assert isinstance(seen[0], MessageInfo)
    assert isinstance(seen[0].created_at, datetime.datetime)


def test_the_message_is_forgotten_after_a_callback_raised() -> None:
    with registry.isolated():
        pgpubsub.listener(Receipt)(lambda order_id, fail_first: 1 / 0)
        pgpubsub.notify(Receipt, order_id=1)
        process_stored_notifications([Receipt])

    assert pgpubsub.current_message() is None
