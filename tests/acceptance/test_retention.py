"""PGPUBSUB_KEEP_HANDLED and replay with real workers: handled messages are kept, marked with
their worker; old ones are pruned; a replayed copy runs again and names its original."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

import pgpubsub
from pgpubsub.models import Notification, State
from testapp.channels import Receipt, Task
from testapp.models import ListenerEvent
from tests.acceptance.conftest import StartListen
from tests.support.processes import run_manage, wait_for

TASK = "testapp.channels.Task"
KEEP_AN_HOUR = {"PGPUBSUB_KEEP_HANDLED": "3600"}
RECEIPT = "testapp.channels.Receipt"
#: Far longer than the test's deadlines: what is handled in time was not found by a poll.
NO_POLL = {"PGPUBSUB_POLL_INTERVAL": "300"}


def kept(key: str, handled_ago: datetime.timedelta) -> Notification:
    return Notification.objects.create(
        channel=Task.listen_safe_name(),
        payload={"kwargs": {"key": key}},
        handled_at=timezone.now() - handled_ago,
        handled_by="an earlier worker",
    )


def keys_in(state: State) -> list[str]:
    rows = Notification.objects.in_state(state)
    return sorted(row.payload["kwargs"]["key"] for row in rows)


@pytest.mark.django_db(transaction=True)
def test_a_worker_keeps_what_it_handled_and_prunes_only_old_handled_messages(
    listen: StartListen,
) -> None:
    kept("handled 2 hours ago", datetime.timedelta(hours=2))
    kept("handled 3 hours ago", datetime.timedelta(hours=3))
    kept("handled 10 minutes ago", datetime.timedelta(minutes=10))
    worker = listen("--worker", "--channels", TASK, env=KEEP_AN_HOUR)
    (pid,) = worker.wait_for_workers(1)

    pgpubsub.notify(Task, key="a")
    pgpubsub.notify(Task, key="b")

    wait_for(
        lambda: keys_in(State.HANDLED) == ["a", "b", "handled 10 minutes ago"],
        message="a and b kept handled, the old ones pruned",
    )
    ours = Notification.objects.filter(payload__kwargs__key__in=["a", "b"])
    # The worker's name: "pgpubsub worker <pid> <random part> on <host>, started <time>".
    assert [row.handled_by.split(" ")[:3] for row in ours] == [["pgpubsub", "worker", str(pid)]] * 2  # type: ignore[union-attr]
    assert all(row.handled_at is not None for row in ours)


def receipts() -> list[dict[str, object]]:
    events = ListenerEvent.objects.filter(listener="receipt").order_by("id")
    return [event.detail for event in events]


@pytest.mark.django_db(transaction=True)
def test_a_replayed_message_runs_again_in_a_worker_and_names_its_original(
    listen: StartListen,
) -> None:
    worker = listen("--worker", "--channels", RECEIPT, env={**KEEP_AN_HOUR, **NO_POLL})
    worker.wait_for_workers(1)
    pgpubsub.notify(Receipt, order_id=7)
    (first,) = wait_for(receipts, message="the receipt handled")
    (original,) = Notification.objects.all()
    assert first == {"id": original.pk, "replay_of": None, "attempt": 1}
    wait_for(lambda: Notification.objects.get().handled_at, message="the original kept")

    output = run_manage("pgpubsub", "replay", "--channel", RECEIPT)

    assert output == f"Queued 1 copy of 1 matching message of {RECEIPT}.\n"
    (copy,) = Notification.objects.filter(replay_of=original.pk)
    # Woken by the replay's doorbell: the worker does not poll within the deadline.
    wait_for(lambda: len(receipts()) == 2, message="the replayed receipt handled")
    assert receipts()[1] == {"id": copy.pk, "replay_of": original.pk, "attempt": 1}
