"""What is queued, retrying and failed, per channel, and who is listening: for people on call."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from django.db import connections
from django.db.models import Count, Min
from django.utils import timezone

from pgpubsub.connection import WORKER_APPLICATION_NAME
from pgpubsub.models import STATE_FILTERS, WAITING, Notification, State
from pgpubsub.registry import registry


@dataclass
class ChannelStatus:
    channel: str
    pg_name: str
    lockable: bool | None
    listeners: list[str] = field(default_factory=list)
    #: Stored notifications in each :class:`~pgpubsub.models.State`.
    new: int = 0
    retrying: int = 0
    failed: int = 0
    handled: int = 0
    #: Age of the oldest notification waiting (new or retrying).
    oldest_waiting_seconds: float | None = None

    def counts(self) -> dict[str, int]:
        """The count of each state, by the state's name."""
        return {state.value: getattr(self, state.value) for state in State}


@dataclass
class StatusReport:
    channels: list[ChannelStatus]
    workers_connected: int
    notify_queue_usage: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def problems(self, *, max_age: float | None, max_failed: int | None) -> list[str]:
        """Threshold breaches, worded for an alert."""
        found = []
        for status in self.channels:
            age = status.oldest_waiting_seconds
            if max_age is not None and age is not None and age > max_age:
                found.append(
                    f"{status.channel}: oldest waiting notification is {age:.0f} s old "
                    f"(limit {max_age:.0f} s)"
                )
            if max_failed is not None and status.failed > max_failed:
                found.append(
                    f"{status.channel}: {status.failed} failed notifications (limit {max_failed})"
                )
        return found


def collect_status(using: str) -> StatusReport:
    """Count stored notifications per channel and look up connected workers."""
    connection = connections[using]
    statuses = {
        channel.listen_safe_name(): ChannelStatus(
            channel=channel.name(),
            pg_name=channel.listen_safe_name(),
            lockable=channel.lock_notifications,
            listeners=[
                f"{listener.callback.__module__}.{listener.callback.__qualname__}"
                for listener in registry.listeners_for(channel)
            ],
        )
        for channel in registry.channels()
    }
    counts = (
        Notification.objects.using(using)
        .values("channel")
        .order_by("channel")
        .annotate(
            **{state.value: Count("id", filter=STATE_FILTERS[state]) for state in State},
            oldest=Min("created_at", filter=WAITING),
        )
    )
    now = timezone.now()
    for row in counts:
        status = statuses.setdefault(
            row["channel"],
            ChannelStatus(channel=row["channel"], pg_name=row["channel"], lockable=None),
        )
        for state in State:
            setattr(status, state.value, row[state.value])
        if row["oldest"] is not None:
            status.oldest_waiting_seconds = max((now - row["oldest"]).total_seconds(), 0.0)
    with connection.cursor() as cursor:
        cursor.execute(
            # A worker may hold several connections that carry its name (one per pid).
            "SELECT count(DISTINCT application_name) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE %s",
            [WORKER_APPLICATION_NAME + "%"],
        )
        workers = cursor.fetchone()[0]
        cursor.execute("SELECT pg_notification_queue_usage()")
        usage = float(cursor.fetchone()[0])
    return StatusReport(
        channels=sorted(statuses.values(), key=lambda s: s.channel),
        workers_connected=workers,
        notify_queue_usage=usage,
    )
