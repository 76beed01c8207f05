"""Claiming stored messages: concurrent workers never get the same message."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, transaction

import pgpubsub
from pgpubsub.queue import claim_batch
from testapp.channels import Task

pytestmark = pytest.mark.django_db(transaction=True)


def claim_on_another_connection(limit: int) -> list[int]:
    """Claim in a thread: Django gives each thread its own database connection."""
    try:
        with transaction.atomic():
            return [m.id for m in claim_batch(Task.listen_safe_name(), limit, using="default")]
    finally:
        connection.close()


def test_two_connections_claiming_one_channel_get_disjoint_messages() -> None:
    for n in range(10):
        pgpubsub.notify(Task, key=str(n))

    with transaction.atomic():
        first = [m.id for m in claim_batch(Task.listen_safe_name(), 4, using="default")]
        with ThreadPoolExecutor(max_workers=1) as pool:
            second = pool.submit(claim_on_another_connection, 100).result(timeout=10)

    assert len(first) == 4
    assert len(second) == 6
    assert not set(first) & set(second)
    assert first == sorted(first)  # oldest first


def test_claimed_messages_are_claimable_again_when_their_transaction_ends() -> None:
    for n in range(3):
        pgpubsub.notify(Task, key=str(n))

    with transaction.atomic():
        claim_batch(Task.listen_safe_name(), 3, using="default")
        with ThreadPoolExecutor(max_workers=1) as pool:
            while_locked = pool.submit(claim_on_another_connection, 100)
            assert while_locked.result(timeout=10) == []
    with ThreadPoolExecutor(max_workers=1) as pool:
        after_commit = pool.submit(claim_on_another_connection, 100)
        assert len(after_commit.result(timeout=10)) == 3
