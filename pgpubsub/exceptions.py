"""Exceptions raised by pgpubsub.

Every exception derives from :class:`PgPubSubError`, and every message names what is
wrong and what to do about it.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class PgPubSubError(Exception):
    """Base class of every error pgpubsub raises."""


class ChannelNotFound(PgPubSubError, LookupError):
    """A channel named by a dotted path or a PostgreSQL channel name does not exist."""

    def __init__(self, name: str, hint: str | None = None) -> None:
        self.name = name
        message = f"Channel {name!r} not found"
        message += (
            f": {hint}"
            if hint
            else (
                ": is it defined in the module the path names (for example in the app's "
                "channels.py), spelled with its full dotted path, and is its app in INSTALLED_APPS?"
            )
        )
        super().__init__(message)


class ChannelDefinitionError(PgPubSubError, TypeError):
    """A channel class is declared in a way pgpubsub cannot serve."""


class ListenerRegistrationError(PgPubSubError, TypeError):
    """A listener decorator was applied to something it cannot register."""


class NotificationContextError(PgPubSubError, RuntimeError):
    """set_notification_context() was called where it cannot take effect.

    A ``RuntimeError``, as django-pgpubsub 1.3 raised, so ``except RuntimeError`` catches it.
    """


class PayloadError(PgPubSubError, ValueError):
    """A payload could not be encoded for, or decoded from, a channel."""


class WorkerDied(PgPubSubError):
    """A worker process ended while it ran a stored message's callbacks.

    Sent as the ``error`` of ``notification_failed`` for the message that was running: it
    was charged one attempt, as if its callback had raised.
    """


class TimeLimitExceeded(WorkerDied):
    """A stored message's callbacks ran past its time limit, so their worker was replaced.

    Sent as the ``error`` of ``notification_failed``; the message was charged one attempt.
    See ``PGPUBSUB_MESSAGE_TIME_LIMIT`` and a channel's ``message_time_limit``. Also named by
    the error of a background task that ran past its time limit (``TIME_LIMIT``).
    """


class SettingsError(PgPubSubError, ImproperlyConfigured):
    """A ``PGPUBSUB_*`` setting has the wrong type or a value outside its range."""


class DatabaseUnavailable(PgPubSubError):
    """A worker could not reach its database for ``PGPUBSUB_RECONNECT_TIMEOUT`` seconds."""


class ListenOptionsError(PgPubSubError, ValueError):
    """What ``listen`` (the command or :func:`pgpubsub.listen.listen`) was asked cannot run."""


class ReplayError(PgPubSubError, ValueError):
    """What ``manage.py pgpubsub replay`` was asked cannot be done (:mod:`pgpubsub.replay`)."""
