"""Housekeeping a worker does on the side: pruning what nobody will read again."""

from __future__ import annotations

import logging

from pgpubsub import inflight, queue
from pgpubsub.clock import SYSTEM_CLOCK, Clock
from pgpubsub.conf import PgPubSubSettings

logger = logging.getLogger(__name__)

#: Seconds between two prunings by one worker.
PRUNE_INTERVAL = 60.0


class Housekeeping:
    """Deletes expired oversized fan-out payloads and in-flight records that outlived their
    messages, at most every :data:`PRUNE_INTERVAL` seconds (the first time at once)."""

    def __init__(self, settings: PgPubSubSettings, using: str, clock: Clock = SYSTEM_CLOCK):
        self._settings = settings
        self._using = using
        self._clock = clock
        self._last_run: float | None = None

    def run_if_due(self) -> None:
        """Prune, unless this worker pruned less than :data:`PRUNE_INTERVAL` seconds ago."""
        now = self._clock.monotonic()
        if self._last_run is not None and now - self._last_run < PRUNE_INTERVAL:
            return
        self._last_run = now
        pruned = queue.prune_broadcasts(self._settings.broadcast_retention, using=self._using)
        if pruned:
            logger.info(
                "Pruned %s expired oversized fan-out payloads",
                pruned,
                extra={"action": "pruned", "count": pruned},
            )
        stale = inflight.prune(using=self._using)
        if stale:
            logger.info(
                "Deleted %s record(s) of batches whose worker ended, whose messages are gone",
                stale,
                extra={"action": "pruned_in_flight", "count": stale},
            )


class NoHousekeeping:
    """Housekeeping that does nothing (for tests of the worker loop without a database)."""

    def run_if_due(self) -> None:
        pass
