"""notify() and fan-out channels: any text arrives intact, after commit, whatever its size."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.db import transaction

import pgpubsub
from pgpubsub import PayloadError
from pgpubsub.connection import ListenConnection, Message
from pgpubsub.models import BroadcastPayload, Notification
from testapp.channels import Announcement, PostTriggerChannel, Task
from testapp.models import ListenerEvent, Post
from tests.factories import AuthorFactory
from tests.integration.messaging import (
    notify_sentinel_on_default_connection,
    receive,
    receive_through_sentinel,
)

AWKWARD_TEXTS = [
    "it's O'Brien's",
    "back\\slash \\n not a newline \\",
    "$$ dollar $quoted$ $$",
    "first line\nsecond line\r\nthird",
    'tab\there and "double quotes"',
    "'); DROP TABLE pgpubsub_notification; --",
    "ünïcödé ✓ 漢字 and emoji 🎉👩‍👩‍👧",
    '{"looks": "like json"}',
    "",
]

pytestmark = pytest.mark.django_db(transaction=True)


def decoded(channel: type[Any], message: Message) -> dict[str, Any]:
    """The callback keyword arguments a fan-out message carries inline."""
    envelope = json.loads(message.payload)
    assert set(envelope) == {"p"}, envelope
    return channel.callback_kwargs(envelope["p"])


@pytest.mark.django_db
def test_awkward_text_reaches_a_stored_listener_exactly() -> None:
    for text in AWKWARD_TEXTS:
        pgpubsub.notify(Task, key=text)

    pgpubsub.process_stored_notifications([Task])

    received = ListenerEvent.objects.filter(listener="task").order_by("id")
    assert [event.object_key for event in received] == AWKWARD_TEXTS


def test_awkward_text_reaches_a_fan_out_listener_exactly(
    listen_to: Callable[..., ListenConnection],
) -> None:
    listener = listen_to(Announcement.listen_safe_name())

    for text in AWKWARD_TEXTS:
        pgpubsub.notify(Announcement, text=text)

    received = receive(listener, lambda got: len(got) == len(AWKWARD_TEXTS))
    assert [decoded(Announcement, message)["text"] for message in received] == AWKWARD_TEXTS
    assert not Notification.objects.exists()  # fan-out messages are not stored


def test_notify_inside_a_transaction_is_sent_only_when_it_commits(
    listen_to: Callable[..., ListenConnection], send_sentinel: Callable[[], None]
) -> None:
    listener = listen_to(Announcement.listen_safe_name())

    with transaction.atomic():
        pgpubsub.notify(Announcement, text="after commit", count=1)
        before_commit = receive_through_sentinel(listener, send_sentinel)

    after_commit = receive(listener, lambda got: len(got) == 1)
    assert before_commit == []
    assert decoded(Announcement, after_commit[0])["count"] == 1


def test_notify_in_a_rolled_back_transaction_is_neither_sent_nor_stored(
    listen_to: Callable[..., ListenConnection],
) -> None:
    listener = listen_to(Announcement.listen_safe_name(), Task.listen_safe_name())

    with pytest.raises(RuntimeError), transaction.atomic():
        pgpubsub.notify(Announcement, text="never")
        pgpubsub.notify(Task, key="never")
        raise RuntimeError("roll back")

    assert receive_through_sentinel(listener, notify_sentinel_on_default_connection) == []
    assert not Notification.objects.exists()


def test_small_fan_out_payload_travels_inline(
    listen_to: Callable[..., ListenConnection],
) -> None:
    listener = listen_to(Announcement.listen_safe_name())

    pgpubsub.notify(Announcement, text="small", tags=["a"])

    (message,) = receive(listener, lambda got: len(got) == 1)
    assert json.loads(message.payload)["p"]["kwargs"]["tags"] == ["a"]
    assert not BroadcastPayload.objects.exists()


@pytest.mark.parametrize(
    "text",
    [
        "x" * 100_000,
        "€" * 3_000,  # 3 000 characters, 9 000 bytes: the NOTIFY limit counts bytes
    ],
    ids=["100-kB", "multibyte"],
)
def test_oversized_fan_out_payload_is_stored_and_referenced_by_id(
    listen_to: Callable[..., ListenConnection], text: str
) -> None:
    listener = listen_to(Announcement.listen_safe_name())

    pgpubsub.notify(Announcement, text=text)

    (message,) = receive(listener, lambda got: len(got) == 1)
    (stored,) = BroadcastPayload.objects.all()
    assert json.loads(message.payload) == {"r": stored.pk}
    assert stored.channel == Announcement.listen_safe_name()
    assert Announcement.callback_kwargs(stored.payload)["text"] == text


def test_oversized_row_on_a_fan_out_trigger_channel_does_not_fail_the_write(
    listen_to: Callable[..., ListenConnection],
) -> None:
    listener = listen_to(PostTriggerChannel.listen_safe_name())
    content = "lorem ipsum " * 10_000

    post = Post.objects.create(author=AuthorFactory.create(), title="long read", content=content)

    (message,) = receive(listener, lambda got: len(got) == 1)
    stored = BroadcastPayload.objects.get(pk=json.loads(message.payload)["r"])
    new = PostTriggerChannel.callback_kwargs(stored.payload)["new"]
    assert isinstance(new, Post)
    assert (new.pk, new.content) == (post.pk, content)


def test_small_row_on_a_fan_out_trigger_channel_travels_inline(
    listen_to: Callable[..., ListenConnection],
) -> None:
    listener = listen_to(PostTriggerChannel.listen_safe_name())

    post = Post.objects.create(author=AuthorFactory.create(), title="short")

    (message,) = receive(listener, lambda got: len(got) == 1)
    payload = json.loads(message.payload)["p"]
    assert payload["trigger"] == "pgpubsub_03c6d_ai"
    new = PostTriggerChannel.callback_kwargs(payload)["new"]
    assert new is not None and (new.pk, new.title) == (post.pk, "short")


@pytest.mark.parametrize(
    ("channel", "fields", "named"),
    [
        (Task, {"key": "nul\x00inside"}, "Field 'key'"),
        (Task, {"key": "k", "sleep": float("nan")}, "Field 'sleep'"),
        (Announcement, {"text": "t", "ratio": float("-inf")}, "Field 'ratio'"),
        (Announcement, {"text": "t", "tags": ["\x00"]}, "Field 'tags'"),
    ],
)
def test_notify_refuses_a_value_jsonb_cannot_store_with_a_payload_error(
    channel: type[Any], fields: dict[str, Any], named: str
) -> None:
    with pytest.raises(PayloadError, match=named):
        pgpubsub.notify(channel, **fields)

    pgpubsub.notify(Task, key="the connection still works")
    assert list(Notification.objects.values_list("payload__kwargs__key", flat=True)) == [
        "the connection still works"
    ]
