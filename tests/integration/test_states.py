"""The states of a stored notification, defined once (pgpubsub.models.State)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from pgpubsub.models import InFlightBatch, Notification, State
from pgpubsub.status import collect_status
from testapp.channels import Task

pytestmark = pytest.mark.django_db


def stored(key: str, **fields: object) -> Notification:
    return Notification.objects.create(
        channel=Task.listen_safe_name(), payload={"kwargs": {"key": key}}, **fields
    )


def test_each_notification_is_in_one_state_and_the_views_across_them_agree() -> None:
    later = timezone.now() + timedelta(hours=1)
    new = stored("new")
    retrying_due = stored("retrying, due", attempts=1)
    retrying_later = stored("retrying later", attempts=2, available_at=later)
    failed = stored("failed", attempts=5, failed_at=timezone.now())
    InFlightBatch.objects.create(notification_ids=[new.pk, failed.pk], worker="w")

    def ids(queryset: object) -> set[int]:
        return set(queryset.values_list("pk", flat=True))  # type: ignore[attr-defined]

    objects = Notification.objects
    assert ids(objects.new()) == {new.pk}
    assert ids(objects.retrying()) == {retrying_due.pk, retrying_later.pk}
    assert ids(objects.failed()) == {failed.pk}
    assert (
        ids(objects.waiting())
        == ids(objects.pending())
        == {
            new.pk,
            retrying_due.pk,
            retrying_later.pk,
        }
    )
    assert ids(objects.due()) == {new.pk, retrying_due.pk}
    assert ids(objects.in_flight()) == {new.pk, failed.pk}
    assert [n.status for n in objects.order_by("pk")] == [
        State.NEW,
        State.RETRYING,
        State.RETRYING,
        State.FAILED,
    ]

    (task,) = [
        s for s in collect_status("default").channels if s.pg_name == Task.listen_safe_name()
    ]
    assert task.counts() == {"new": 1, "retrying": 2, "failed": 1, "handled": 0}
    assert task.oldest_waiting_seconds is not None


def test_the_error_summary_is_the_last_line_of_the_traceback_cut_short() -> None:
    row = stored("x", last_error="Traceback (most recent call last):\n  ...\nValueError: boom\n\n")
    assert row.error_summary() == "ValueError: boom"
    assert row.error_summary(limit=6) == "Value…"
