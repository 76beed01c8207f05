"""The Django admin of stored notifications."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

import pgpubsub
from pgpubsub.models import Notification
from testapp.channels import Task

pytestmark = pytest.mark.django_db


@pytest.fixture
def failed_and_pending() -> tuple[Notification, Notification]:
    pgpubsub.notify(Task, key="broken")
    pgpubsub.notify(Task, key="waiting")
    failed, pending = Notification.objects.order_by("id")
    failed.attempts = 3
    failed.failed_at = timezone.now()
    failed.last_error = (
        "Traceback (most recent call last):\nValueError: task broken was asked to fail"
    )
    failed.save()
    return failed, pending


def test_changelist_shows_channel_status_and_last_error(
    admin_client: Client, failed_and_pending: tuple[Notification, Notification]
) -> None:
    response = admin_client.get(reverse("admin:pgpubsub_notification_changelist"))
    page = response.content.decode()
    assert response.status_code == 200
    assert "testapp.channels.Task" in page
    assert "ValueError: task broken was asked to fail" in page
    assert "failed" in page and "pending" in page


def test_status_filter_lists_only_failed_notifications(
    admin_client: Client, failed_and_pending: tuple[Notification, Notification]
) -> None:
    failed, pending = failed_and_pending
    url = reverse("admin:pgpubsub_notification_changelist")
    page = admin_client.get(url, {"status": "failed"}).content.decode()
    assert f"/{failed.pk}/change/" in page
    assert f"/{pending.pk}/change/" not in page


def test_detail_shows_the_payload_as_formatted_json_and_the_traceback(
    admin_client: Client, failed_and_pending: tuple[Notification, Notification]
) -> None:
    failed, _ = failed_and_pending
    url = reverse("admin:pgpubsub_notification_change", args=[failed.pk])
    page = admin_client.get(url).content.decode()
    assert "&quot;key&quot;: &quot;broken&quot;" in page
    assert "Traceback (most recent call last)" in page


def test_retry_now_action_puts_a_failed_notification_back_in_the_queue(
    admin_client: Client, failed_and_pending: tuple[Notification, Notification]
) -> None:
    failed, _ = failed_and_pending
    response = admin_client.post(
        reverse("admin:pgpubsub_notification_changelist"),
        {"action": "retry_now", "_selected_action": [failed.pk]},
        follow=True,
    )
    assert "1 notification(s) will be processed now." in response.content.decode()
    failed.refresh_from_db()
    assert (failed.failed_at, failed.attempts, failed.status) == (None, 0, "pending")


def test_delete_action_asks_for_confirmation_before_deleting(
    admin_client: Client, failed_and_pending: tuple[Notification, Notification]
) -> None:
    failed, _ = failed_and_pending
    url = reverse("admin:pgpubsub_notification_changelist")
    confirm = admin_client.post(url, {"action": "delete_selected", "_selected_action": [failed.pk]})
    assert "Are you sure" in confirm.content.decode()
    assert Notification.objects.filter(pk=failed.pk).exists()
    admin_client.post(
        url, {"action": "delete_selected", "_selected_action": [failed.pk], "post": "yes"}
    )
    assert not Notification.objects.filter(pk=failed.pk).exists()
