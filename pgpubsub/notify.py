"""The send side: ``notify()`` for plain channels and the payload context for triggers."""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.apps import apps
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

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
    return _send(_plain_channel(channel, "notify"), kwargs, using, _NOW, None)


def notify_at(
    channel: type[Channel] | str,
    when: datetime.datetime,
    /,
    *,
    using: str | None = None,
    **kwargs: Any,
) -> str:
    """Send a message on a lockable channel, to be handled no earlier than ``when``.

    Like :func:`notify` otherwise (sent when the transaction commits). A time in the past
    means now. ``channel`` and ``when`` are positional, so that the channel may have fields
    with those names. Workers wake when the message is due, not at their next poll.

    Example::

        pgpubsub.notify_at(TrialEnds, trial.ends_at, account_id=trial.account_id)

    Raises:
        ChannelNotFound: ``channel`` names no channel.
        PayloadError: the channel is not lockable (only stored messages can wait), ``when``
            has no time zone, or a field is missing, unknown, or of the wrong type.
    """
    channel_cls = _plain_channel(channel, "notify_at")
    _require_lockable(channel_cls, "notify_at")
    if not isinstance(when, datetime.datetime) or timezone.is_naive(when):
        raise PayloadError(
            f"notify_at() needs an aware datetime (with a time zone), got {when!r}: use "
            "django.utils.timezone.now() + timedelta(...), or datetime(..., tzinfo=...)."
        )
    return _send(channel_cls, kwargs, using, "%s::timestamptz", when)


def notify_later(
    channel: type[Channel] | str,
    delay: datetime.timedelta | float,
    /,
    *,
    using: str | None = None,
    **kwargs: Any,
) -> str:
    """Send a message on a lockable channel, to be handled no earlier than ``delay`` from now.

    Like :func:`notify` otherwise (sent when the transaction commits). ``delay`` is a
    ``timedelta`` or a number of seconds (at least 0), counted on the database's clock from
    this call. ``channel`` and ``delay`` are positional, so that the channel may have fields
    with those names. Workers wake when the message is due, not at their next poll.

    Example::

        pgpubsub.notify_later(Reminder, timedelta(hours=1), user_id=user.pk)

    Raises:
        ChannelNotFound: ``channel`` names no channel.
        PayloadError: the channel is not lockable (only stored messages can wait), ``delay``
            is negative or not a duration, or a field is missing, unknown, or of the wrong
            type.
    """
    channel_cls = _plain_channel(channel, "notify_later")
    _require_lockable(channel_cls, "notify_later")
    seconds = delay.total_seconds() if isinstance(delay, datetime.timedelta) else delay
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
        raise PayloadError(
            f"notify_later() needs a delay of at least 0: a timedelta or a number of seconds, "
            f"got {delay!r}."
        )
    return _send(
        channel_cls, kwargs, using, "statement_timestamp() + make_interval(secs => %s)", seconds
    )


#: How ``_send`` computes the time a message becomes due (SQL), with its parameter.
_NOW = "%s::timestamptz"


def _plain_channel(channel: type[Channel] | str, function: str) -> type[Channel]:
    channel_cls = locate_channel(channel)
    if not issubclass(channel_cls, Channel):
        raise PayloadError(
            f"{channel_cls.name()} is a TriggerChannel: its messages come from database "
            f"triggers; {function}() sends on plain Channel classes only."
        )
    return channel_cls


def _require_lockable(channel_cls: type[Channel], function: str) -> None:
    if not channel_cls.lock_notifications:
        raise PayloadError(
            f"{function}() cannot send on {channel_cls.name()}: it is not lockable, so its "
            "messages are not stored and cannot wait. Set `lock_notifications = True` on the "
            "channel to send messages for later."
        )


def _send(
    channel_cls: type[Channel],
    kwargs: dict[str, Any],
    using: str | None,
    due_sql: str,
    due: Any,
) -> str:
    """Store (lockable) or NOTIFY (fan-out) one message; ``due_sql`` with ``due`` is when it
    becomes due (NULL: now)."""
    payload = channel_cls.build_payload(kwargs)
    text = codec.dumps(payload)
    with connections[using or DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(
            f"SELECT {functions.qualified(functions.SEND)}"
            f"(%s, %s, %s, %s::jsonb[], %s::text[], {due_sql})",
            [
                channel_cls.listen_safe_name(),
                channel_cls.lock_notifications,
                _app_label(channel_cls),
                [text],
                [channel_cls.ordering_key_of(payload)],
                due,
            ],
        )
    return text


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
