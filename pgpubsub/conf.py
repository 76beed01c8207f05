"""Typed access to pgpubsub's settings.

Every ``PGPUBSUB_*`` setting is read here and nowhere else; :func:`get_settings` returns the
values in force, with the documented defaults filled in.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings as django_settings


@dataclass(frozen=True)
class PgPubSubSettings:
    """The settings pgpubsub reads, with their defaults."""

    #: ``set_notification_context`` sets the context for the current transaction only.
    tx_bound_notification_context: bool = False
    #: Callbacks receive the payload context as a ``context`` keyword argument.
    pass_context_to_listeners: bool = False
    #: Dotted path of a ``ListenerFilterProvider`` whose Q restricts stored notifications taken.
    listener_filter: str | None = None
    #: Seconds between two scans of the stored notifications when no NOTIFY arrives.
    poll_interval: float = 5.0
    #: Stored notifications claimed and processed in one transaction.
    batch_size: int = 100
    #: Attempts after which a failing stored notification is marked failed.
    max_attempts: int = 5
    #: Seconds before the first retry; each further retry waits twice as long.
    retry_backoff: float = 2.0
    #: Longest wait between two retries, in seconds.
    retry_backoff_max: float = 3600.0
    #: Seconds a worker may take to finish its current message after SIGTERM.
    shutdown_timeout: float = 30.0
    #: Seconds a worker keeps trying to reconnect before it exits with an error.
    reconnect_timeout: float = 600.0
    #: Seconds an oversized fan-out payload is kept for listeners to read.
    broadcast_retention: float = 3600.0
    #: Seconds between two progress log lines of ``listen --recover`` (0: after every batch).
    progress_interval: float = 5.0


_PREFIX = "PGPUBSUB_"


def get_settings() -> PgPubSubSettings:
    """Return pgpubsub's settings as they are configured now.

    Read on every call (a handful of ``getattr``), so ``override_settings`` in tests works.
    """
    defaults = PgPubSubSettings()
    values = {
        name: getattr(django_settings, _PREFIX + name.upper(), getattr(defaults, name))
        for name in PgPubSubSettings.__dataclass_fields__
    }
    return PgPubSubSettings(**values)
