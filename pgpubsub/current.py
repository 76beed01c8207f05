"""The stored message whose callbacks are running: :func:`current_message`.

The processor of stored messages (:mod:`pgpubsub.stored`) puts the claimed message in a
context variable around its callbacks: one ``ContextVar.set`` and ``reset`` per message, and
no object built unless a callback asks. Async callbacks see it too (``async_to_sync`` copies
the context).
"""

from __future__ import annotations

import datetime
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from asgiref.sync import sync_to_async
from django.db import connections

if TYPE_CHECKING:
    from pgpubsub.channel import BaseChannel
    from pgpubsub.queue import StoredMessage


@dataclass(frozen=True)
class MessageInfo:
    """The identity of the stored message being handled.

    ``id`` is stable across its retries: use it as the idempotency key of an effect outside
    the database (an email, a payment). A copy queued by ``manage.py pgpubsub replay`` has an
    ``id`` of its own and names its original in ``replay_of``.
    """

    #: The stored notification's id (``pgpubsub_notification.id``).
    id: int
    #: The channel's dotted path, e.g. ``"shop.channels.OrderPaid"``.
    channel: str
    #: 1 for the first attempt, 2 for the first retry, and so on.
    attempt: int
    #: When it was stored (sent).
    created_at: datetime.datetime | None
    #: For a replayed copy, the id of the original message; otherwise None.
    replay_of: int | None


#: (channel, claimed message, database alias) while the message's callbacks run.
running: ContextVar[tuple[type[BaseChannel], StoredMessage, str] | None] = ContextVar(
    "pgpubsub_running_message", default=None
)


def current_message() -> MessageInfo | None:
    """The stored message whose callbacks are running, or None outside of them.

    Only messages of lockable channels have an identity: in a fan-out callback, and outside
    any callback, it returns None. Reads the message's row (locked by the worker's own
    transaction) for its creation time and original: call it once per callback. In an
    ``async def`` callback, ``await`` :func:`acurrent_message` instead.

    Example::

        @pgpubsub.listener(OrderPaid)
        def send_receipt(order_id: int) -> None:
            message = pgpubsub.current_message()
            mailer.send(receipt_for(order_id), idempotency_key=f"receipt-{message.id}")
    """
    now_running = running.get()
    if now_running is None:
        return None
    channel, message, using = now_running
    from pgpubsub.models import Notification, quoted_table  # needs the app registry

    with connections[using].cursor() as cursor:
        cursor.execute(
            f"SELECT created_at, replay_of FROM {quoted_table(Notification, using)} WHERE id = %s",
            [message.id],
        )
        row = cursor.fetchone()
    created_at, replay_of = row if row is not None else (None, None)
    return MessageInfo(message.id, channel.name(), message.attempts + 1, created_at, replay_of)


async def acurrent_message() -> MessageInfo | None:
    """:func:`current_message` for ``async def`` callbacks (it reads the database through
    ``sync_to_async``, on the worker's connection)."""
    return await sync_to_async(current_message)()
