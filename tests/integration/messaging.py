"""Helpers to observe what pgpubsub puts in the database and on the wire."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.db import connection
from django.db.models import TextField
from django.db.models.functions import Cast

from pgpubsub.channel import BaseChannel
from pgpubsub.connection import ListenConnection, Message
from pgpubsub.models import Notification
from pgpubsub.processing import decode_payload

#: A channel nobody else uses; committing a NOTIFY on it marks a point in the commit order.
SENTINEL = "pgpubsub_test_sentinel"


def stored_payloads(channel: type[BaseChannel]) -> list[dict[str, Any]]:
    """The stored payloads of ``channel``, oldest first, parsed as the processor parses them."""
    texts = (
        Notification.objects.filter(channel=channel.listen_safe_name())
        .order_by("id")
        .annotate(text=Cast("payload", TextField()))
        .values_list("text", flat=True)
    )
    return [decode_payload(channel, text) for text in texts]


def receive(
    listener: ListenConnection,
    until: Callable[[list[Message]], bool],
    timeout: float = 10.0,
) -> list[Message]:
    """Collect NOTIFY messages until ``until(received)`` holds; fail after ``timeout`` s."""
    received: list[Message] = []
    deadline = time.monotonic() + timeout
    while not until(received):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout} s; received {received!r}")
        received.extend(listener.wait(remaining))
    return received


def receive_through_sentinel(
    listener: ListenConnection, send_sentinel: Callable[[], None]
) -> list[Message]:
    """Everything delivered to ``listener`` before a sentinel NOTIFY committed now.

    NOTIFYs reach listeners in commit order, so a message that was sent (committed) before
    the sentinel is in the returned list: absence is checked without a timed wait.
    """
    send_sentinel()
    received = receive(listener, lambda got: any(m.channel == SENTINEL for m in got))
    return [message for message in received if message.channel != SENTINEL]


def notify_sentinel_on_default_connection() -> None:
    """Commit a sentinel NOTIFY on Django's connection (which must be in autocommit)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, '')", [SENTINEL])
