"""Triggers of the example models store one message per changed row, atomically."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.db import connection, models, transaction
from django.db.migrations.recorder import MigrationRecorder
from django.db.models import Max
from django.test.utils import CaptureQueriesContext, isolate_apps

from pgpubsub import TriggerChannel
from pgpubsub.connection import ListenConnection
from pgpubsub.models import Notification
from pgpubsub.triggers import builtin_trigger
from testapp.channels import AuthorTriggerChannel, ChildTriggerChannel, MediaTriggerChannel
from testapp.models import Author, Child, Media
from tests.factories import AuthorFactory, ChildFactory, MediaFactory
from tests.integration.messaging import (
    notify_sentinel_on_default_connection,
    receive_through_sentinel,
    stored_payloads,
)

pytestmark = pytest.mark.django_db

PAYLOAD_KEYS = {"app", "model", "trigger", "old", "new", "context"}


def latest_testapp_migration_id() -> int:
    latest = MigrationRecorder.Migration.objects.filter(app="testapp").aggregate(Max("id"))
    return int(latest["id__max"])


def test_author_insert_stores_a_notification_with_the_new_row() -> None:
    author = AuthorFactory.create(name="Ann")

    (stored,) = Notification.objects.all()
    assert stored.channel == AuthorTriggerChannel.listen_safe_name()
    assert set(stored.payload) == PAYLOAD_KEYS
    assert stored.payload["app"] == "testapp"
    assert stored.payload["model"] == "Author"
    assert stored.payload["trigger"] == "pgpubsub_c1bf1_ai"
    assert stored.payload["old"] is None
    assert stored.payload["new"]["id"] == author.pk
    assert stored.payload["new"]["name"] == "Ann"
    assert stored.payload["context"] == {}


def test_stored_notification_records_when_and_at_which_migration_it_was_written() -> None:
    AuthorFactory.create()

    (stored,) = Notification.objects.all()
    assert stored.created_at is not None
    assert stored.db_version == latest_testapp_migration_id()
    assert (stored.attempts, stored.failed_at, stored.last_error) == (0, None, "")
    assert stored.status == "new"


def test_operation_without_a_listener_stores_nothing() -> None:
    author = AuthorFactory.create()
    Notification.objects.all().delete()

    author.name = "renamed"
    author.save()
    author.delete()

    assert not Notification.objects.exists()


def test_media_insert_update_and_delete_each_store_one_notification_in_order() -> None:
    media = MediaFactory.create(title="first")
    media.title = "second"
    media.save()
    media.delete()

    payloads = stored_payloads(MediaTriggerChannel)
    assert [p["trigger"] for p in payloads] == [
        "pgpubsub_d1cca_ai",
        "pgpubsub_d1cca_au",
        "pgpubsub_d1cca_bd",
    ]
    assert all(set(p) == PAYLOAD_KEYS and p["model"] == "Media" for p in payloads)
    inserted, updated, deleted = payloads
    assert (inserted["old"], inserted["new"]["media_title"]) == (None, "first")
    assert (updated["old"]["media_title"], updated["new"]["media_title"]) == ("first", "second")
    assert (deleted["old"]["media_title"], deleted["new"]) == ("second", None)


def test_before_delete_trigger_lets_the_delete_happen() -> None:
    media = MediaFactory.create()

    deleted, _ = Media.objects.filter(pk=media.pk).delete()

    assert deleted == 1
    assert not Media.objects.filter(pk=media.pk).exists()


def test_child_insert_and_update_store_the_child_row_with_its_inherited_columns() -> None:
    child = ChildFactory.create(toy="kite", name="Ann", born=datetime.date(2019, 5, 4))
    child.toy = "ball"
    child.save()

    inserted, updated = stored_payloads(ChildTriggerChannel)
    assert inserted["trigger"] == "pgpubsub_4d349_ai"
    assert inserted["new"] == {
        "parent_ptr_id": child.pk,
        "toy": "kite",
        "id": child.pk,
        "name": "Ann",
        "born": "2019-05-04",
    }
    assert updated["trigger"] == "pgpubsub_4d349_au"
    assert (updated["old"]["toy"], updated["new"]["toy"]) == ("kite", "ball")


def test_bulk_create_stores_one_notification_per_row_from_one_statement() -> None:
    authors = [Author(name=f"bulk {n}") for n in range(25)]

    with CaptureQueriesContext(connection) as queries:
        Author.objects.bulk_create(authors)

    assert len(queries) == 1
    payloads = stored_payloads(AuthorTriggerChannel)
    assert sorted(p["new"]["name"] for p in payloads) == sorted(a.name for a in authors)
    assert {p["trigger"] for p in payloads} == {"pgpubsub_c1bf1_ai"}


@pytest.mark.django_db(transaction=True)
def test_rolled_back_transaction_stores_and_sends_nothing(
    listen_to: Callable[..., ListenConnection],
) -> None:
    listener = listen_to(AuthorTriggerChannel.listen_safe_name())

    with pytest.raises(RuntimeError), transaction.atomic():
        Author.objects.create(name="never")
        raise RuntimeError("roll back")

    assert not Notification.objects.exists()
    assert receive_through_sentinel(listener, notify_sentinel_on_default_connection) == []


@pytest.mark.django_db(transaction=True)
def test_committed_insert_on_a_lockable_channel_rings_the_doorbell_without_the_payload(
    listen_to: Callable[..., ListenConnection],
) -> None:
    listener = listen_to(AuthorTriggerChannel.listen_safe_name())

    with transaction.atomic():
        Author.objects.bulk_create([Author(name="a"), Author(name="b")])

    received = receive_through_sentinel(listener, notify_sentinel_on_default_connection)
    assert [(m.channel, m.payload) for m in received] == [
        (AuthorTriggerChannel.listen_safe_name(), "")
    ]
    assert Notification.objects.count() == 2


@isolate_apps("testapp")
def test_grandchild_row_carries_the_columns_of_every_ancestor_table(
    isolated_registry: None,
) -> None:
    class Animal(models.Model):
        name = models.CharField(max_length=50)

        class Meta:
            app_label = "testapp"

    class Dog(Animal):
        breed = models.CharField(max_length=50)

        class Meta:
            app_label = "testapp"

    class Puppy(Dog):
        toy = models.CharField(max_length=50)

        class Meta:
            app_label = "testapp"

    @dataclass
    class PuppyChannel(TriggerChannel):
        model = Puppy
        lock_notifications = True

    # Tables and trigger live in the test's transaction, rolled back at its end.
    with connection.schema_editor() as editor:
        for model in (Animal, Dog, Puppy):
            editor.create_model(model)
    builtin_trigger(PuppyChannel, "AFTER", "INSERT").install(Puppy)

    puppy = Puppy.objects.create(name="Rex", breed="collie", toy="ball")

    (payload,) = stored_payloads(PuppyChannel)
    assert payload["new"] == {
        "id": puppy.pk,
        "name": "Rex",
        "animal_ptr_id": puppy.pk,
        "breed": "collie",
        "dog_ptr_id": puppy.pk,
        "toy": "ball",
    }
    new = PuppyChannel.callback_kwargs(payload)["new"]
    assert (new.name, new.breed, new.toy) == ("Rex", "collie", "ball")
    assert new.get_deferred_fields() == set()


def test_deleted_child_row_carries_its_inherited_columns() -> None:
    # Installed in the test's transaction only: testapp listens to saves of Child, not deletes.
    builtin_trigger(ChildTriggerChannel, "AFTER", "DELETE").install(Child)
    child = ChildFactory.create(toy="kite", name="Ann", born=datetime.date(2019, 5, 4))
    Notification.objects.all().delete()
    pk = child.pk

    child.delete()

    (deleted,) = stored_payloads(ChildTriggerChannel)
    assert deleted["old"] == {
        "parent_ptr_id": pk,
        "toy": "kite",
        "id": pk,
        "name": "Ann",
        "born": "2019-05-04",
    }
