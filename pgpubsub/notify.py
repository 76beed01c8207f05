"""The send side: ``notify()`` for plain channels and the payload context for triggers."""

from __future__ import annotations

import json
import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.apps import apps
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from pgpubsub import codec, functions
from pgpubsub.channel import BaseChannel, Channel, locate_channel
from pgpubsub.conf import get_settings
from pgpubsub.exceptions import NotificationContextError, PayloadError

_CONTEXT_SETTING = "pgpubsub.notification_context"
#: libpq's PQTRANS_INERROR: in a transaction block whose statement failed.
_PQTRANS_INERROR = 3

logger = logging.getLogger(__name__)


def _app_label(channel: type[BaseChannel]) -> str:
    config = apps.get_containing_app_config(channel.__module__)
    return config.label if config is not None else ""


def notify(channel: type[Channel] | str, *, using: str | None = None, **kwargs: Any) -> str:
    """Send a message on a plain channel, with the channel's fields as keyword arguments.

    Inside a transaction the message is sent (and, on a lockable channel, stored) when the
    transaction commits, and not at all if it rolls back. Values travel as bound
    parameters, so any text is safe.

    Returns the JSON payload sent, as django-pgpubsub 1.3 did.

    Example::

        pgpubsub.notify("blog.channels.PostReads", post_id=post.pk)

    Raises:
        ChannelNotFound: ``channel`` names no channel.
        PayloadError: a field is missing, unknown, or of the wrong type.
    """
    channel_cls = locate_channel(channel)
    if not issubclass(channel_cls, Channel):
        raise PayloadError(
            f"{channel_cls.name()} is a TriggerChannel: its messages come from database "
            "triggers; notify() sends on plain Channel classes only."
        )
    payload = codec.dumps(channel_cls.build_payload(kwargs))
    with connections[using or DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(
            f"SELECT {functions.qualified(functions.SEND)}(%s, %s, %s, %s::jsonb[])",
            [
                channel_cls.listen_safe_name(),
                channel_cls.lock_notifications,
                _app_label(channel_cls),
                [payload],
            ],
        )
    return payload


async def anotify(channel: type[Channel] | str, *, using: str | None = None, **kwargs: Any) -> str:
    """Async variant of :func:`notify`, for async views and other coroutines.

    Runs ``notify()`` through ``sync_to_async``, like Django's async ORM methods (``acreate``
    and the like), so it uses the same database connection as they do.

    Example::

        async def read_post(request, pk):
            await pgpubsub.anotify(PostReads, post_id=pk)
            ...

    Raises:
        ChannelNotFound: ``channel`` names no channel.
        PayloadError: a field is missing, unknown, or of the wrong type.
    """
    return await sync_to_async(notify)(channel, using=using, **kwargs)


def set_notification_context(context: dict[str, Any], using: str | None = None) -> None:
    """Attach ``context`` to every trigger payload sent from this connection.

    The context lasts for the database session, or for the current transaction only when
    ``PGPUBSUB_TX_BOUND_NOTIFICATION_CONTEXT = True``. Callbacks receive it as ``context``
    when ``PGPUBSUB_PASS_CONTEXT_TO_LISTENERS = True``.

    Inside a transaction that has already failed (a statement raised, or Django marked it
    ``needs_rollback``) it does nothing, as in django-pgpubsub 1.3: the transaction will be
    rolled back, so it sends no message, and middleware that sets the context after a handled
    ``IntegrityError`` must not turn the response into an error.

    Example::

        pgpubsub.set_notification_context({"request_id": request.headers["X-Request-Id"]})

    Raises:
        NotificationContextError: transaction-bound context outside ``transaction.atomic()``.
        PayloadError: a value PostgreSQL's jsonb cannot store (a NUL character, NaN or an
            infinity), named by its key; the context in effect is left as it was.
    """
    tx_bound = get_settings().tx_bound_notification_context
    connection = connections[using or DEFAULT_DB_ALIAS]
    if tx_bound and not connection.in_atomic_block:
        raise NotificationContextError(
            "PGPUBSUB_TX_BOUND_NOTIFICATION_CONTEXT is True, so the context lasts for one "
            "transaction: call set_notification_context() inside transaction.atomic()."
        )
    # Refused here, or every later write to a tracked model would carry it into jsonb.
    problem = codec.jsonb_problem(context)
    if problem is not None:
        raise PayloadError(
            f"Notification context {problem}, which PostgreSQL's jsonb cannot store: "
            "remove that value or encode it differently."
        )
    if _transaction_failed(connection):
        logger.warning(
            "set_notification_context() ignored: the transaction on database %r has already "
            "failed and will be rolled back, so it sends no message",
            connection.alias,
            extra={"action": "context_ignored", "database": connection.alias},
        )
        return
    text = json.dumps(context, cls=DjangoJSONEncoder)
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, %s, %s)", [_CONTEXT_SETTING, text, tx_bound])


def _transaction_failed(connection: BaseDatabaseWrapper) -> bool:
    """Whether the connection's transaction can only be rolled back (asks no query)."""
    if connection.needs_rollback:
        return True
    raw = connection.connection
    # Both drivers report libpq's transaction status; a statement of it has failed.
    return raw is not None and int(raw.info.transaction_status) == _PQTRANS_INERROR


def __getattr__(name: str) -> Any:
    # django-pgpubsub 1.3 exported it from here; imported on use, as it needs the models.
    if name == "process_stored_notifications":
        from pgpubsub.stored import process_stored_notifications

        return process_stored_notifications
    raise AttributeError(f"module 'pgpubsub.notify' has no attribute {name!r}")
