"""A worker per database: each one listens on, and processes, the database it was started for."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pgpubsub.models import Notification
from testapp.models import Author, Ledger, LedgerEntry, Post
from tests.acceptance.conftest import StartListen
from tests.support.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


def ledger_balance(ledger: Ledger) -> Decimal:
    ledger.refresh_from_db()
    return ledger.balance


def test_workers_of_two_databases_each_process_their_own_messages(listen: StartListen) -> None:
    on_default = listen("--worker")
    on_default.wait_for_workers(1)
    ledger = Ledger.objects.create(name="cash")
    LedgerEntry.objects.create(ledger=ledger, amount=Decimal("2.50"))
    authors = Author.objects.bulk_create([Author(name=f"writer {n}") for n in range(5)])

    wait_for(lambda: Post.objects.count() == len(authors), message="the welcome posts")
    # Ledger entries live in "other": the worker of "default" never sees them.
    assert Notification.objects.using("other").count() == 1
    assert ledger_balance(ledger) == 0

    on_other = listen("--worker", "--database", "other")
    on_other.wait_for_workers(1)
    LedgerEntry.objects.bulk_create(
        [LedgerEntry(ledger=ledger, amount=Decimal("0.50")) for _ in range(20)]
    )
    late = Author.objects.create(name="late writer")

    wait_for(lambda: ledger_balance(ledger) == Decimal("12.50"), message="the ledger balance")
    wait_for(lambda: Post.objects.filter(author=late).exists(), message="a late post")
    wait_for(lambda: not Notification.objects.using("other").exists(), message="an empty queue")
    assert ledger.last_applied_by == on_other.pid
    assert Post.objects.count() == len(authors) + 1  # exactly once
    assert not Notification.objects.exists()
