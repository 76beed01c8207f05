"""Messages sent for later are handled when due, by real workers that wake for them."""

from __future__ import annotations

import pytest

import pgpubsub
from pgpubsub.models import Notification
from testapp.channels import Task
from testapp.models import ListenerEvent
from tests.acceptance.conftest import StartListen
from tests.support.processes import wait_for

TASK = "testapp.channels.Task"
#: Far longer than the tests' deadlines: a message handled in time was not found by a poll.
NO_POLL = {"PGPUBSUB_POLL_INTERVAL": "300"}


def _handled(key: str) -> ListenerEvent | None:
    return ListenerEvent.objects.filter(listener="task", object_key=key).first()


@pytest.mark.django_db(transaction=True)
def test_a_listening_worker_wakes_when_a_message_sent_for_later_is_due(
    listen: StartListen,
) -> None:
    worker = listen("--worker", "--channels", TASK, env=NO_POLL)
    worker.wait_for_output("Listening on")

    pgpubsub.notify_later(Task, 1.5, key="later")
    due = Notification.objects.get().available_at

    event = wait_for(lambda: _handled("later"), timeout=20, message="the delayed task")
    assert event.created_at >= due
    assert ListenerEvent.objects.filter(listener="task").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_worker_started_after_the_send_wakes_when_the_message_is_due(
    listen: StartListen,
) -> None:
    pgpubsub.notify_later(Task, 3, key="sent before")
    pgpubsub.notify_later(Task, 4, key="second")
    due = Notification.objects.order_by("id").first().available_at  # type: ignore[union-attr]

    listen("--worker", "--channels", TASK, env=NO_POLL).wait_for_output("Listening on")

    first = wait_for(lambda: _handled("sent before"), timeout=20, message="the first task")
    assert first.created_at >= due
    # Handled after the first: the worker looked up the next one when it had handled it.
    wait_for(lambda: _handled("second"), timeout=20, message="the second task")
