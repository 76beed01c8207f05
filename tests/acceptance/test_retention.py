"""PGPUBSUB_KEEP_HANDLED and replay with real workers: handled messages are kept, marked with
their worker; old ones are pruned; a replayed copy runs again and names its original."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

import pgpubsub
from pgpubsub.models import Notification, State
from testapp.channels import Task
from tests.acceptance.conftest import StartListen
from tests.support.processes import wait_for

TASK = "testapp.channels.Task"
KEEP_AN_HOUR = {"PGPUBSUB_KEEP_HANDLED": "3600"}


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
