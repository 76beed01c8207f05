"""Failing listeners: retried with a growing delay, then kept as dead letters; others go on."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

import pgpubsub
from pgpubsub import Channel
from pgpubsub.models import Notification
from pgpubsub.queue import retry_failed
from pgpubsub.stored import BatchResult, StoredProcessor
from testapp.channels import PostReads, Task
from testapp.models import ListenerEvent, Post
from tests.factories import AuthorFactory

pytestmark = pytest.mark.django_db


@dataclass
class Fragile(Channel):
    """A lockable channel whose listener the tests register, break and fix."""

    key: str
    lock_notifications = True


def process_tasks() -> BatchResult:
    return StoredProcessor().process_batch(Task)


def make_due() -> None:
    """Let the retry delay pass (without waiting for it)."""
    Notification.objects.update(available_at=timezone.now() - datetime.timedelta(seconds=1))


def task_keys_delivered() -> list[str]:
    return list(
        ListenerEvent.objects.filter(listener="task")
        .order_by("id")
        .values_list("object_key", flat=True)
    )


@override_settings(PGPUBSUB_RETRY_BACKOFF=30.0)
def test_failing_message_is_scheduled_for_retry_while_the_rest_of_its_batch_is_done() -> None:
    pgpubsub.notify(Task, key="good 1")
    pgpubsub.notify(Task, key="bad", fail=True)
    pgpubsub.notify(Task, key="good 2")
    before = timezone.now()

    result = process_tasks()

    assert (result.claimed, result.processed, result.failed) == (3, 2, 1)
    assert task_keys_delivered() == ["good 1", "good 2"]
    (failed,) = Notification.objects.all()
    assert failed.payload["kwargs"]["key"] == "bad"
    assert failed.attempts == 1
    assert failed.status == "retrying"
    assert failed.failed_at is None
    assert failed.last_attempt_at is not None and failed.last_attempt_at >= before
    assert failed.available_at >= before + datetime.timedelta(seconds=29)
    assert failed.last_error.startswith("Traceback (most recent call last):")
    assert "ValueError: task bad was asked to fail" in failed.last_error
    assert "run_task" in failed.last_error


def test_message_is_not_retried_before_its_delay_has_passed() -> None:
    pgpubsub.notify(Task, key="bad", fail=True)
    process_tasks()

    assert process_tasks().claimed == 0


@override_settings(PGPUBSUB_MAX_ATTEMPTS=3, PGPUBSUB_RETRY_BACKOFF=1.0)
def test_retry_delay_doubles_with_each_attempt() -> None:
    pgpubsub.notify(Task, key="bad", fail=True)
    delays = []
    for _ in range(2):
        process_tasks()
        failed = Notification.objects.get()
        assert failed.last_attempt_at is not None
        delays.append((failed.available_at - failed.last_attempt_at).total_seconds())
        make_due()

    assert delays == [1.0, 2.0]


@override_settings(PGPUBSUB_MAX_ATTEMPTS=3)
def test_message_failing_max_attempts_times_is_marked_failed_and_never_claimed_again() -> None:
    pgpubsub.notify(Task, key="bad", fail=True)

    for _ in range(3):
        assert process_tasks().failed == 1
        make_due()

    failed = Notification.objects.get()
    assert failed.attempts == 3
    assert failed.failed_at is not None
    assert failed.status == "failed"
    assert list(Notification.objects.failed()) == [failed]
    assert not Notification.objects.pending().exists()
    assert process_tasks().claimed == 0
    assert pgpubsub.process_stored_notifications() == 0


def test_failed_listener_rolls_back_only_its_own_writes(isolated_registry: None) -> None:
    @pgpubsub.listener(Fragile)
    def write_then_maybe_fail(key: str) -> None:
        ListenerEvent.objects.create(listener="fragile", object_key=key)
        if key == "bad":
            raise RuntimeError("failed after writing")

    for key in ("before", "bad", "after"):
        pgpubsub.notify(Fragile, key=key)

    result = StoredProcessor().process_batch(Fragile)

    assert (result.processed, result.failed) == (2, 1)
    assert list(
        ListenerEvent.objects.filter(listener="fragile").values_list("object_key", flat=True)
    ) == ["before", "after"]


def test_retried_dead_letter_is_delivered_once_the_listener_is_fixed(
    isolated_registry: None,
) -> None:
    broken = True

    @pgpubsub.listener(Fragile)
    def record(key: str) -> None:
        if broken:
            raise RuntimeError("not deployed yet")
        ListenerEvent.objects.create(listener="fragile", object_key=key)

    pgpubsub.notify(Fragile, key="k")
    with override_settings(PGPUBSUB_MAX_ATTEMPTS=1):
        StoredProcessor().process_batch(Fragile)
    assert Notification.objects.failed().count() == 1

    broken = False
    requeued = retry_failed(using="default")
    retried = Notification.objects.get()
    handled = pgpubsub.process_stored_notifications([Fragile])

    assert requeued == 1
    assert (retried.attempts, retried.failed_at, retried.status) == (0, None, "new")
    assert handled == 1
    assert list(ListenerEvent.objects.values_list("object_key", flat=True)) == ["k"]
    assert not Notification.objects.exists()


@override_settings(PGPUBSUB_MAX_ATTEMPTS=1)
def test_retry_failed_can_be_limited_to_channels_and_ids() -> None:
    pgpubsub.notify(Task, key="a", fail=True)
    pgpubsub.notify(Task, key="b", fail=True)
    pgpubsub.notify(PostReads, post_id=0)
    Notification.objects.filter(channel=PostReads.listen_safe_name()).update(
        failed_at=timezone.now()
    )
    process_tasks()
    first_task = Notification.objects.filter(channel=Task.listen_safe_name()).order_by("id")[0]

    assert retry_failed(using="default", ids=[first_task.pk]) == 1
    assert retry_failed(using="default", channels=[Task.listen_safe_name()]) == 1
    assert list(Notification.objects.failed().values_list("channel", flat=True)) == [
        PostReads.listen_safe_name()
    ]


def run_command(*args: str) -> str:
    out = StringIO()
    call_command("pgpubsub", *args, stdout=out)
    return out.getvalue()


def test_failed_command_says_when_there_is_nothing_to_show() -> None:
    assert run_command("failed") == "No failed notifications.\n"


@override_settings(PGPUBSUB_MAX_ATTEMPTS=1)
def test_failed_command_lists_dead_letters_with_their_channel_and_last_error() -> None:
    pgpubsub.notify(Task, key="bad", fail=True)
    process_tasks()
    failed = Notification.objects.get()

    lines = run_command("failed").splitlines()

    assert lines[0].split() == ["id", "attempts", "channel", "last", "error"]
    assert lines[1].split(maxsplit=3) == [
        str(failed.pk),
        "1",
        "testapp.channels.Task",
        "ValueError: task bad was asked to fail",
    ]
    assert len(lines) == 2


@override_settings(PGPUBSUB_MAX_ATTEMPTS=1)
def test_failed_command_filters_by_channel_and_limits_its_output() -> None:
    for key in ("a", "b", "c"):
        pgpubsub.notify(Task, key=key, fail=True)
    process_tasks()

    limited = run_command("failed", "--limit", "2").splitlines()
    other_channel = run_command("failed", "--channel", "testapp.channels.PostReads")
    by_pg_name = run_command("failed", "--channel", Task.listen_safe_name()).splitlines()

    assert len(limited) == 4
    assert limited[-1] == "... and 1 more (use --limit)."
    assert other_channel == "No failed notifications.\n"
    assert len(by_pg_name) == 4


@override_settings(PGPUBSUB_MAX_ATTEMPTS=1)
def test_retry_command_requeues_failed_notifications() -> None:
    for key in ("a", "b", "c"):
        pgpubsub.notify(Task, key=key, fail=True)
    process_tasks()
    first, *_ = Notification.objects.order_by("id")

    by_id = run_command("retry", "--id", str(first.pk))
    by_channel = run_command("retry", "--channel", "testapp.channels.Task")
    nothing_left = run_command("retry")

    assert by_id == "Re-queued 1 failed notification(s).\n"
    assert by_channel == "Re-queued 2 failed notification(s).\n"
    assert nothing_left == "Re-queued 0 failed notification(s).\n"
    assert not Notification.objects.failed().exists()
    assert process_tasks().claimed == 3


@pytest.mark.django_db(transaction=True)
def test_listener_breaking_a_foreign_key_fails_alone_and_the_batch_commits(
    isolated_registry: None,
) -> None:
    # Django's foreign keys are DEFERRABLE INITIALLY DEFERRED: checked at COMMIT, unless
    # each message's savepoint checks them.
    author = AuthorFactory.create()

    @pgpubsub.listener(Fragile)
    def add_post(key: str) -> None:
        Post.objects.create(author_id=author.pk if key != "dangling" else 2**40, title=key)

    for key in ("before", "dangling", "after"):
        pgpubsub.notify(Fragile, key=key)

    result = StoredProcessor().process_batch(Fragile)

    assert (result.processed, result.failed) == (2, 1)
    assert sorted(Post.objects.values_list("title", flat=True)) == ["after", "before"]
    failed = Notification.objects.get(channel=Fragile.listen_safe_name())
    assert "IntegrityError" in failed.last_error
