"""The stored messages: queued notifications of lockable channels, and oversized payloads."""

from __future__ import annotations

import enum
import warnings
from typing import Any

from django.db import connections, models
from django.db.models import F, Q
from django.db.models.expressions import RawSQL
from django.db.models.functions import Now
from django.utils import timezone

from pgpubsub.channel import BaseChannel, locate_channel


def quoted_table(model: type[models.Model], using: str) -> str:
    """The quoted name of ``model``'s table, for raw SQL on database ``using``."""
    return str(connections[using].ops.quote_name(model._meta.db_table))


class State(str, enum.Enum):
    """The state of a stored notification: the one vocabulary of the admin, ``pgpubsub
    status`` and the metrics. Each stored notification is in exactly one."""

    #: Never attempted.
    NEW = "new"
    #: Failed before; waiting for another attempt.
    RETRYING = "retrying"
    #: Exhausted its attempts: a dead letter, kept for a person to inspect.
    FAILED = "failed"
    #: Handled, and kept for ``PGPUBSUB_KEEP_HANDLED`` (deleted at once without it).
    HANDLED = "handled"

    def __str__(self) -> str:
        return self.value


#: Each state as a filter; WAITING (neither failed nor handled: new or retrying) spans two.
WAITING = Q(failed_at__isnull=True, handled_at__isnull=True)
#: WAITING in SQL, for the hot path's raw queries.
WAITING_SQL = "failed_at IS NULL AND handled_at IS NULL"
STATE_FILTERS: dict[State, Q] = {
    State.NEW: WAITING & Q(attempts=0),
    State.RETRYING: WAITING & Q(attempts__gt=0),
    State.FAILED: Q(failed_at__isnull=False),
    State.HANDLED: Q(handled_at__isnull=False),
}


class NotificationQuerySet(models.QuerySet["Notification"]):
    """Stored notifications by state (:class:`State`), and the two views across states:
    due (a worker may claim it now) and in flight (a worker's batch holds it)."""

    def in_state(self, state: State | str) -> NotificationQuerySet:
        return self.filter(STATE_FILTERS[State(state)])

    def new(self) -> NotificationQuerySet:
        """Never attempted."""
        return self.in_state(State.NEW)

    def retrying(self) -> NotificationQuerySet:
        """Failed at least once; another attempt will come."""
        return self.in_state(State.RETRYING)

    def failed(self) -> NotificationQuerySet:
        """Notifications that exhausted their attempts (dead letters)."""
        return self.in_state(State.FAILED)

    def waiting(self) -> NotificationQuerySet:
        """Still to be delivered: new or retrying, due now or after a retry delay."""
        return self.filter(WAITING)

    def pending(self) -> NotificationQuerySet:
        """The same as :meth:`waiting` (the name of earlier releases)."""
        return self.waiting()

    def due(self) -> NotificationQuerySet:
        """Waiting and due now: what a worker claims (``pgpubsub.queue.claim_batch``, whose
        SQL, on the hot path, spells the same condition)."""
        return self.filter(WAITING, available_at__lte=Now())

    def in_flight(self) -> NotificationQuerySet:
        """Named by an in-flight record: in a batch a worker runs (or ran, and died)."""
        table = quoted_table(InFlightBatch, self.db)
        return self.filter(pk__in=RawSQL(f"SELECT unnest(notification_ids) FROM {table}", []))


class Notification(models.Model):
    """A message of a channel with ``lock_notifications = True``.

    The row is written in the same transaction as the change it describes and deleted (or,
    with ``PGPUBSUB_KEEP_HANDLED``, marked handled) in the same transaction as the effects of
    its callbacks, so each message is handled once.
    A message whose callbacks keep failing is retried with a growing delay and, after
    ``PGPUBSUB_MAX_ATTEMPTS`` attempts, kept with ``failed_at`` set for a person to inspect.
    """

    id = models.BigAutoField(primary_key=True)
    channel = models.CharField(max_length=63)
    payload = models.JSONField()
    created_at = models.DateTimeField(null=True, default=timezone.now)
    #: The id of the latest applied migration of the sending model's app.
    db_version = models.IntegerField(null=True)
    attempts = models.PositiveIntegerField(default=0)
    available_at = models.DateTimeField(default=timezone.now)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    failed_at = models.DateTimeField(null=True, blank=True)
    #: The channel's ``ordering_key`` value: messages of one key are handled one at a time,
    #: in id order.
    ordering_key = models.TextField(null=True, blank=True)
    #: When its callbacks ran, for a message kept by ``PGPUBSUB_KEEP_HANDLED``.
    handled_at = models.DateTimeField(null=True, blank=True)
    #: The worker that handled it (``pgpubsub worker <pid> <random> on <host>, started <time>``).
    handled_by = models.TextField(null=True, blank=True)
    #: For a copy queued by ``manage.py pgpubsub replay``: the id of the original message.
    replay_of = models.BigIntegerField(null=True, blank=True)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        app_label = "pgpubsub"
        indexes = [
            models.Index(fields=["channel", "id"], name="pgpubsub_queue", condition=WAITING),
            # Which message of a key comes first (per-key ordering).
            models.Index(
                fields=["channel", "ordering_key", "id"],
                name="pgpubsub_queue_by_key",
                condition=WAITING & Q(ordering_key__isnull=False),
            ),
            # When the next message stored for later, or retry, is due: rows sent for now
            # (available_at = created_at) stay out of it, so it costs them nothing.
            models.Index(
                fields=["channel", "available_at"],
                name="pgpubsub_queue_later",
                condition=WAITING & Q(available_at__gt=F("created_at")),
            ),
            # Pruning and listing the handled messages kept.
            models.Index(
                fields=["handled_at"],
                name="pgpubsub_handled",
                condition=Q(handled_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} #{self.pk}"

    @classmethod
    def from_channel(cls, channel: type[BaseChannel] | str) -> NotificationQuerySet:
        """Deprecated django-pgpubsub 1.3 API: the stored notifications of ``channel``.

        Use ``Notification.objects.filter(channel=channel.listen_safe_name())``.

        Raises:
            ChannelNotFound: ``channel`` is a dotted path that names no channel.
        """
        channel_cls = locate_channel(channel)
        warnings.warn(
            "Notification.from_channel() is deprecated: use Notification.objects.filter("
            f"channel={channel_cls.__qualname__}.listen_safe_name()).",
            DeprecationWarning,
            stacklevel=2,
        )
        return cls.objects.filter(channel=channel_cls.listen_safe_name())

    @property
    def status(self) -> State:
        """The notification's :class:`State`."""
        if self.handled_at is not None:
            return State.HANDLED
        if self.failed_at is not None:
            return State.FAILED
        return State.RETRYING if self.attempts else State.NEW

    def error_summary(self, limit: int = 120) -> str:
        """The last line of ``last_error`` (the exception), cut to ``limit`` characters."""
        lines = [line.strip() for line in self.last_error.strip().splitlines() if line.strip()]
        line = lines[-1] if lines else ""
        return line if len(line) <= limit else line[: limit - 1] + "…"


class BroadcastPayload(models.Model):
    """The payload of a fan-out message too large for NOTIFY (8000 bytes).

    NOTIFY then carries only this row's id; every listener reads the row, and workers
    delete it after ``PGPUBSUB_BROADCAST_RETENTION`` seconds.
    """

    id = models.BigAutoField(primary_key=True)
    channel = models.CharField(max_length=63)
    payload = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        app_label = "pgpubsub"

    def __str__(self) -> str:
        return f"{self.channel} broadcast #{self.pk}"


class BigIntegerArrayField(models.Field):
    """A ``bigint[]`` column, without django.contrib.postgres (pgpubsub does not require it).

    Values are Python lists of ints, which both drivers send and read as arrays.
    """

    description = "Array of big integers"

    def db_type(self, connection: Any) -> str:
        return "bigint[]"


class InFlightBatch(models.Model):
    """A batch of stored notifications a worker is running (see :mod:`pgpubsub.inflight`).

    Written on the worker's own autocommit connection before the batch's callbacks run and
    deleted in the batch's transaction, so a row that outlives its batch tells that the
    worker process died while running it, and which message was running.
    """

    id = models.BigAutoField(primary_key=True)
    notification_ids = BigIntegerArrayField()
    #: The notification whose callbacks were running (batches run message by message).
    running_id = models.BigIntegerField(null=True, blank=True)
    #: ``pgpubsub worker <pid> <random> on <host>, started <UTC time>``: unique per worker
    #: process (:class:`pgpubsub.inflight.WorkerName`); then why it stopped itself mid-batch,
    #: when it did (a time limit).
    worker = models.TextField()
    started_at = models.DateTimeField(default=timezone.now)

    class Meta:
        app_label = "pgpubsub"
        db_table = "pgpubsub_inflight"
        verbose_name = "in-flight batch"
        verbose_name_plural = "in-flight batches"

    def __str__(self) -> str:
        return f"{self.worker}: {len(self.notification_ids)} notification(s)"


from pgpubsub.tasks.models import StoredTask  # noqa: E402, F401  (the tasks backend's table)
