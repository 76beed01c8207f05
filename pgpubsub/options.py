"""What a ``listen`` run is asked to do: picklable options handed to worker processes.

Kept free of model imports, so a spawned child can unpickle them before Django is set up.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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

    def for_worker(self, number: int) -> WorkerOptions:
        """The options of supervised worker ``number``: its own metrics port, port + number."""
        if self.metrics_port is None:
            return self
        return replace(self, metrics_port=self.metrics_port + number)


@dataclass(frozen=True)
class LogOptions:
    """How the process that ``listen`` owns logs."""

    level: str = "info"
    format: str | None = None
