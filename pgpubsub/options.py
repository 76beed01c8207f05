"""What a ``listen`` run is asked to do: picklable options handed to worker processes.

Kept free of model imports, so a spawned child can unpickle them before Django is set up.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class LogOptions:
    """How the process that ``listen`` owns logs."""

    level: str = "info"
    format: str | None = None
