"""The claim of a channel with ``ordering_key``: what it reads, what it takes, in which order."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import Q

import pgpubsub
from pgpubsub import codec, functions
from pgpubsub.conf import get_settings
from pgpubsub.models import InFlightBatch, Notification
from pgpubsub.queue import StoredMessage, claim_batch, round_resumes_after
from pgpubsub.stored import StoredProcessor
from testapp.channels import OrderedTask
from testapp.models import ListenerEvent

pytestmark = pytest.mark.django_db(transaction=True)

CHANNEL = OrderedTask.listen_safe_name()


def send(*keys: str | None, fail_attempts: int = 0) -> list[int]:
    """Store one message per key (seq: its position; None: a message stored without its key,
    as before the channel had one), in one statement; return their ids."""
    payloads = [
        codec.dumps(
            OrderedTask.build_payload(
                {"key": key or "", "seq": seq, "fail_attempts": fail_attempts}
            )
        )
        for seq, key in enumerate(keys)
    ]
    before = Notification.objects.order_by("-id").values_list("id", flat=True).first() or 0
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {functions.qualified(functions.SEND)}"
            "(%s, true, 'testapp', %s::jsonb[], %s::text[], NULL)",
            [CHANNEL, payloads, list(keys)],
        )
    return list(
        Notification.objects.filter(id__gt=before).order_by("id").values_list("id", flat=True)
    )


def heap_rows_read() -> int:
    """Rows of pgpubsub_notification this transaction has read so far (index and sequential
    scans): PostgreSQL counts them per transaction, exactly, whatever the machine's speed."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0) "
            "FROM pg_stat_xact_user_tables WHERE relname = 'pgpubsub_notification'"
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def claim(limit: int, after_key: str = "") -> list[StoredMessage]:
    where = {"after_key": after_key} if after_key else {}
    return claim_batch(CHANNEL, limit, using="default", ordered=True, **where)


@pytest.fixture
def holding(other_connection: Any) -> Iterator[Any]:
    """Lock rows on another connection, as another worker's batch does, until the test ends."""

    def lock(*ids: int) -> None:
        with other_connection.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute(
                "SELECT id FROM pgpubsub_notification WHERE id = ANY(%s) FOR UPDATE", [list(ids)]
            )

    yield lock
    with other_connection.cursor() as cursor:
        cursor.execute("ROLLBACK")


def test_one_key_with_a_long_backlog_is_claimed_reading_a_bounded_number_of_rows() -> None:
    ids = send(*["k"] * 3000)
    with transaction.atomic():
        before = heap_rows_read()
        claimed = claim(10)
        read = heap_rows_read() - before
    # The head and the nine messages after it, consecutively; not the 3000 behind them.
    assert [message.id for message in claimed] == ids[:10]
    assert read <= 5 * 10, read


def test_a_key_whose_head_is_in_another_batch_costs_a_claim_one_step(holding: Any) -> None:
    ids = send(*["busy"] * 3000, "free")
    holding(ids[0])
    with transaction.atomic():
        before = heap_rows_read()
        claimed = claim(10)
        read = heap_rows_read() - before
    # Nothing of the busy key (its head is held), the other key's message.
    assert [message.id for message in claimed] == [ids[-1]]
    assert read <= 5 * 10, read


def test_a_batch_holds_consecutive_messages_of_a_key_and_no_other_claim_gets_any() -> None:
    ids = send("a", "b", "a", "a", "b")
    with transaction.atomic():
        first = claim(10)
        with ThreadPoolExecutor(max_workers=1) as pool:
            second = pool.submit(claim_elsewhere, 10).result(timeout=10)
    assert [message.id for message in first] == ids
    assert [message.ordering_key for message in first] == ["a", "b", "a", "a", "b"]
    assert second == []


def claim_elsewhere(limit: int) -> list[int]:
    """Claim in a thread: Django gives each thread its own database connection."""
    try:
        with transaction.atomic():
            return [message.id for message in claim(limit)]
    finally:
        connection.close()


def test_the_messages_after_a_head_stop_at_the_first_that_is_not_due() -> None:
    first = send("a")
    pgpubsub.notify_later(OrderedTask, 3600, key="a", seq=1)
    later = send("a", "b")
    with transaction.atomic():
        claimed = claim(10)
    # a's third message waits behind its second, which is not due; b is not held back.
    assert [message.id for message in claimed] == [first[0], later[1]]


def test_the_messages_after_a_head_stop_at_the_first_that_the_listener_filter_refuses() -> None:
    ids = send("a", "a", "a", "a")
    with transaction.atomic():
        claimed = claim_batch(
            CHANNEL,
            10,
            using="default",
            ordered=True,
            extra_filter=~Q(payload__kwargs__seq=2),
        )
    assert [message.id for message in claimed] == ids[:2]


def test_messages_without_a_key_are_claimed_beside_the_heads_in_any_order() -> None:
    ids = send(None, "a", None, "a", None)
    with transaction.atomic():
        claimed = claim(10)
    assert [message.id for message in claimed] == ids
    assert [message.ordering_key for message in claimed] == [None, "a", None, "a", None]


def test_heads_are_shared_between_keys_before_a_key_gets_a_second_message() -> None:
    ids = send("a", "a", "a", "b", "b", "b", "c")
    with transaction.atomic():
        claimed = claim(3)
    assert sorted(message.ordering_key or "" for message in claimed) == ["a", "b", "c"]
    assert [message.id for message in claimed] == [ids[0], ids[3], ids[6]]


def test_claims_go_round_the_keys_from_where_the_last_one_left_off() -> None:
    send("a", "b", "c")
    taken = []
    after = ""
    for _ in range(4):
        with transaction.atomic():
            claimed = claim(1, after_key=after)
            transaction.set_rollback(True)
        taken.append(claimed[0].ordering_key)
        after = round_resumes_after(claimed, after, using="default")
    assert taken == ["a", "b", "c", "a"]


@pytest.fixture
def keys_in_icu_order() -> Iterator[None]:
    """The ordering key column in an ICU collation, where "a" < "B" < "c" (in C: "B" < "a"),
    as on databases created with en_US.UTF-8 (this machine's are C.UTF-8)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE pgpubsub_notification "
            'ALTER COLUMN ordering_key TYPE text COLLATE "und-x-icu"'
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "ALTER TABLE pgpubsub_notification "
                'ALTER COLUMN ordering_key TYPE text COLLATE "default"'
            )


@pytest.mark.usefixtures("keys_in_icu_order")
def test_each_round_serves_every_key_once_in_the_columns_collation() -> None:
    send("a", "B", "c", "D", "a", "B", "c", "D")
    taken = []
    after = ""
    for _ in range(4):
        with transaction.atomic():
            claimed = claim(2, after_key=after)
            transaction.set_rollback(True)
        taken.append([message.ordering_key for message in claimed])
        after = round_resumes_after(claimed, after, using="default")
    assert taken == [["a", "B"], ["c", "D"], ["a", "B"], ["c", "D"]]


def test_messages_of_a_key_behind_a_retry_in_their_batch_stay_stored_for_later() -> None:
    retried, *behind = send("r", "r", "r", fail_attempts=1)
    (other,) = send("o")
    processor = StoredProcessor(settings=get_settings())
    processor.drain(OrderedTask)

    handled = list(ListenerEvent.objects.values_list("object_key", flat=True))
    assert handled == ["o"]
    waiting = Notification.objects.waiting().order_by("id")
    assert [(n.id, n.attempts) for n in waiting] == [(retried, 1), (behind[0], 0), (behind[1], 0)]
    assert not Notification.objects.filter(id=other).exists()


def test_a_drain_of_an_ordered_channel_goes_on_while_batches_free_later_messages() -> None:
    size = get_settings().batch_size
    send("one", *["many"] * (size + 20))
    handled = pgpubsub.process_stored_notifications([OrderedTask])
    assert handled == size + 21
    assert not Notification.objects.exists()


def test_after_a_worker_died_running_a_message_the_later_ones_of_its_key_wait_for_its_retry() -> (
    None
):
    first, crashed, behind = send("k", "k", "k")
    (other,) = send("o")
    # What a worker killed while running `crashed` leaves: its record, its messages unlocked.
    InFlightBatch.objects.create(
        notification_ids=[first, crashed, behind, other], running_id=crashed, worker="gone"
    )
    StoredProcessor(settings=get_settings()).drain(OrderedTask)

    handled = ListenerEvent.objects.order_by("id").values_list("object_key", "detail")
    assert list(handled) == [("k", {"seq": 0}), ("o", {"seq": 0})]
    waiting = Notification.objects.waiting().order_by("id")
    assert [(n.id, n.attempts) for n in waiting] == [(crashed, 1), (behind, 0)]
