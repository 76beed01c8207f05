"""process_stored_notifications(): stored messages run their listeners exactly once."""

from __future__ import annotations

import datetime

import pytest

import pgpubsub
from pgpubsub.models import Notification
from testapp.channels import AuthorTriggerChannel, PostReads, Task
from testapp.models import Author, ListenerEvent, Post
from tests.factories import AuthorFactory, ChildFactory, MediaFactory, PostFactory

pytestmark = pytest.mark.django_db


def test_each_new_author_gets_exactly_one_first_post() -> None:
    Author.objects.bulk_create([Author(name=f"writer {n}") for n in range(3)])

    handled = pgpubsub.process_stored_notifications()
    handled_again = pgpubsub.process_stored_notifications()

    assert (handled, handled_again) == (3, 0)
    assert sorted(Post.objects.values_list("title", flat=True)) == [
        "Welcome, writer 0!",
        "Welcome, writer 1!",
        "Welcome, writer 2!",
    ]
    assert not Notification.objects.exists()


def test_processing_can_be_limited_to_some_channels() -> None:
    AuthorFactory.create()
    pgpubsub.notify(Task, key="left alone")

    handled = pgpubsub.process_stored_notifications([AuthorTriggerChannel])

    assert handled == 1
    assert Post.objects.count() == 1
    assert list(Notification.objects.values_list("channel", flat=True)) == [Task.listen_safe_name()]


def test_notify_on_a_lockable_plain_channel_is_stored_and_delivered_once() -> None:
    post = PostFactory.create()
    pgpubsub.process_stored_notifications()  # the author's welcome post

    pgpubsub.notify(PostReads, post_id=post.pk)
    pgpubsub.notify("testapp.channels.PostReads", post_id=post.pk)
    stored = Notification.objects.filter(channel=PostReads.listen_safe_name()).count()
    handled = pgpubsub.process_stored_notifications([PostReads])
    pgpubsub.process_stored_notifications([PostReads])

    post.refresh_from_db()
    assert (stored, handled, post.read_count) == (2, 2, 2)


def test_each_trigger_listener_runs_only_for_its_own_operation() -> None:
    media = MediaFactory.create(title="one")
    key = str(media.pk)
    media.title = "two"
    media.save()
    media.delete()

    pgpubsub.process_stored_notifications()

    events = ListenerEvent.objects.filter(listener="media").order_by("id")
    assert [(e.operation, e.detail["old_title"], e.detail["new_title"]) for e in events] == [
        ("insert", None, "one"),
        ("update", "one", "two"),
        ("delete", "two", None),
    ]
    assert {e.object_key for e in events} == {key}


def test_listener_receives_exact_decimal_and_foreign_key_of_the_row() -> None:
    owner = AuthorFactory.create()
    MediaFactory.create(owner=owner, price="98765432109876543210.0000000001")

    pgpubsub.process_stored_notifications()

    event = ListenerEvent.objects.get(listener="media")
    assert event.detail["price"] == "98765432109876543210.0000000001"
    assert event.detail["owner_id"] == owner.pk


def test_save_listener_of_a_multi_table_child_receives_the_inherited_fields_stored() -> None:
    child = ChildFactory.create(toy="kite", name="Ann", born=datetime.date(2019, 5, 4))
    child.toy = "ball"
    child.name = "Annie"
    child.save()
    child.name = "Anna"
    child.save()  # delivered after this change: the payload has the values of its own save

    pgpubsub.process_stored_notifications()

    events = ListenerEvent.objects.filter(listener="child").order_by("id")
    assert [e.detail for e in events] == [
        {"toy": "kite", "id": child.pk, "name": "Ann", "born": "2019-05-04"},
        {"toy": "ball", "id": child.pk, "name": "Annie", "born": "2019-05-04"},
        {"toy": "ball", "id": child.pk, "name": "Anna", "born": "2019-05-04"},
    ]
