"""The Django admin of stored notifications."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

import pgpubsub
from pgpubsub.models import InFlightBatch, Notification
from testapp.channels import OrderedTask, Task

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


@pytest.fixture
def kept_handled() -> tuple[Notification, Notification, Notification]:
    """Handled Task messages kept 2 and 30 days ago, and one of another channel today."""
    now = timezone.now()
    rows = [
        Notification.objects.create(
            channel=channel.listen_safe_name(),
            payload={"kwargs": {"key": key}},
            handled_at=now - timedelta(days=days),
            handled_by=f"pgpubsub worker 42{days} on host",
        )
        for channel, key, days in ((Task, "recent", 2), (Task, "old", 30), (OrderedTask, "k", 0))
    ]
    return rows[0], rows[1], rows[2]


def _listed(admin_client: Client, **params: str) -> str:
    url = reverse("admin:pgpubsub_notification_changelist")
    return str(admin_client.get(url, params).content.decode())


def test_handled_messages_are_listed_and_filtered_by_state_channel_and_time(
    admin_client: Client,
    failed_and_pending: tuple[Notification, Notification],
    kept_handled: tuple[Notification, Notification, Notification],
) -> None:
    recent, old, other = kept_handled
    failed, pending = failed_and_pending

    def shown(page: str) -> set[int]:
        rows = (recent, old, other, failed, pending)
        return {row.pk for row in rows if f"/{row.pk}/change/" in page}

    assert shown(_listed(admin_client)) == {recent.pk, old.pk, other.pk, failed.pk, pending.pk}
    assert shown(_listed(admin_client, status="handled")) == {recent.pk, old.pk, other.pk}
    assert shown(_listed(admin_client, status="handled", channel=Task.listen_safe_name())) == {
        recent.pk,
        old.pk,
    }
    # The link of the filter's "Past 7 days".
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    past_week = {
        "handled_at__gte": str(today - timedelta(days=7)),
        "handled_at__lt": str(today + timedelta(days=1)),
    }
    assert shown(_listed(admin_client, **past_week)) == {recent.pk, other.pk}
    assert shown(_listed(admin_client, channel=Task.listen_safe_name(), **past_week)) == {recent.pk}
    assert "By handled at" in _listed(admin_client)


def test_a_handled_message_shows_when_and_by_whom_and_a_copy_links_its_original(
    admin_client: Client, kept_handled: tuple[Notification, Notification, Notification]
) -> None:
    recent, _, _ = kept_handled
    copy = Notification.objects.create(
        channel=Task.listen_safe_name(), payload=recent.payload, replay_of=recent.pk
    )
    orphan = Notification.objects.create(
        channel=Task.listen_safe_name(), payload=recent.payload, replay_of=123456789
    )

    def detail(row: Notification) -> str:
        url = reverse("admin:pgpubsub_notification_change", args=[row.pk])
        return str(admin_client.get(url).content.decode())

    assert "pgpubsub worker 422 on host" in detail(recent)
    original_url = reverse("admin:pgpubsub_notification_change", args=[recent.pk])
    assert f'<a href="{original_url}">{recent.pk}</a>' in detail(copy)
    assert "123456789 (no longer stored)" in detail(orphan)


def test_retry_now_leaves_handled_messages_alone(
    admin_client: Client, kept_handled: tuple[Notification, Notification, Notification]
) -> None:
    recent, _, _ = kept_handled
    response = admin_client.post(
        reverse("admin:pgpubsub_notification_changelist"),
        {"action": "retry_now", "_selected_action": [recent.pk]},
        follow=True,
    )

    assert "0 notification(s) will be processed now." in response.content.decode()
    recent.refresh_from_db()
    assert recent.status == "handled"
