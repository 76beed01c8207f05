"""Storage operations on queued notifications: claim, complete (delete or keep), fail,
retry, prune.

Claims lock rows by primary key with ``FOR UPDATE SKIP LOCKED`` in small batches, through
a partial index on pending rows, so the cost of a claim does not grow with the number of
stored rows of other channels or of failed rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import connections
from django.db.models import Min, Q, QuerySet, TextField
from django.db.models.functions import Cast, Now
from django.utils import timezone

from pgpubsub.channel import BaseChannel
from pgpubsub.conf import PgPubSubSettings
from pgpubsub.models import (
    WAITING_SQL,
    BroadcastPayload,
    InFlightBatch,
    Notification,
    quoted_table,
)

_MAX_ERROR_LENGTH = 20_000


@dataclass(frozen=True)
class StoredMessage:
    """A claimed notification: locked by the current transaction until it ends."""

    id: int
    channel: str
    payload_text: str
    attempts: int
    #: An in-flight record of another batch names it: that batch's worker died.
    left_behind: bool = False
    #: Seconds between the moment the message became due and its claim, when measured.
    claim_latency: float | None = None
    #: Its key, on a channel with ``ordering_key`` (None on others, or without a key).
    ordering_key: str | None = None


def claim_batch(
    channel: str,
    limit: int,
    *,
    using: str,
    also_named: Sequence[str] = (),
    extra_filter: Q | None = None,
    measure_latency: bool = False,
    ordered: bool = False,
    after_key: str = "",
) -> list[StoredMessage]:
    """Lock up to ``limit`` due notifications of ``channel``, oldest first.

    ``ordered`` (a channel with ``ordering_key``): a key's messages are claimed only from its
    oldest waiting one on, consecutively, so that they are handled one at a time, in id order
    (see :func:`_claim_ordered`); the batch comes in id order. ``after_key``: where the
    previous ordered claim of this worker left off in the round of keys.

    ``also_named``: other names the channel's rows may carry (``BaseChannel.stored_aliases``).

    With ``measure_latency``, each message's ``claim_latency`` is read too (a column more
    to compute and decode per row: only when signal receivers want it).

    Must run inside a transaction; rows locked by other workers are skipped. Written so
    that the plan always walks the partial queue index (``channel = ANY`` with ``ORDER BY
    channel, id``): with misleading statistics PostgreSQL otherwise sorts every pending row,
    or walks the primary key past every older row of other channels.
    """
    claim = _Claim(channel, [channel, *also_named], using, extra_filter, measure_latency)
    if ordered:
        return _claim_ordered(claim, limit, after_key)
    return claim.fetch(
        f"SELECT {claim.columns} FROM {claim.table} "
        # Notification.objects.due(), spelled out for the plan (see the docstring).
        f"WHERE channel = ANY(%s) AND {WAITING_SQL} "
        f"AND available_at <= statement_timestamp(){claim.where} "
        "ORDER BY channel, id LIMIT %s FOR UPDATE SKIP LOCKED",
        [claim.names, *claim.params, limit],
    )


class _Claim:
    """What the claim statements of one channel share: names, filter and columns read."""

    def __init__(
        self,
        channel: str,
        names: list[str],
        using: str,
        extra_filter: Q | None,
        measure_latency: bool,
    ) -> None:
        self.channel = channel
        self.names = names
        self.using = using
        self.table = quoted_table(Notification, using)
        self.where, self.params = _filter_sql(extra_filter, using)
        self.measure_latency = measure_latency
        in_flight = quoted_table(InFlightBatch, using)
        # Whether a batch record names the message (pgpubsub.inflight): the records' ids are
        # read once per claim (an InitPlan) from a table of a few rows, one per running batch
        # plus those of dead workers.
        self.columns = (
            f"{self.table}.id AS id, payload::text AS payload_text, attempts, "
            f"{self.table}.ordering_key AS ordering_key, {self.table}.id = ANY(ARRAY("
            f"SELECT unnest(notification_ids) FROM {in_flight})) AS left_behind"
            + (
                ", extract(epoch FROM statement_timestamp() - available_at)::float8 AS latency"
                if measure_latency
                else ""
            )
        )
        #: The names of ``columns``, to select them again from a subquery.
        self.names_read = "id, payload_text, attempts, ordering_key, left_behind" + (
            ", latency" if measure_latency else ""
        )

    def lock_by_id(self, source: str) -> str:
        """SQL: the waiting row whose id is ``source``'s (one parameter: the channel's names),
        for a lateral subquery. The row lock keeps it from being merged into a hash join that
        would read every waiting row (PostgreSQL's choice when the table has no statistics
        yet); the channel keeps the lookup a point in whichever index serves it."""
        return (
            f"SELECT {self.columns} FROM {self.table} WHERE {self.table}.channel = ANY(%s) "
            f"AND {self.table}.id = {source}.id AND {WAITING_SQL}"
        )

    def fetch(self, sql: str, params: list[Any]) -> list[StoredMessage]:
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        return [
            StoredMessage(
                pk,
                self.channel,
                text,
                attempts,
                left,
                latency[0] if latency else None,
                key,
            )
            for pk, text, attempts, key, left, *latency in rows
        ]


def _claim_ordered(claim: _Claim, limit: int, after_key: str) -> list[StoredMessage]:
    """The claim of a channel with ``ordering_key``: heads, then the messages that follow them.

    A key's head is its oldest waiting message (due or not): the first entry of the key in
    the index ``pgpubsub_queue_by_key``. The first statement walks that index from key to key
    (a recursive skip scan: one index descent per key, never one per waiting message) and
    locks the heads that are due; it starts after ``after_key`` and goes round, so that every
    key gets its turn. A head locked by another worker is skipped, and nothing behind it is
    read, so a key with a long backlog costs a claim one step. Messages without a key (sent
    before the channel had ``ordering_key``, or by django-pgpubsub 1.3 under its dotted
    path) are taken from the oldest ``limit`` waiting messages, oldest first.

    When the heads leave room in the batch, the second statement takes, after each locked
    head, the next messages of its key, consecutively: it stops at the first one that is not
    due, that the listener filter refuses or that it cannot lock. So a key with a backlog is
    handled in batches, at the rate of an unordered channel's single worker, one batch at a
    time: no other worker can claim a message of a key while its head is in a batch, as that
    head is still waiting in the snapshot of every other claim.
    """
    walk_keys = (
        f"FROM {claim.table} AS n WHERE n.channel = %s AND n.ordering_key IS NOT NULL "
        f"AND n.failed_at IS NULL AND n.handled_at IS NULL"
    )
    first_key = "SELECT n.ordering_key, n.id"
    in_key_order = "ORDER BY n.channel, n.ordering_key, n.id LIMIT 1"
    heads = claim.fetch(
        "WITH RECURSIVE walk(ordering_key, id, wrapped) AS ("
        # The first key after after_key, or, past the last key, the first one (a new round).
        f"SELECT * FROM (({first_key}, false {walk_keys} AND n.ordering_key > %s "
        f"{in_key_order}) UNION ALL ({first_key}, true {walk_keys} {in_key_order}) "
        "LIMIT 1) AS start "
        "UNION ALL "
        f"SELECT step.* FROM walk, LATERAL (({first_key}, walk.wrapped {walk_keys} "
        f"AND n.ordering_key > walk.ordering_key {in_key_order}) UNION ALL "
        f"({first_key}, true {walk_keys} AND NOT walk.wrapped {in_key_order}) LIMIT 1) AS step "
        # One round: a key walked before the turn is not walked again.
        "WHERE NOT (step.wrapped AND step.ordering_key > %s)), "
        "candidate(id) AS ("
        "SELECT oldest.id FROM (SELECT n.id, n.channel, n.ordering_key "
        f"FROM {claim.table} AS n WHERE n.channel = ANY(%s) AND n.failed_at IS NULL "
        "AND n.handled_at IS NULL ORDER BY n.channel, n.id LIMIT %s) AS oldest "
        "WHERE oldest.ordering_key IS NULL OR oldest.channel <> %s "
        "UNION ALL SELECT walk.id FROM walk) "
        f"SELECT claimed.* FROM candidate CROSS JOIN LATERAL ({claim.lock_by_id('candidate')} "
        f"AND available_at <= statement_timestamp(){claim.where} "
        "FOR UPDATE SKIP LOCKED) AS claimed LIMIT %s",
        [
            claim.channel,
            after_key,
            *[claim.channel] * 3,
            after_key,
            claim.names,
            limit,
            claim.channel,
            claim.names,
            *claim.params,
            limit,
        ],
    )
    keyed = [message for message in heads if message.ordering_key is not None]
    room = limit - len(heads)
    if not keyed or room <= 0:
        return sorted(heads, key=_by_id)
    return sorted(heads + _claim_followers(claim, keyed, room), key=_by_id)


def _claim_followers(claim: _Claim, heads: list[StoredMessage], room: int) -> list[StoredMessage]:
    """Lock, after each of ``heads`` (locked by this transaction), the next messages of its
    key, consecutively, ``room`` in all at most (shared evenly between the keys)."""
    per_key = -(-room // len(heads))
    return claim.fetch(
        "WITH head(ordering_key, id) AS (SELECT * FROM unnest(%s::text[], %s::bigint[])), "
        "candidate AS MATERIALIZED (SELECT head.id AS head, next.id, next.ready FROM head "
        f"CROSS JOIN LATERAL (SELECT {claim.table}.id, "
        f"(available_at <= statement_timestamp(){claim.where}) AS ready FROM {claim.table} "
        f"WHERE {claim.table}.channel = %s AND {claim.table}.ordering_key = head.ordering_key "
        f"AND {WAITING_SQL} AND {claim.table}.id > head.id ORDER BY {claim.table}.channel, "
        f"{claim.table}.ordering_key, {claim.table}.id LIMIT %s) AS next), "
        # Consecutive: none after the first one of its key that could not be taken.
        "run AS (SELECT taken.*, bool_and(taken.id IS NOT NULL) OVER (PARTITION BY "
        "candidate.head ORDER BY candidate.id) AS unbroken FROM candidate LEFT JOIN LATERAL "
        f"({claim.lock_by_id('candidate')} AND candidate.ready FOR UPDATE SKIP LOCKED) "
        f"AS taken ON true) SELECT {claim.names_read} FROM run WHERE unbroken",
        [
            [head.ordering_key for head in heads],
            [head.id for head in heads],
            *claim.params,
            claim.channel,
            per_key,
            claim.names,
        ],
    )


def _by_id(message: StoredMessage) -> int:
    return message.id


def round_resumes_after(messages: Sequence[StoredMessage], after_key: str, *, using: str) -> str:
    """Where the next ordered claim starts its round of keys: after the last key that the
    claim of ``messages`` (which started after ``after_key``) took, in the order it walked
    them (the keys after ``after_key``, then, past the last key, the others).

    Compared by PostgreSQL, in the column's collation, as the claim's walk does: Python's
    order of strings is the C collation's, and under another one (en_US.UTF-8, ICU) it would
    resume at the wrong key, serving some keys twice a round and others late.
    """
    keyed = [message for message in messages if message.ordering_key is not None]
    if not keyed:
        return after_key
    if all(message.ordering_key == keyed[0].ordering_key for message in keyed):
        return str(keyed[0].ordering_key)  # one key: the answer in any collation
    ids = [message.id for message in keyed]
    table = quoted_table(Notification, using)
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(max(ordering_key) FILTER (WHERE ordering_key <= %s), "
            f"max(ordering_key)) FROM {table} WHERE id = ANY(%s)",
            [after_key, ids],
        )
        row = cursor.fetchone()
    return str(row[0]) if row and row[0] is not None else after_key


def _filter_sql(extra_filter: Q | None, using: str) -> tuple[str, list[Any]]:
    """SQL (`` AND ...``) and parameters of a listener filter's Q on Notification."""
    if extra_filter is None:
        return "", []
    query = Notification.objects.filter(extra_filter).query
    sql, params = query.get_compiler(using).compile(query.where)
    return f" AND ({sql})", list(params)


def delete_messages(
    ids: Sequence[int], *, using: str, in_flight_records: Sequence[int] = ()
) -> None:
    """Delete handled notifications (in the transaction that ran their callbacks).

    ``in_flight_records``, the batch's own record and those it settled, go in the same
    statement: they are gone exactly when the batch has committed.
    """
    statement = f"DELETE FROM {quoted_table(Notification, using)} WHERE id = ANY(%s)"
    _settle(statement, [list(ids)], ids, in_flight_records, using)


def mark_handled(
    ids: Sequence[int], *, worker: str, using: str, in_flight_records: Sequence[int] = ()
) -> None:
    """Keep handled notifications, marked handled now by ``worker`` (``PGPUBSUB_KEEP_HANDLED``),
    in the transaction that ran their callbacks; ``in_flight_records`` as in
    :func:`delete_messages`. Marked rows leave the queue's partial indexes."""
    statement = (
        f"UPDATE {quoted_table(Notification, using)} "
        "SET handled_at = statement_timestamp(), handled_by = %s WHERE id = ANY(%s)"
    )
    _settle(statement, [worker, list(ids)], ids, in_flight_records, using)


def _settle(
    statement: str,
    params: list[Any],
    ids: Sequence[int],
    in_flight_records: Sequence[int],
    using: str,
) -> None:
    """Run ``statement`` on the handled ``ids`` and delete ``in_flight_records`` in one round
    trip (a data-modifying WITH)."""
    with connections[using].cursor() as cursor:
        if in_flight_records:
            cursor.execute(
                f"WITH handled AS ({statement}) "
                f"DELETE FROM {quoted_table(InFlightBatch, using)} WHERE id = ANY(%s)",
                [*params, list(in_flight_records)],
            )
        elif ids:
            cursor.execute(statement, params)


def prune_handled(older_than: timedelta, *, using: str, limit: int) -> int:
    """Delete up to ``limit`` kept handled notifications handled more than ``older_than``
    ago, oldest first; return how many.

    One short statement (its own transaction in autocommit) through the ``pgpubsub_handled``
    index. Rows locked by another pruner are skipped rather than waited for, and no waiting
    row is ever touched, so it holds up no claim.
    """
    table = quoted_table(Notification, using)
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} "
            "WHERE handled_at < statement_timestamp() - %s ORDER BY handled_at "
            "LIMIT %s FOR UPDATE SKIP LOCKED)",
            [older_than, limit],
        )
        return int(cursor.rowcount)


def retry_delay(attempts: int, settings: PgPubSubSettings) -> float:
    """Seconds to wait before attempt ``attempts + 1``: doubling, capped."""
    return float(
        min(settings.retry_backoff * (2 ** max(attempts - 1, 0)), settings.retry_backoff_max)
    )


def record_failure(
    message: StoredMessage, error: str, *, using: str, settings: PgPubSubSettings
) -> bool:
    """Count a failed attempt; return True when the message is now marked failed."""
    attempts = message.attempts + 1
    now = timezone.now()
    dead = attempts >= settings.max_attempts
    Notification.objects.using(using).filter(pk=message.id).update(
        attempts=attempts,
        last_attempt_at=now,
        last_error=error[-_MAX_ERROR_LENGTH:],
        available_at=now + timedelta(seconds=retry_delay(attempts, settings)),
        failed_at=now if dead else None,
    )
    return dead


def retry_failed(
    *, using: str, channels: Sequence[str] | None = None, ids: Sequence[int] | None = None
) -> int:
    """Put failed notifications back in the queue with a fresh attempt count."""
    queryset = Notification.objects.using(using).failed()
    if channels:
        queryset = queryset.filter(channel__in=channels)
    if ids:
        queryset = queryset.filter(pk__in=ids)
    return _requeue(queryset)


def requeue_now(ids: Sequence[int], *, using: str) -> int:
    """Make notifications (failed, retrying or pending) due now, with a fresh attempt count.
    Handled ones are left as they are (``manage.py pgpubsub replay`` queues copies of them)."""
    return _requeue(Notification.objects.using(using).filter(pk__in=ids, handled_at=None))


def _requeue(queryset: QuerySet[Notification]) -> int:
    channels = sorted(set(queryset.values_list("channel", flat=True)))
    count = queryset.update(failed_at=None, attempts=0, available_at=Now())
    ring_doorbells(channels, using=queryset.db)
    return count


def ring_doorbells(channels: Sequence[str], *, using: str) -> None:
    """NOTIFY ``channels`` (PostgreSQL names) with the empty doorbell of stored messages, so
    that listening workers take what was queued at the commit rather than at their next poll."""
    with connections[using].cursor() as cursor:
        for channel in channels:
            cursor.execute("SELECT pg_notify(%s, '')", [channel])


def copy_for_replay(ids: Sequence[int], channel: type[BaseChannel], *, using: str) -> list[int]:
    """Queue a new message per id, due now, with the original's payload, ordering key and
    ``db_version``, and ``replay_of`` naming the original (the first one, for a copy of a
    copy); return the new ids, in the order of ``ids``."""
    table = quoted_table(Notification, using)
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (channel, payload, created_at, db_version, attempts, "
            "available_at, last_error, ordering_key, replay_of) "
            "SELECT %s, payload, now(), db_version, 0, now(), '', ordering_key, "
            f"COALESCE(replay_of, id) FROM {table} WHERE id = ANY(%s) ORDER BY id RETURNING id",
            [channel.listen_safe_name(), list(ids)],
        )
        return sorted(row[0] for row in cursor.fetchall())


def count_due(channels: Sequence[str], *, using: str) -> int:
    """Notifications of ``channels`` waiting to be processed now."""
    return Notification.objects.using(using).due().filter(channel__in=channels).count()


def oldest_due_age(channels: Sequence[str], *, using: str) -> float | None:
    """Seconds the oldest due notification of ``channels`` has waited; None if none waits."""
    due = Notification.objects.using(using).due().filter(channel__in=channels)
    oldest = due.aggregate(oldest=Min("available_at"))["oldest"]
    return None if oldest is None else max((timezone.now() - oldest).total_seconds(), 0.0)


def next_due(channels: Sequence[str], *, using: str) -> dict[str, float]:
    """Seconds until the earliest waiting message of each of ``channels`` that is not due yet
    (sent for later, or waiting for a retry) becomes due; channels with none are left out.

    Read through the partial index of such messages (``pgpubsub_queue_later``), which
    messages sent for now never enter: the cost does not grow with the backlog.
    """
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT channel, extract(epoch FROM min(available_at) - statement_timestamp())"
            f"::float8 FROM {quoted_table(Notification, using)} WHERE channel = ANY(%s) "
            f"AND {WAITING_SQL} AND available_at > created_at "
            "AND available_at > statement_timestamp() GROUP BY channel",
            [list(channels)],
        )
        return {channel: float(seconds) for channel, seconds in cursor.fetchall()}


def load_broadcast(ref: int, *, using: str) -> str | None:
    """The payload text of an oversized fan-out message, or None once it was pruned."""
    rows = (
        BroadcastPayload.objects.using(using)
        .filter(pk=ref)
        .annotate(payload_text=Cast("payload", TextField()))
        .values_list("payload_text", flat=True)
    )
    return next(iter(rows), None)


def prune_broadcasts(retention: float, *, using: str) -> int:
    """Delete oversized fan-out payloads older than ``retention`` seconds."""
    cutoff = timezone.now() - timedelta(seconds=retention)
    deleted, _ = BroadcastPayload.objects.using(using).filter(created_at__lt=cutoff).delete()
    return deleted
