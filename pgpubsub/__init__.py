"""pgpubsub: reliable, exactly-once PostgreSQL LISTEN/NOTIFY messaging for Django.

The public API, compatible with django-pgpubsub 1.3::

    import pgpubsub

    @dataclass
    class PostReads(pgpubsub.Channel):
        post_id: int

    @pgpubsub.listener(PostReads)
    def count_read(post_id: int) -> None: ...

    pgpubsub.notify(PostReads, post_id=1)
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pgpubsub.channel import BaseChannel, Channel, TriggerChannel, locate_channel
from pgpubsub.current import MessageInfo, acurrent_message, current_message
from pgpubsub.exceptions import (
    ChannelDefinitionError,
    ChannelNotFound,
    ListenerRegistrationError,
    NotificationContextError,
    PayloadError,
    PgPubSubError,
    SettingsError,
    TimeLimitExceeded,
    WorkerDied,
)
from pgpubsub.filters import ListenerFilterProvider
from pgpubsub.listeners import (
    listener,
    post_delete_listener,
    post_insert_listener,
    post_save_listener,
    post_update_listener,
    pre_delete_listener,
    pre_insert_listener,
    pre_save_listener,
    pre_update_listener,
    trigger_listener,
)
from pgpubsub.notify import anotify, notify, notify_at, notify_later, set_notification_context
from pgpubsub.signals import notification_failed, notification_processed

#: The distribution to ``pip install``; the package it installs is imported as ``pgpubsub``.
DISTRIBUTION = "django-pgpubsub-reliable"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"


def __getattr__(name: str) -> Any:
    # Imported on first use: these need the app registry (models) to be ready.
    if name == "process_stored_notifications":
        from pgpubsub.stored import process_stored_notifications

        return process_stored_notifications
    raise AttributeError(f"module 'pgpubsub' has no attribute {name!r}")


__all__ = [
    "DISTRIBUTION",
    "BaseChannel",
    "Channel",
    "ChannelDefinitionError",
    "ChannelNotFound",
    "ListenerFilterProvider",
    "ListenerRegistrationError",
    "MessageInfo",
    "NotificationContextError",
    "PayloadError",
    "PgPubSubError",
    "SettingsError",
    "TimeLimitExceeded",
    "TriggerChannel",
    "WorkerDied",
    "__version__",
    "acurrent_message",
    "anotify",
    "current_message",
    "listener",
    "locate_channel",
    "notification_failed",
    "notification_processed",
    "notify",
    "notify_at",
    "notify_later",
    "post_delete_listener",
    "post_insert_listener",
    "post_save_listener",
    "post_update_listener",
    "pre_delete_listener",
    "pre_insert_listener",
    "pre_save_listener",
    "pre_update_listener",
    "process_stored_notifications",
    "set_notification_context",
    "trigger_listener",
]
