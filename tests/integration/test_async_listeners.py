"""``async def`` listeners: awaited with the exactly-once and failure semantics of plain ones.

Their ORM work (Django's async methods run it through ``sync_to_async``) must join the
worker's batch transaction on the worker's connection: the tests commit (``transaction=True``),
so a write made on any other connection would survive a rollback and be seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from asgiref.sync import async_to_sync
from django.db import transaction

import pgpubsub
from pgpubsub import Channel
from pgpubsub.conf import get_settings
from pgpubsub.fanout import deliver_fanout
from pgpubsub.models import Notification
from pgpubsub.processing import Dispatcher
from pgpubsub.registry import registry
from pgpubsub.stored import StoredProcessor
from testapp.channels import AsyncTask, Task
from testapp.models import ListenerEvent


@dataclass
class Shout(Channel):
    """A fan-out channel for an async listener the test registers."""

    text: str


def async_task_keys() -> list[str]:
    events = ListenerEvent.objects.filter(listener="async_task").order_by("id")
    return list(events.values_list("object_key", flat=True))


def test_async_listeners_of_the_example_project_are_registered_as_async() -> None:
    assert [listener.is_async for listener in registry.listeners_for(AsyncTask)] == [True]
    assert [listener.is_async for listener in registry.listeners_for(Task)] == [False]


@pytest.mark.django_db(transaction=True)
def test_async_listener_handles_each_stored_message_exactly_once() -> None:
    keys = [f"k{n}" for n in range(25)]
    for key in keys:
        pgpubsub.notify(AsyncTask, key=key)

    handled = pgpubsub.process_stored_notifications([AsyncTask])
    handled_again = pgpubsub.process_stored_notifications([AsyncTask])

    assert (handled, handled_again) == (25, 0)
    assert async_task_keys() == keys
    assert not Notification.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_failing_async_listener_rolls_back_its_own_writes_and_is_retried() -> None:
    for key in ("before", "bad", "after"):
        pgpubsub.notify(AsyncTask, key=key, fail=key == "bad")

    result = StoredProcessor().process_batch(AsyncTask)

    # The optimistic pass ran "before" and "bad", then was rolled back; the isolated pass ran
    # each in a savepoint. Every acreate that was rolled back must be gone: "bad" was written
    # before its listener raised, and "before" is there once.
    assert (result.claimed, result.processed, result.failed) == (3, 2, 1)
    assert async_task_keys() == ["before", "after"]
    failed = Notification.objects.get()
    assert failed.attempts == 1
    assert failed.status == "retrying"
    assert "ValueError: async task bad was asked to fail" in failed.last_error


@pytest.mark.django_db(transaction=True)
def test_async_listener_of_a_fanout_message_is_awaited_and_its_failure_rolled_back(
    isolated_registry: None,
) -> None:
    @pgpubsub.listener(Shout)
    async def record(text: str) -> None:
        await ListenerEvent.objects.acreate(listener="shout", object_key=text)
        if text == "boom":
            raise RuntimeError("failed after writing")

    dispatcher = Dispatcher(registry, get_settings())

    delivered = [
        deliver_fanout(dispatcher, Shout, {"kwargs": {"text": text}}, "default")
        for text in ("hi", "boom")
    ]

    assert delivered == [True, False]
    assert list(ListenerEvent.objects.values_list("object_key", flat=True)) == ["hi"]


@pytest.mark.django_db
def test_anotify_stores_the_message_on_the_connection_of_the_async_orm() -> None:
    # Called from a thread without an event loop, as the worker does: the message is stored
    # in this thread's open transaction, and rolled back with it.
    with transaction.atomic():
        payload = async_to_sync(pgpubsub.anotify)(AsyncTask, key="from async")
        stored = Notification.objects.get()
        transaction.set_rollback(True)

    assert stored.payload["kwargs"] == {"key": "from async", "fail": False}
    assert payload == pgpubsub.notify(AsyncTask, key="from async")
    assert Notification.objects.count() == 1


@pytest.mark.django_db
def test_anotify_refuses_a_bad_payload_like_notify() -> None:
    with pytest.raises(pgpubsub.PayloadError):
        async_to_sync(pgpubsub.anotify)(AsyncTask, key=1)
