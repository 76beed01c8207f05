"""The stored messages: queued notifications of lockable channels, and oversized payloads."""

from __future__ import annotations

import warnings
from typing import Any

from django.db import connections, models
from django.db.models import F, Q
from django.utils import timezone

from pgpubsub.channel import BaseChannel, locate_channel


def quoted_table(model: type[models.Model], using: str) -> str:
    """The quoted name of ``model``'s table, for raw SQL on database ``using``."""
    return str(connections[using].ops.quote_name(model._meta.db_table))


#: What a stored message is waiting for or went through, in one place: ``pending`` (never
#: tried, due now or later), ``retrying`` (failed at least once, will be tried again),
#: ``failed`` (a dead letter: out of attempts) and ``handled`` (kept after its callbacks ran,
#: when ``PGPUBSUB_KEEP_HANDLED`` is set). Pending and retrying messages are queued.
PENDING, RETRYING, FAILED, HANDLED = "pending", "retrying", "failed", "handled"
STATES = (PENDING, RETRYING, FAILED, HANDLED)

#: The messages still to be handled (pending or retrying), as a Q and as SQL.
QUEUED = Q(failed_at__isnull=True, handled_at__isnull=True)
QUEUED_SQL = "failed_at IS NULL AND handled_at IS NULL"


def state_filter(state: str) -> Q:
    """The messages in ``state`` (one of :data:`STATES`)."""
    return {
        PENDING: QUEUED & Q(attempts=0),
        RETRYING: QUEUED & Q(attempts__gt=0),
        FAILED: Q(failed_at__isnull=False),
        HANDLED: Q(handled_at__isnull=False),
    }[state]


class NotificationQuerySet(models.QuerySet["Notification"]):
    def pending(self) -> NotificationQuerySet:
        """Notifications still to be delivered (due now or after a retry delay)."""
        return self.filter(QUEUED)

    def failed(self) -> NotificationQuerySet:
        """Notifications that exhausted their attempts (dead letters)."""
        return self.filter(state_filter(FAILED))

    def handled(self) -> NotificationQuerySet:
        """Handled notifications kept by ``PGPUBSUB_KEEP_HANDLED``."""
        return self.filter(state_filter(HANDLED))


class Notification(models.Model):
    """A message of a channel with ``lock_notifications = True``.

    The row is written in the same transaction as the change it describes and deleted in
    the same transaction as the effects of its callbacks, so each message is handled once.
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
    #: The worker that handled it (``pgpubsub worker <pid> on <host>, started <time>``).
    handled_by = models.TextField(null=True, blank=True)
    #: For a copy queued by ``manage.py pgpubsub replay``: the id of the original message.
    replay_of = models.BigIntegerField(null=True, blank=True)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        app_label = "pgpubsub"
        indexes = [
            models.Index(fields=["channel", "id"], name="pgpubsub_queue", condition=QUEUED),
            # Which message of a key comes first (per-key ordering).
            models.Index(
                fields=["channel", "ordering_key", "id"],
                name="pgpubsub_queue_by_key",
                condition=QUEUED & Q(ordering_key__isnull=False),
            ),
            # When the next message stored for later, or retry, is due: rows sent for now
            # (available_at = created_at) stay out of it, so it costs them nothing.
            models.Index(
                fields=["channel", "available_at"],
                name="pgpubsub_queue_later",
                condition=QUEUED & Q(available_at__gt=F("created_at")),
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
    def status(self) -> str:
        """One of :data:`STATES`."""
        if self.handled_at is not None:
            return HANDLED
        if self.failed_at is not None:
            return FAILED
        return RETRYING if self.attempts else PENDING


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
    #: ``pgpubsub worker <pid> on <host>, started <UTC time>``: unique per worker process.
    worker = models.TextField()
    started_at = models.DateTimeField(default=timezone.now)

    class Meta:
        app_label = "pgpubsub"
        db_table = "pgpubsub_inflight"
        verbose_name = "in-flight batch"
        verbose_name_plural = "in-flight batches"

    def __str__(self) -> str:
        return f"{self.worker}: {len(self.notification_ids)} notification(s)"
