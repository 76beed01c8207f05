"""Running listeners in-process: the ``pgpubsub.listen`` API of django-pgpubsub 1.3.

``manage.py listen`` is the usual way to run listeners; :func:`listen` serves code that
embeds a worker itself. ``listen_to_channels``, ``process_notifications`` and ``POLL`` are
1.3's test helpers, kept as deprecated adapters over the worker's machinery so that test
suites written for 1.3 keep running (see the testing guide for the new way).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction

from pgpubsub.channel import BaseChannel, validate_pg_identifier
from pgpubsub.conf import get_settings
from pgpubsub.connection import driver_module
from pgpubsub.exceptions import ChannelNotFound
from pgpubsub.fanout import FanoutProcessor
from pgpubsub.filters import ListenerFilterProvider
from pgpubsub.options import WorkerOptions, select_channels
from pgpubsub.registry import registry
from pgpubsub.stored import StoredProcessor, process_stored_notifications
from pgpubsub.worker import create_worker


def _paths(channels: Iterable[type[BaseChannel] | str] | None) -> tuple[str, ...]:
    return tuple(c if isinstance(c, str) else c.name() for c in channels or ())


def listen(
    channels: Iterable[type[BaseChannel] | str] | None = None,
    recover: bool = False,
    *,
    exclude_channels: Iterable[type[BaseChannel] | str] | None = None,
    using: str = DEFAULT_DB_ALIAS,
    autorestart_on_failure: bool = True,
    start_method: str = "spawn",
) -> int:
    """Run one worker in the current process until SIGTERM/SIGINT; return its exit code.

    ``autorestart_on_failure`` and ``start_method`` are accepted for django-pgpubsub 1.3
    compatibility and have no effect here: the worker survives failing callbacks and lost
    connections by itself, and ``manage.py listen`` supervises worker processes.

    The options are checked as ``manage.py listen`` checks them.

    Test suites written for 1.3 set ``pgpubsub.listen.POLL`` to False (deprecated): the call
    then processes the stored notifications if ``recover`` is set, and returns 0.

    Raises:
        ChannelNotFound: a channel path names no channel, or one without listeners.
        ListenOptionsError: no channel is left to listen to.
    """
    options = WorkerOptions(
        channels=_paths(channels),
        exclude_channels=_paths(exclude_channels),
        recover=recover,
        using=using,
    )
    if globals().get("POLL", True) is False:
        selected = select_channels(options, registry)
        lockable = [channel for channel in selected if channel.lock_notifications]
        if recover and lockable:
            process_stored_notifications(lockable, using=using)
        return 0
    return create_worker(options).run()


def _deprecated(old: str, replacement: str) -> None:
    warnings.warn(f"{old} is deprecated: {replacement}", DeprecationWarning, stacklevel=3)


class LegacyListenConnection:
    """What the deprecated :func:`listen_to_channels` returns: 1.3's connection wrapper.

    As in 1.3 it LISTENs on Django's own connection, so a NOTIFY committed by a statement of
    that connection shows up in :attr:`notifies` with no ``poll()``. ``notifies`` holds the
    driver's notification objects (``channel`` and ``payload`` attributes).
    """

    def __init__(self, using: str = DEFAULT_DB_ALIAS) -> None:
        self.using = using
        wrapper = connections[using]
        wrapper.ensure_connection()
        #: The driver's connection (psycopg2 or psycopg 3) that LISTENs.
        self.connection: Any = wrapper.connection
        self._psycopg3 = driver_module(using).__name__ == "psycopg"
        self._received: list[Any] = []
        if self._psycopg3:
            self.connection.add_notify_handler(self._received.append)

    @property
    def notifies(self) -> list[Any]:
        """Notifications received and not yet processed."""
        return self._received if self._psycopg3 else self.connection.notifies

    @notifies.setter
    def notifies(self, value: list[Any]) -> None:
        if self._psycopg3:
            self._received[:] = value  # the notify handler appends to this very list
        else:
            self.connection.notifies = value

    def listen(self, channels: Iterable[type[BaseChannel]]) -> None:
        """LISTEN on ``channels``; inside ``atomic()`` it takes effect at the commit."""
        wrapper = connections[self.using]
        with transaction.atomic(using=self.using), wrapper.cursor() as cursor:
            for channel in channels:
                name = validate_pg_identifier(channel.listen_safe_name())
                cursor.execute(f"LISTEN {wrapper.ops.quote_name(name)}")

    def poll(self) -> None:
        """Read the notifications that arrived since the last statement."""
        if self._psycopg3:
            self.connection.execute("SELECT 1")  # psycopg 3 hands them over with a result
        else:
            self.connection.poll()

    def take(self) -> list[Any]:
        """Poll, then remove and return every notification received."""
        self.poll()
        received = list(self.notifies)
        self.notifies.clear()
        return received

    def stop(self) -> None:
        """Stop collecting notifications (the connection stays Django's)."""
        if self._psycopg3:
            self.connection.remove_notify_handler(self._received.append)


def listen_to_channels(
    channels: Iterable[type[BaseChannel] | str] | None = None, using: str = DEFAULT_DB_ALIAS
) -> LegacyListenConnection:
    """Deprecated django-pgpubsub 1.3 test helper: LISTEN on ``channels`` on Django's connection.

    Returns the connection to pass to :func:`process_notifications`. Default: every channel
    that has listeners. New tests call :func:`pgpubsub.process_stored_notifications`, or run
    ``manage.py listen`` (see the testing guide).

    Raises:
        ChannelNotFound: a channel path names no channel, or no channel has listeners.
    """
    _deprecated(
        "pgpubsub.listen.listen_to_channels()",
        "in tests, call pgpubsub.process_stored_notifications() to run stored messages, or "
        "run `manage.py listen`; embedded workers use pgpubsub.listen.listen().",
    )
    selected = registry.select(include=channels)
    if not selected:
        raise ChannelNotFound(
            ", ".join(_paths(channels)) or "(any)",
            "no listener is registered: are your listeners.py modules in installed apps?",
        )
    pg_connection = LegacyListenConnection(using)
    pg_connection.listen(selected)
    return pg_connection


def process_notifications(pg_connection: LegacyListenConnection) -> None:
    """Deprecated django-pgpubsub 1.3 test helper: process what ``pg_connection`` received.

    Each NOTIFY is handled as a worker handles it: a lockable channel's doorbell processes
    that channel's due stored notifications, a fan-out message runs its callbacks. Repeats
    until nothing more arrives. Failing callbacks are recorded (stored messages) or logged
    (fan-out), as in a worker, not raised.
    """
    _deprecated(
        "pgpubsub.listen.process_notifications()",
        "in tests, call pgpubsub.process_stored_notifications() to run stored messages.",
    )
    using = pg_connection.using
    settings = get_settings()
    stored = StoredProcessor(using=using, settings=settings)
    fanout = FanoutProcessor(registry, settings, using)
    while received := pg_connection.take():
        woken: dict[type[BaseChannel], None] = {}
        for notification in received:
            channel = registry.channel_for(notification.channel)
            if channel is None:
                continue
            if channel.lock_notifications:
                woken[channel] = None
            else:
                fanout.deliver(channel, notification.payload)
        for channel in woken:
            stored.drain(channel)


def __getattr__(name: str) -> Any:
    if name == "POLL":
        warnings.warn(
            "pgpubsub.listen.POLL is deprecated: in tests, call "
            "pgpubsub.process_stored_notifications() instead of listen(recover=True) with "
            "POLL = False; stop an embedded worker with SIGTERM.",
            DeprecationWarning,
            stacklevel=2,
        )
        return True
    raise AttributeError(f"module 'pgpubsub.listen' has no attribute {name!r}")


__all__ = [
    "LegacyListenConnection",
    "ListenerFilterProvider",
    "listen",
    "listen_to_channels",
    "process_notifications",
    "process_stored_notifications",
]
