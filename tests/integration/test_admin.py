"""The Django admin of stored notifications."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

import pgpubsub
from pgpubsub.models import InFlightBatch, Notification
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
    assert "failed" in page and "new" in page


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
    assert (failed.failed_at, failed.attempts, failed.status) == (None, 0, "new")


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


def test_retry_now_is_offered_only_to_users_who_may_change_notifications(
    client: Client, failed_and_pending: tuple[Notification, Notification]
) -> None:
    from django.contrib.auth.models import Permission, User

    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_notification"))
    client.force_login(viewer)
    url = reverse("admin:pgpubsub_notification_changelist")
    assert "retry_now" not in client.get(url).content.decode()

    viewer.user_permissions.add(Permission.objects.get(codename="change_notification"))
    viewer = User.objects.get(pk=viewer.pk)  # fresh permission cache
    client.force_login(viewer)
    assert "retry_now" in client.get(url).content.decode()


def test_changelist_of_200000_notifications_never_counts_the_whole_table(
    admin_client: Client,
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO pgpubsub_notification (channel, payload, created_at) "
            "SELECT 'pgpubsub_00000', jsonb_build_object('kwargs', jsonb_build_object('n', g)), "
            "now() FROM generate_series(1, 200000) AS g"
        )
        cursor.execute("ANALYZE pgpubsub_notification")
    url = reverse("admin:pgpubsub_notification_changelist")
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(url)
    assert response.status_code == 200
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    unfiltered = [sql for sql in counts if "pgpubsub_notification" in sql and "WHERE" not in sql]
    assert unfiltered == [], unfiltered
    # Page links come from PostgreSQL's row estimate, close to the 200,000 rows.
    assert 190_000 <= response.context["cl"].result_count <= 210_000


def test_in_flight_batches_are_listed_read_only(admin_client: Client) -> None:
    pgpubsub.notify(Task, key="still stored")
    stored = Notification.objects.get()
    dead = InFlightBatch.objects.create(
        notification_ids=[stored.pk, stored.pk + 1],
        running_id=stored.pk,
        worker="pgpubsub worker 77 on host-a",
    )

    page = admin_client.get(reverse("admin:pgpubsub_inflightbatch_changelist")).content.decode()
    detail = admin_client.get(reverse("admin:pgpubsub_inflightbatch_change", args=[dead.pk]))

    assert "pgpubsub worker 77 on host-a" in page
    assert '<td class="field-message_count">2</td>' in page
    assert detail.status_code == 200
    link = reverse("admin:pgpubsub_notification_change", args=[stored.pk])
    assert f'<a href="{link}">{stored.pk}</a>, {stored.pk + 1}' in detail.content.decode()
    # Deleting a record would lose what lets the next worker charge a crash to its message.
    delete = reverse("admin:pgpubsub_inflightbatch_delete", args=[dead.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert InFlightBatch.objects.filter(pk=dead.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_dead_letter_of_an_ordered_channel_says_later_messages_of_its_key_went_on(
    admin_client: Client,
) -> None:
    from testapp.channels import OrderedTask

    pgpubsub.notify(OrderedTask, key="order-7", seq=0)
    dead = Notification.objects.get()
    dead.failed_at = timezone.now()
    dead.save()

    url = reverse("admin:pgpubsub_notification_change", args=[dead.pk])
    page = admin_client.get(url).content.decode()
    assert "order-7: as a dead letter it no longer holds back its key" in page
    assert "later messages of this key were handled after it" in page
