"""``notification_processed`` and ``notification_failed``: sent once per attempt, after commit."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import connection
from django.dispatch import Signal
from django.test import override_settings
from django.utils import timezone

import pgpubsub
from pgpubsub import Channel
from pgpubsub.conf import get_settings
from pgpubsub.fanout import deliver_fanout
from pgpubsub.models import Notification
from pgpubsub.processing import Dispatcher
from pgpubsub.registry import registry
from pgpubsub.stored import StoredProcessor
from testapp.channels import Task

pytestmark = pytest.mark.django_db


@dataclass
class Received:
    """What the receivers got: (signal name, sender, keyword arguments), in order."""

    calls: list[tuple[str, Any, dict[str, Any]]] = field(default_factory=list)
    #: Whether the batch's transaction (the test's savepoint) was still open at each call.
    in_batch_transaction: list[bool] = field(default_factory=list)

    def of(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for signal, _, kwargs in self.calls if signal == name]


@pytest.fixture
def received() -> Iterator[Received]:
    """Receivers connected to both signals for the test, disconnected after it."""
    got = Received()
    # The test runs in a transaction; a batch adds a savepoint on top of it.
    depth = len(connection.savepoint_ids)

    def on(name: str) -> Any:
        def receiver(sender: Any, signal: Signal, **kwargs: Any) -> None:
            got.calls.append((name, sender, kwargs))
            got.in_batch_transaction.append(len(connection.savepoint_ids) > depth)

        return receiver

    processed, failed = on("processed"), on("failed")
    pgpubsub.notification_processed.connect(processed)
    pgpubsub.notification_failed.connect(failed)
    yield got
    pgpubsub.notification_processed.disconnect(processed)
    pgpubsub.notification_failed.disconnect(failed)


def make_due() -> None:
    Notification.objects.update(available_at=timezone.now() - datetime.timedelta(seconds=1))


def test_processed_is_sent_per_stored_message_with_its_id_attempt_and_timings(
    received: Received,
) -> None:
    pgpubsub.notify(Task, key="a")
    pgpubsub.notify(Task, key="b")
    ids = list(Notification.objects.order_by("id").values_list("id", flat=True))

    assert pgpubsub.process_stored_notifications([Task]) == 2

    assert [sender for _, sender, _ in received.calls] == [Task, Task]
    calls = received.of("processed")
    assert [call["notification_id"] for call in calls] == ids
    assert [call["attempt"] for call in calls] == [1, 1]
    for call in calls:
        assert 0 <= call["duration"] < 5
        assert 0 <= call["claim_latency"] < 60
    assert received.in_batch_transaction == [False, False]


def test_claim_latency_counts_from_when_the_message_became_due(received: Received) -> None:
    pgpubsub.notify(Task, key="waited")
    Notification.objects.update(available_at=timezone.now() - datetime.timedelta(seconds=90))

    pgpubsub.process_stored_notifications([Task])

    (call,) = received.of("processed")
    assert 90 <= call["claim_latency"] < 150


@override_settings(PGPUBSUB_MAX_ATTEMPTS=2)
def test_failed_is_sent_with_the_error_and_whether_the_message_will_be_retried(
    received: Received,
) -> None:
    pgpubsub.notify(Task, key="bad", fail=True)
    notification_id = Notification.objects.get().id

    StoredProcessor().process_batch(Task)
    make_due()
    StoredProcessor().process_batch(Task)

    assert received.of("processed") == []
    first, second = received.of("failed")
    assert (first["notification_id"], first["attempt"], first["will_retry"]) == (
        notification_id,
        1,
        True,
    )
    assert (second["attempt"], second["will_retry"]) == (2, False)
    assert isinstance(first["error"], ValueError)
    assert str(first["error"]) == "task bad was asked to fail"
    assert first["error"].__traceback__ is not None
    assert first["duration"] >= 0
    assert Notification.objects.get().status == "failed"


def test_a_batch_redone_message_by_message_reports_each_message_once(
    received: Received,
) -> None:
    # The optimistic pass runs "good 1", then "bad" raises: the batch is rolled back and redone
    # with a savepoint per message. "good 1" ran twice but was committed once.
    for key, fail in (("good 1", False), ("bad", True), ("good 2", False)):
        pgpubsub.notify(Task, key=key, fail=fail)
    good_1, bad, good_2 = Notification.objects.order_by("id").values_list("id", flat=True)

    StoredProcessor().process_batch(Task)

    assert [(name, kwargs["notification_id"]) for name, _, kwargs in received.calls] == [
        ("processed", good_1),
        ("failed", bad),
        ("processed", good_2),
    ]
    assert received.in_batch_transaction == [False, False, False]


@dataclass
class Shout(Channel):
    """A fan-out channel whose listener the test registers."""

    text: str


def test_fanout_messages_are_reported_without_an_id_or_claim_latency(
    received: Received, isolated_registry: None
) -> None:
    @pgpubsub.listener(Shout)
    def shout(text: str) -> None:
        if text == "boom":
            raise RuntimeError("boom")

    dispatcher = Dispatcher(registry, get_settings())

    assert deliver_fanout(dispatcher, Shout, {"kwargs": {"text": "hello"}}, "default")
    assert not deliver_fanout(dispatcher, Shout, {"kwargs": {"text": "boom"}}, "default")

    (processed_name, processed_sender, processed), (failed_name, failed_sender, failed) = (
        received.calls
    )
    assert (processed_name, processed_sender, failed_name, failed_sender) == (
        "processed",
        Shout,
        "failed",
        Shout,
    )
    assert (processed["notification_id"], processed["claim_latency"]) == (None, None)
    assert processed["attempt"] == 1
    assert processed["duration"] >= 0
    assert (failed["notification_id"], failed["will_retry"]) == (None, False)
    assert isinstance(failed["error"], RuntimeError)


def test_nothing_is_sent_when_no_receiver_is_connected(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_be_called(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a signal was sent with no receiver connected")

    for signal in (pgpubsub.notification_processed, pgpubsub.notification_failed):
        monkeypatch.setattr(signal, "send_robust", must_not_be_called)
    pgpubsub.notify(Task, key="good")
    pgpubsub.notify(Task, key="bad", fail=True)

    result = StoredProcessor().process_batch(Task)

    assert (result.processed, result.failed) == (1, 1)


def test_a_receiver_that_raises_is_logged_and_processing_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    pgpubsub.notification_processed.connect(broken)
    try:
        for key in ("one", "two"):
            pgpubsub.notify(Task, key=key)
        with caplog.at_level(logging.ERROR, logger="pgpubsub.processing"):
            handled = pgpubsub.process_stored_notifications([Task])
    finally:
        pgpubsub.notification_processed.disconnect(broken)

    assert handled == 2
    assert not Notification.objects.exists()
    errors = [r for r in caplog.records if getattr(r, "action", None) == "signal_failed"]
    assert len(errors) == 2
    assert "testapp.channels.Task" in errors[0].getMessage()
    assert errors[0].exc_info is not None and "receiver bug" in str(errors[0].exc_info[1])
