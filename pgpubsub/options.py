"""What a ``listen`` run is asked to do: picklable options handed to worker processes.

Kept free of model imports, so a spawned child can unpickle them before Django is set up.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pgpubsub.exceptions import ListenOptionsError

if TYPE_CHECKING:
    from pgpubsub.channel import BaseChannel
    from pgpubsub.registry import ChannelRegistry

DEFAULT_DB_ALIAS = "default"


@dataclass(frozen=True)
class WorkerOptions:
    """What a worker listens to."""

    channels: tuple[str, ...] = ()
    exclude_channels: tuple[str, ...] = ()
    recover: bool = False
    using: str = DEFAULT_DB_ALIAS
    #: Never LISTEN; scan stored notifications every poll interval (for pgbouncer in
    #: transaction pooling mode, where LISTEN does not work).
    poll_only: bool = False
    #: Serve Prometheus metrics on this port (``pgpubsub.metrics``); None: no metrics.
    metrics_port: int | None = None
    #: The address the metrics server binds to.
    metrics_address: str = "0.0.0.0"
    #: With ``recover``: draw a progress bar on stderr if it is a terminal.
    progress_bar: bool = False
    #: Append machine-readable events to this file (:mod:`pgpubsub.readiness`).
    ready_file: str | None = None
    #: The worker's number under its supervisor (0 for a single worker).
    number: int = 0
    #: Run the tasks of Django's tasks framework stored by pgpubsub.tasks backends.
    run_tasks: bool = True
    #: Their queues (names, or ``alias:name``); None: every queue of those backends.
    task_queues: tuple[str, ...] | None = None
    #: Retire (exit 0, to be replaced) after this many messages (:mod:`pgpubsub.recycling`).
    max_messages: int | None = None
    #: Retire once the process's resident memory reaches this many MB.
    max_memory: int | None = None

    def for_worker(self, number: int) -> WorkerOptions:
        """The options of supervised worker ``number``: its own metrics port, port + number."""
        port = None if self.metrics_port is None else self.metrics_port + number
        return replace(self, metrics_port=port, number=number)


@dataclass(frozen=True)
class LogOptions:
    """How the process that ``listen`` owns logs."""

    level: str = "info"
    format: str | None = None


def select_channels(
    options: WorkerOptions, channel_registry: ChannelRegistry, *, runs_tasks: bool = False
) -> list[type[BaseChannel]]:
    """The channels a worker with ``options`` serves, after checking that it can serve them.

    The one place where a ``listen`` run is checked: by the command before it starts any
    process, and by every worker (so also by :func:`pgpubsub.listen.listen`).

    Raises:
        ChannelNotFound: a channel path names no channel, or a channel without listeners.
        ListenOptionsError: nothing is left to listen to, or ``poll_only`` with fan-out
            channels (their messages exist only as NOTIFY).
    """
    selected = channel_registry.select(include=options.channels, exclude=options.exclude_channels)
    if not selected and not runs_tasks:
        raise ListenOptionsError(
            "No channel to listen to: no listener is registered (are your listeners.py "
            "modules in installed apps?) or the excluded channels are all there is."
        )
    fanout = [channel.name() for channel in selected if not channel.lock_notifications]
    if options.poll_only and fanout:
        raise ListenOptionsError(
            f"--poll-only cannot serve fan-out channels (without lock_notifications, their "
            f"messages exist only as NOTIFY): {', '.join(fanout)}. Exclude them with "
            "--exclude-channels, or run them in a listen without --poll-only."
        )
    return selected
