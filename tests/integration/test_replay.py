"""``manage.py pgpubsub replay``: new copies of handled or dead-letter messages, each naming
its original, queued with a doorbell; bad requests are command errors naming the problem."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

import pgpubsub
from pgpubsub import MessageInfo
from pgpubsub.connection import ListenConnection
from pgpubsub.exceptions import ReplayError
from pgpubsub.models import Notification, State
from pgpubsub.registry import registry
from pgpubsub.replay import replay
from pgpubsub.stored import process_stored_notifications
from testapp.channels import Announcement, AuthorTriggerChannel, Task
from testapp.models import Author, Post
from tests.integration.messaging import receive_through_sentinel

pytestmark = pytest.mark.django_db(transaction=True)

TASK = "testapp.channels.Task"
NOW = timezone.now()
HOUR = datetime.timedelta(hours=1)


def done(key: str, *, handled: datetime.datetime | None = NOW, **fields: Any) -> Notification:
    """A kept handled message of Task (``handled=None``: waiting, or with ``failed_at`` a
    dead letter)."""
    return Notification.objects.create(
        channel=Task.listen_safe_name(),
        payload={"kwargs": {"key": key, **fields.pop("kwargs", {})}},
        handled_at=handled,
        handled_by="a worker" if handled else None,
        ordering_key=fields.pop("ordering_key", None),
        **fields,
    )


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("pgpubsub", "replay", "--channel", TASK, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def copies() -> list[Notification]:
    return list(Notification.objects.filter(replay_of__isnull=False).order_by("id"))


def test_copies_are_new_messages_naming_their_originals_in_the_time_window() -> None:
    done("too early", handled=NOW - 3 * HOUR)
    first = done("first", handled=NOW - 2 * HOUR, ordering_key="k1")
    second = done("second", handled=NOW - HOUR)
    done("too late", handled=NOW)
    done("waiting", handled=None, available_at=NOW - 2 * HOUR)  # neither handled nor failed

    out, err = run("--since", (NOW - 2 * HOUR).isoformat(), "--until", (NOW - HOUR / 2).isoformat())

    assert out == f"Queued 2 copies of 2 matching messages of {TASK}.\n"
    assert err == ""
    assert [
        (c.replay_of, c.payload, c.ordering_key, c.status, c.channel, c.attempts) for c in copies()
    ] == [
        (first.pk, first.payload, "k1", State.NEW, Task.listen_safe_name(), 0),
        (second.pk, second.payload, None, State.NEW, Task.listen_safe_name(), 0),
    ]
    assert all(c.handled_at is None and c.created_at > first.created_at for c in copies())  # type: ignore[operator]
    # The originals are left as they were.
    assert Notification.objects.in_state(State.HANDLED).count() == 4


def test_dead_letters_are_replayed_too_and_ids_select_messages() -> None:
    dead = done("dead", handled=None, failed_at=NOW, attempts=5, last_error="ValueError")
    handled = done("handled")
    done("not asked for")

    out, _ = run("--id", str(dead.pk), "--id", str(handled.pk))

    assert out == f"Queued 2 copies of 2 matching messages of {TASK}.\n"
    assert [c.replay_of for c in copies()] == [dead.pk, handled.pk]
    assert Notification.objects.get(pk=dead.pk).status is State.FAILED


def test_a_dry_run_only_counts() -> None:
    done("a")
    done("b")

    out, _ = run("--dry-run")

    assert out == f"Would queue 2 copies of 2 matching messages of {TASK} (dry run).\n"
    assert copies() == []


def test_a_copy_of_a_copy_names_the_first_original() -> None:
    original = done("a")
    run("--id", str(original.pk))
    (copy,) = copies()
    Notification.objects.filter(pk=copy.pk).update(handled_at=NOW, handled_by="a worker")

    run("--id", str(copy.pk))

    assert [c.replay_of for c in copies()] == [original.pk, original.pk]


def test_the_copies_ring_the_channels_doorbell_when_they_commit(
    listen_to: Callable[..., ListenConnection], send_sentinel: Callable[[], None]
) -> None:
    done("a")
    listener = listen_to(Task.listen_safe_name())

    run()

    received = receive_through_sentinel(listener, send_sentinel)
    assert [(m.channel, m.payload) for m in received] == [(Task.listen_safe_name(), "")]


def test_a_dry_run_rings_no_doorbell(
    listen_to: Callable[..., ListenConnection], send_sentinel: Callable[[], None]
) -> None:
    done("a")
    listener = listen_to(Task.listen_safe_name())

    run("--dry-run")

    assert receive_through_sentinel(listener, send_sentinel) == []


def test_a_message_that_no_longer_fits_the_channel_is_named_and_the_others_are_queued() -> None:
    good = done("good")
    wrong_type = done("wrong type", kwargs={"sleep": "a while"})
    gone = Notification.objects.create(
        channel=Task.listen_safe_name(), payload={"kwargs": {}}, handled_at=NOW
    )

    with pytest.raises(CommandError) as raised:
        out, err = StringIO(), StringIO()
        call_command("pgpubsub", "replay", "--channel", TASK, stdout=out, stderr=err)

    assert out.getvalue() == f"Queued 1 copy of 3 matching messages of {TASK}.\n"
    assert err.getvalue().splitlines() == [
        f"Notification {wrong_type.pk} cannot be replayed: Field 'sleep' of channel {TASK} "
        "holds 'a while', which is not a float: could not convert string to float: 'a while'",
        f"Notification {gone.pk} cannot be replayed: it has no value for field 'key' of "
        f"channel {TASK}, which was added without a default after it was sent.",
    ]
    assert str(raised.value) == (
        "2 of 3 matching message(s) could not be replayed (see above): their payloads no "
        "longer fit the channel's fields."
    )
    assert [c.replay_of for c in copies()] == [good.pk]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["--channel", "testapp.channels.Nope"],
            "Channel 'testapp.channels.Nope' not found",
        ),
        (
            ["--channel", TASK, "--since", "yesterday"],
            "argument --since: 'yesterday' is not an ISO 8601 date or time",
        ),
        (
            ["--channel", TASK, "--until", "2026-13-45"],
            "argument --until: '2026-13-45' is not an ISO 8601 date or time",
        ),
        (
            ["--channel", TASK, "--since", "2026-12-02", "--until", "2026-12-01"],
            "--since (2026-12-02T00:00:00+00:00) must be before --until "
            "(2026-12-01T00:00:00+00:00).",
        ),
        (
            ["--channel", TASK, "--since", "2030-01-01T00:00:00Z"],
            f"No handled or dead-letter message of channel {TASK} matches (handled or failed "
            "from 2030-01-01T00:00:00+00:00): handled messages are kept only with "
            "PGPUBSUB_KEEP_HANDLED set, and for that period.",
        ),
        (
            ["--channel", TASK, "--id", "999999999"],
            f"No handled or dead-letter message of channel {TASK} has id 999999999",
        ),
        (
            ["--channel", "testapp.channels.Announcement"],
            "Channel testapp.channels.Announcement is not lockable",
        ),
        (["--since", "2026-12-01"], "the following arguments are required: --channel"),
    ],
)
def test_bad_arguments_are_command_errors_naming_the_problem(args: list[str], error: str) -> None:
    done("a", handled=datetime.datetime(2026, 12, 1, 12, tzinfo=datetime.timezone.utc))

    with pytest.raises(CommandError) as raised:
        call_command("pgpubsub", "replay", *args, stdout=StringIO(), stderr=StringIO())

    assert error in str(raised.value)
    assert copies() == []


def test_replay_refuses_a_channel_that_stores_nothing() -> None:
    with pytest.raises(ReplayError, match="not lockable"):
        replay(Announcement)


@override_settings(PGPUBSUB_KEEP_HANDLED=datetime.timedelta(days=1))
def test_a_replayed_copy_runs_again_and_its_callback_sees_the_original() -> None:
    seen: list[MessageInfo | None] = []
    with registry.isolated():
        pgpubsub.listener(Task)(lambda **fields: seen.append(pgpubsub.current_message()))
        pgpubsub.notify(Task, key="a")
        process_stored_notifications([Task])
        (original,) = Notification.objects.all()

        result = replay(Task)
        process_stored_notifications([Task])

    assert [info.replay_of if info else "none" for info in seen] == [None, original.pk]
    assert [info.id if info else 0 for info in seen] == [original.pk, *result.queued]


@override_settings(PGPUBSUB_KEEP_HANDLED=datetime.timedelta(days=1))
def test_a_trigger_channels_message_is_replayed_with_its_rows() -> None:
    Author.objects.create(name="Ada")
    process_stored_notifications([AuthorTriggerChannel])
    (original,) = Notification.objects.all()

    out = StringIO()
    call_command(
        "pgpubsub", "replay", "--channel", AuthorTriggerChannel.name(), stdout=out, stderr=out
    )
    process_stored_notifications([AuthorTriggerChannel])

    assert out.getvalue() == (
        f"Queued 1 copy of 1 matching message of {AuthorTriggerChannel.name()}.\n"
    )
    # The listener gives each new author a first post: it ran again for the copy.
    assert list(Post.objects.values_list("title", flat=True)) == ["Welcome, Ada!"] * 2
    (copy,) = Notification.objects.filter(replay_of=original.pk)
    assert copy.status is State.HANDLED
