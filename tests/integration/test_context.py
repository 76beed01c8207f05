"""The notification context: set from Python, carried by trigger payloads, seen by listeners."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.test import override_settings

import pgpubsub
from pgpubsub import NotificationContextError, PayloadError
from pgpubsub.models import Notification
from testapp.channels import AuthorTriggerChannel, PostReads
from testapp.models import Author, Post
from tests.factories import AuthorFactory, PostFactory
from tests.integration.messaging import stored_payloads

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("clean_notification_context"),
]


class TenantAFilter:
    """A PGPUBSUB_LISTENER_FILTER provider: only tenant 'a' is processed here."""

    def get_filter(self) -> Q:
        return Q(payload__context__tenant="a")


def stored_contexts() -> list[Any]:
    return [payload["context"] for payload in stored_payloads(AuthorTriggerChannel)]


def test_context_lands_in_the_trigger_payload() -> None:
    pgpubsub.set_notification_context({"request_id": "r-1", "user": 7})

    AuthorFactory.create()

    assert stored_contexts() == [{"request_id": "r-1", "user": 7}]


def test_context_lasts_for_the_session_by_default() -> None:
    with transaction.atomic():
        pgpubsub.set_notification_context({"user": 7})
    AuthorFactory.create()
    with transaction.atomic():
        AuthorFactory.create()

    assert stored_contexts() == [{"user": 7}, {"user": 7}]


def test_setting_a_new_context_replaces_the_previous_one() -> None:
    pgpubsub.set_notification_context({"user": 7})
    AuthorFactory.create()
    pgpubsub.set_notification_context({"user": 8})
    AuthorFactory.create()

    assert stored_contexts() == [{"user": 7}, {"user": 8}]


@override_settings(PGPUBSUB_TX_BOUND_NOTIFICATION_CONTEXT=True)
def test_transaction_bound_context_applies_only_inside_its_transaction() -> None:
    with transaction.atomic():
        pgpubsub.set_notification_context({"user": 7})
        AuthorFactory.create()
    with transaction.atomic():
        AuthorFactory.create()
    AuthorFactory.create()

    assert stored_contexts() == [{"user": 7}, {}, {}]


@override_settings(PGPUBSUB_TX_BOUND_NOTIFICATION_CONTEXT=True)
def test_transaction_bound_context_outside_a_transaction_is_an_error() -> None:
    with pytest.raises(NotificationContextError, match=r"inside transaction\.atomic\(\)"):
        pgpubsub.set_notification_context({"user": 7})


@override_settings(PGPUBSUB_TX_BOUND_NOTIFICATION_CONTEXT=True)
def test_transaction_bound_context_is_dropped_when_its_transaction_rolls_back() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        pgpubsub.set_notification_context({"user": 7})
        raise RuntimeError("roll back")
    with transaction.atomic():
        AuthorFactory.create()

    assert stored_contexts() == [{}]


def test_listeners_receive_the_context_when_asked_to(isolated_registry: None) -> None:
    received: list[dict[str, Any]] = []

    @pgpubsub.listener(AuthorTriggerChannel)
    def capture(old: Author | None, new: Author, **kwargs: Any) -> None:
        received.append(kwargs)

    pgpubsub.set_notification_context({"content": "from the request"})
    AuthorFactory.create()
    pgpubsub.process_stored_notifications([AuthorTriggerChannel])
    AuthorFactory.create()
    with override_settings(PGPUBSUB_PASS_CONTEXT_TO_LISTENERS=True):
        pgpubsub.process_stored_notifications([AuthorTriggerChannel])

    assert received == [{}, {"context": {"content": "from the request"}}]


@override_settings(PGPUBSUB_PASS_CONTEXT_TO_LISTENERS=True)
def test_listeners_receive_an_empty_context_when_none_was_set(isolated_registry: None) -> None:
    received: list[Any] = []

    @pgpubsub.listener(AuthorTriggerChannel)
    def capture(old: Author | None, new: Author, context: dict[str, Any]) -> None:
        received.append(context)

    AuthorFactory.create()
    pgpubsub.process_stored_notifications([AuthorTriggerChannel])

    assert received == [{}]


@override_settings(PGPUBSUB_PASS_CONTEXT_TO_LISTENERS=True)
def test_plain_channel_listeners_are_not_given_a_context() -> None:
    # count_read(post_id) takes no context argument, as in django-pgpubsub 1.3.
    post = PostFactory.create()
    pgpubsub.notify(PostReads, post_id=post.pk)

    pgpubsub.process_stored_notifications([PostReads])

    post.refresh_from_db()
    assert post.read_count == 1
    assert not Notification.objects.filter(channel=PostReads.listen_safe_name()).exists()


@override_settings(PGPUBSUB_LISTENER_FILTER=f"{__name__}.TenantAFilter")
def test_listener_filter_restricts_which_stored_notifications_are_processed() -> None:
    pgpubsub.set_notification_context({"tenant": "a"})
    AuthorFactory.create(name="of tenant a")
    pgpubsub.set_notification_context({"tenant": "b"})
    AuthorFactory.create(name="of tenant b")

    handled = pgpubsub.process_stored_notifications()

    assert handled == 1
    assert list(Post.objects.values_list("title", flat=True)) == ["Welcome, of tenant a!"]
    assert stored_contexts() == [{"tenant": "b"}]


@pytest.mark.parametrize(
    ("context", "named"),
    [
        ({"user": "nul\x00inside"}, r"\['user'\] contains a NUL character"),
        ({"score": float("nan")}, r"\['score'\] is nan"),
        ({"limit": float("inf")}, r"\['limit'\] is inf"),
        ({"tags": ["ok", "half a pair \ud800"]}, r"\['tags'\]\[1\] contains an unpaired"),
        ({"by\x00key": 1}, r"the key 'by\\x00key' contains a NUL"),
    ],
)
def test_context_value_jsonb_refuses_is_a_payload_error_and_later_writes_still_succeed(
    context: dict[str, Any], named: str
) -> None:
    pgpubsub.set_notification_context({"user": 7})

    with pytest.raises(PayloadError, match=rf"Notification context {named}"):
        pgpubsub.set_notification_context(context)
    AuthorFactory.create()

    assert stored_contexts() == [{"user": 7}]


def test_context_set_by_hand_that_jsonb_refuses_is_left_out_and_the_write_succeeds() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('pgpubsub.notification_context', %s, false)",
            ['{"user": "nul\\u0000inside"'],
        )

    AuthorFactory.create()

    assert stored_contexts() == [{}]


def test_context_error_is_a_runtime_error_as_in_django_pgpubsub_1_3() -> None:
    with (
        override_settings(PGPUBSUB_TX_BOUND_NOTIFICATION_CONTEXT=True),
        pytest.raises(RuntimeError, match=r"inside transaction\.atomic\(\)"),
    ):
        pgpubsub.set_notification_context({"user": 7})


def _fail_a_statement() -> None:
    """Make the current transaction fail, as a handled IntegrityError does."""
    with pytest.raises(DatabaseError), connection.cursor() as cursor:
        cursor.execute("SELECT 1/0")


@pytest.mark.parametrize("tx_bound", [True, False])
def test_context_is_ignored_in_a_transaction_whose_statement_failed(
    tx_bound: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with override_settings(PGPUBSUB_TX_BOUND_NOTIFICATION_CONTEXT=tx_bound), transaction.atomic():
        _fail_a_statement()
        pgpubsub.set_notification_context({"user": 7})
        transaction.set_rollback(True)

    assert "set_notification_context() ignored" in caplog.text
    AuthorFactory.create()
    assert stored_contexts() in ([None], [{}])  # the context was not set


@pytest.mark.parametrize("tx_bound", [True, False])
def test_context_is_ignored_in_a_transaction_marked_for_rollback(tx_bound: bool) -> None:
    with override_settings(PGPUBSUB_TX_BOUND_NOTIFICATION_CONTEXT=tx_bound), transaction.atomic():
        transaction.set_rollback(True)  # as Django does when an inner atomic() failed
        # Any query would now raise TransactionManagementError.
        pgpubsub.set_notification_context({"user": 7})
