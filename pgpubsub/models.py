"""The stored messages: queued notifications of lockable channels, and oversized payloads."""

from __future__ import annotations

import warnings
from typing import Any

from django.db import connections, models
from django.db.models import Q
from django.utils import timezone

from pgpubsub.channel import BaseChannel, locate_channel


def quoted_table(model: type[models.Model], using: str) -> str:
    """The quoted name of ``model``'s table, for raw SQL on database ``using``."""
    return str(connections[using].ops.quote_name(model._meta.db_table))


class NotificationQuerySet(models.QuerySet["Notification"]):
    def pending(self) -> NotificationQuerySet:
        """Notifications still to be delivered (due now or after a retry delay)."""
        return self.filter(failed_at__isnull=True)

    def failed(self) -> NotificationQuerySet:
        """Notifications that exhausted their attempts (dead letters)."""
        return self.filter(failed_at__isnull=False)


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

    objects = NotificationQuerySet.as_manager()

    class Meta:
        app_label = "pgpubsub"
        indexes = [
            models.Index(
                fields=["channel", "id"],
                name="pgpubsub_notification_queue",
                condition=Q(failed_at__isnull=True),
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
        """``pending``, ``retrying`` or ``failed``."""
        if self.failed_at is not None:
            return "failed"
        return "retrying" if self.attempts else "pending"


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
