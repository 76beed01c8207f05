"""django-pgpubsub 1.3's test helpers, kept as deprecated adapters over the worker's machinery.

Test suites written for 1.3 LISTEN with ``listen_to_channels()``, hand the connection to
``process_notifications()`` and recover with ``listen(recover=True)`` under
``patch("pgpubsub.listen.POLL", False)``: these keep working, each with a
DeprecationWarning naming what replaces it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from unittest.mock import patch

import pytest
from django.db import connection

import pgpubsub
from pgpubsub.listen import (
    LegacyListenConnection,
    listen,
    listen_to_channels,
    process_notifications,
)
from pgpubsub.models import Notification
from testapp.channels import Announcement, AuthorTriggerChannel, PostReads
from testapp.models import ListenerEvent, Post
from tests.factories import AuthorFactory, PostFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pg_connection() -> Iterator[LegacyListenConnection]:
    """As 1.3.1's conftest.py: listen on every channel on Django's connection."""
    with pytest.deprecated_call(match=r"listen_to_channels\(\) is deprecated: in tests, call"):
        listening = listen_to_channels()
    yield listening
    listening.stop()
    with connection.cursor() as cursor:
        cursor.execute("UNLISTEN *")


def process(pg_connection: LegacyListenConnection) -> None:
    with pytest.deprecated_call(match=r"process_notifications\(\) is deprecated"):
        process_notifications(pg_connection)


def test_doorbell_of_a_stored_message_arrives_on_djangos_connection_without_a_poll(
    pg_connection: LegacyListenConnection,
) -> None:
    AuthorFactory.create()

    assert [n.channel for n in pg_connection.notifies] == [AuthorTriggerChannel.listen_safe_name()]


def test_process_notifications_runs_the_stored_messages_it_was_rung_for(
    pg_connection: LegacyListenConnection,
) -> None:
    author = AuthorFactory.create(name="Ann")

    process(pg_connection)

    assert list(Post.objects.values_list("author_id", "title")) == [(author.pk, "Welcome, Ann!")]
    assert not Notification.objects.exists()
    assert pg_connection.notifies == []


def test_process_notifications_runs_the_callbacks_of_a_fanout_message(
    pg_connection: LegacyListenConnection,
) -> None:
    pgpubsub.notify(Announcement, text="to everyone", count=3)

    process(pg_connection)

    assert list(ListenerEvent.objects.values_list("listener", "object_key")) == [
        ("announcement", "to everyone")
    ]


def test_process_notifications_ignores_what_was_sent_before_listening() -> None:
    AuthorFactory.create()
    with pytest.deprecated_call():
        listening = listen_to_channels([PostReads])
    try:
        process(listening)
    finally:
        listening.stop()
        with connection.cursor() as cursor:
            cursor.execute("UNLISTEN *")

    assert not Post.objects.exists()
    assert Notification.objects.count() == 1


def test_listen_with_poll_off_recovers_the_stored_messages_and_returns() -> None:
    authors = AuthorFactory.create_batch(2)

    with pytest.deprecated_call(match=r"POLL is deprecated"), patch("pgpubsub.listen.POLL", False):
        assert listen(recover=True) == 0

    assert sorted(Post.objects.values_list("author_id", flat=True)) == [a.pk for a in authors]
    assert not Notification.objects.exists()


def test_listen_with_poll_off_and_no_recover_processes_nothing() -> None:
    AuthorFactory.create()

    with pytest.deprecated_call(), patch("pgpubsub.listen.POLL", False):
        assert listen() == 0

    assert Notification.objects.count() == 1


def test_notification_from_channel_selects_the_stored_messages_of_a_channel() -> None:
    AuthorFactory.create()
    post = PostFactory.create()
    pgpubsub.notify(PostReads, post_id=post.pk)

    with pytest.deprecated_call(match=r"from_channel\(\) is deprecated: use Notification\.obj"):
        stored = Notification.from_channel(channel=PostReads)

    assert [n.payload for n in stored] == [{"kwargs": {"post_id": post.pk}}]


@pytest.mark.parametrize(
    "stored_as",
    [
        pytest.param(PostReads.name(), id="dotted-path-as-1.3-notify-wrote"),
        pytest.param(PostReads.listen_safe_name(), id="postgresql-name"),
    ],
)
def test_message_stored_as_a_json_string_by_1_3_code_is_processed(stored_as: str) -> None:
    # During a rolling deploy, 1.3's notify() keeps storing rows like this one: named by the
    # channel's dotted path, the payload a JSON string.
    post = PostFactory.create()
    Notification.objects.create(
        channel=stored_as, payload=json.dumps({"kwargs": {"post_id": post.pk}})
    )

    assert pgpubsub.process_stored_notifications([PostReads]) == 1

    post.refresh_from_db()
    assert post.read_count == 1
    assert not Notification.objects.filter(channel=stored_as).exists()
