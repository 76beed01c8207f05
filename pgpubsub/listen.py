"""Running listeners in-process: the ``pgpubsub.listen`` API of django-pgpubsub 1.3.

``manage.py listen`` is the usual way to run listeners; these functions serve code that
embeds a worker itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import DEFAULT_DB_ALIAS

from pgpubsub.channel import BaseChannel
from pgpubsub.filters import ListenerFilterProvider
from pgpubsub.options import WorkerOptions
from pgpubsub.stored import process_stored_notifications
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
    return create_worker(options).run()


__all__ = ["ListenerFilterProvider", "listen", "process_stored_notifications"]
