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


def claim_batch(
    channel: str,
    limit: int,
    *,
    using: str,
    also_named: Sequence[str] = (),
    extra_filter: Q | None = None,
    measure_latency: bool = False,
    ordered: bool = False,
) -> list[StoredMessage]:
    """Lock up to ``limit`` due notifications of ``channel``, oldest first.

    ``ordered`` (a channel with ``ordering_key``): only the oldest waiting message of each
    key may be claimed, so a key's messages are handled one at a time, in id order.

    ``also_named``: other names the channel's rows may carry (``BaseChannel.stored_aliases``).

    With ``measure_latency``, each message's ``claim_latency`` is read too (a column more
    to compute and decode per row: only when signal receivers want it).

    Must run inside a transaction; rows locked by other workers are skipped. Written so
    that the plan always walks the partial queue index (``channel = ANY`` with ``ORDER BY
    channel, id``): with misleading statistics PostgreSQL otherwise sorts every pending row,
    or walks the primary key past every older row of other channels.
    """
    connection = connections[using]
    table = quoted_table(Notification, using)
    in_flight = quoted_table(InFlightBatch, using)
    where, params = _filter_sql(extra_filter, using)
    latency = (
        ", extract(epoch FROM statement_timestamp() - available_at)::float8"
        if measure_latency
        else ""
    )
    with connection.cursor() as cursor:
        # Whether a batch record names the message (pgpubsub.inflight): the records' ids are
        # read once per claim (an InitPlan) from a table of a few rows, one per running batch
        # plus those of dead workers.
        cursor.execute(
            f"SELECT id, payload::text, attempts, "
            f"id = ANY(ARRAY(SELECT unnest(notification_ids) FROM {in_flight})){latency} "
            f"FROM {table} "
            # Notification.objects.due(), spelled out for the plan (see the docstring).
            f"WHERE channel = ANY(%s) AND {WAITING_SQL} "
            "AND available_at <= statement_timestamp()"
            f"{where}{_first_of_its_key(table) if ordered else ''} "
            "ORDER BY channel, id LIMIT %s FOR UPDATE SKIP LOCKED",
            [[channel, *also_named], *params, limit],
        )
        rows = cursor.fetchall()
    if measure_latency:
        return [
            StoredMessage(pk, channel, text, n, left, waited) for pk, text, n, left, waited in rows
        ]
    return [StoredMessage(pk, channel, text, n, left) for pk, text, n, left in rows]


def _first_of_its_key(table: str) -> str:
    """SQL (`` AND ...``): no older message of the row's key is waiting.

    One probe of the ``pgpubsub_queue_by_key`` index per candidate row. An older message
    locked by another worker's batch is still waiting in this statement's snapshot, so its
    successors are not claimed before that batch commits (and deletes it, or records a retry,
    which keeps it waiting; a dead letter no longer waits, and lets them go on).
    """
    return (
        f" AND ({table}.ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM {table} AS older "
        f"WHERE older.channel = {table}.channel AND older.ordering_key = {table}.ordering_key "
        f"AND older.id < {table}.id AND older.failed_at IS NULL AND older.handled_at IS NULL))"
    )


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
