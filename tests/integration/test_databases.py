"""Several databases: channels work on each alias, and triggers exist where the router says.

The example project's router (testapp.routers) sends ``Ledger`` and ``LedgerEntry`` to the
"other" database; pgpubsub's table and functions are migrated into both.
"""

from __future__ import annotations

import json
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connections, transaction
from django.test import override_settings

import pgpubsub
from pgpubsub.models import Notification
from testapp.channels import AuthorTriggerChannel, LedgerEntryTriggerChannel, Task
from testapp.models import Ledger, LedgerEntry, Post
from tests.factories import AuthorFactory

pytestmark = pytest.mark.django_db(databases=["default", "other"])


def pgpubsub_triggers(using: str) -> set[str]:
    """The tables of database ``using`` that have a pgpubsub trigger."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT tgrelid::regclass::text FROM pg_trigger "
            "WHERE tgname LIKE 'pgtrigger_pgpubsub_%'"
        )
        return {table for (table,) in cursor.fetchall()}


def stored_channels(using: str) -> list[str]:
    return list(Notification.objects.using(using).values_list("channel", flat=True))


def test_triggers_are_installed_only_where_the_router_allows_their_model() -> None:
    on_default, on_other = pgpubsub_triggers("default"), pgpubsub_triggers("other")

    assert on_other == {"testapp_ledgerentry"}
    assert "testapp_author" in on_default
    assert "testapp_ledgerentry" not in on_default


def test_trigger_channel_on_the_second_database_is_stored_and_processed_there() -> None:
    ledger = Ledger.objects.create(name="cash")
    LedgerEntry.objects.bulk_create(
        [LedgerEntry(ledger=ledger, amount=Decimal(amount)) for amount in ("10.50", "-0.25")]
    )
    assert stored_channels("other") == [LedgerEntryTriggerChannel.listen_safe_name()] * 2
    assert stored_channels("default") == []

    on_default = pgpubsub.process_stored_notifications(using="default")
    on_other = pgpubsub.process_stored_notifications(using="other")
    again = pgpubsub.process_stored_notifications([LedgerEntryTriggerChannel], using="other")

    ledger.refresh_from_db()
    assert (on_default, on_other, again) == (0, 2, 0)
    assert ledger.balance == Decimal("10.25")
    assert stored_channels("other") == []


def test_each_database_processes_only_its_own_messages() -> None:
    AuthorFactory.create()
    LedgerEntry.objects.create(ledger=Ledger.objects.create(name="cash"), amount=Decimal(1))

    handled = pgpubsub.process_stored_notifications(using="default")

    assert handled == 1
    assert Post.objects.count() == 1
    assert stored_channels("default") == []
    assert stored_channels("other") == [LedgerEntryTriggerChannel.listen_safe_name()]
    assert pgpubsub.process_stored_notifications([AuthorTriggerChannel], using="other") == 0


def test_notify_with_using_stores_on_that_database() -> None:
    payload = pgpubsub.notify(Task, using="other", key="elsewhere")

    assert stored_channels("default") == []
    (stored,) = Notification.objects.using("other").all()
    assert stored.payload["kwargs"] == json.loads(payload)["kwargs"]
    assert pgpubsub.process_stored_notifications([Task], using="other") == 1
    assert stored_channels("other") == []


@override_settings(PGPUBSUB_TX_BOUND_NOTIFICATION_CONTEXT=True)
def test_notification_context_with_using_reaches_the_triggers_of_that_database() -> None:
    ledger = Ledger.objects.create(name="cash")
    with transaction.atomic(using="other"):
        pgpubsub.set_notification_context({"user": "ada"}, using="other")
        LedgerEntry.objects.create(ledger=ledger, amount=Decimal(1))

    (stored,) = Notification.objects.using("other").all()
    assert stored.payload["context"] == {"user": "ada"}


@override_settings(PGPUBSUB_MAX_ATTEMPTS=1)
def test_ops_command_with_database_lists_and_retries_that_database_only() -> None:
    pgpubsub.notify(Task, using="other", key="bad", fail=True)
    pgpubsub.process_stored_notifications([Task], using="other")

    def run(*args: str) -> str:
        out = StringIO()
        call_command("pgpubsub", *args, stdout=out)
        return out.getvalue()

    assert run("failed") == "No failed notifications.\n"
    assert "ValueError: task bad was asked to fail" in run("--database", "other", "failed")
    assert "testapp.channels.Task" in run("--database", "other", "status")
    assert run("--database", "other", "retry") == "Re-queued 1 failed notification(s).\n"
    assert Notification.objects.using("other").get().status == "new"
