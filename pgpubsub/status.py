"""What is queued, retrying and failed, per channel, and who is listening: for people on call."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from django.db import connections

from pgpubsub.connection import WORKER_APPLICATION_NAME
from pgpubsub.models import QUEUED_SQL, Notification, quoted_table
from pgpubsub.registry import registry


@dataclass
class ChannelStatus:
    channel: str
    pg_name: str
    lockable: bool | None
    listeners: list[str] = field(default_factory=list)
    pending: int = 0
    retrying: int = 0
    failed: int = 0
    oldest_pending_seconds: float | None = None


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
            age = status.oldest_pending_seconds
            if max_age is not None and age is not None and age > max_age:
                found.append(
                    f"{status.channel}: oldest pending notification is {age:.0f} s old "
                    f"(limit {max_age:.0f} s)"
                )
            if max_failed is not None and status.failed > max_failed:
                found.append(
                    f"{status.channel}: {status.failed} failed notifications (limit {max_failed})"
                )
        return found


_COUNTS = f"""
SELECT channel,
       count(*) FILTER (WHERE {QUEUED_SQL} AND attempts = 0),
       count(*) FILTER (WHERE {QUEUED_SQL} AND attempts > 0),
       count(*) FILTER (WHERE failed_at IS NOT NULL),
       extract(epoch FROM now() - min(created_at) FILTER (WHERE {QUEUED_SQL}))
FROM {{table}}
GROUP BY channel
"""


def collect_status(using: str) -> StatusReport:
    """Count stored notifications per channel and look up connected workers."""
    connection = connections[using]
    table = quoted_table(Notification, using)
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
    with connection.cursor() as cursor:
        cursor.execute(_COUNTS.format(table=table))
        for pg_name, pending, retrying, failed, oldest in cursor.fetchall():
            status = statuses.setdefault(
                pg_name, ChannelStatus(channel=pg_name, pg_name=pg_name, lockable=None)
            )
            status.pending, status.retrying, status.failed = pending, retrying, failed
            status.oldest_pending_seconds = float(oldest) if oldest is not None else None
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
