"""Housekeeping a worker does on the side: pruning what nobody will read again."""

from __future__ import annotations

import datetime
import logging

from pgpubsub import inflight, queue
from pgpubsub.clock import SYSTEM_CLOCK, Clock
from pgpubsub.conf import PgPubSubSettings

logger = logging.getLogger(__name__)

#: Seconds between two prunings by one worker.
PRUNE_INTERVAL = 60.0
#: Handled messages deleted by one statement (one short transaction): few enough that no
#: statement holds its locks, or bloats the write-ahead log, for long.
PRUNE_BATCH = 1_000
#: Seconds one pruning of handled messages may take; a backlog left over is pruned at the
#: worker's next poll rather than a whole interval later.
PRUNE_TIME_BUDGET = 1.0


class Housekeeping:
    """Deletes expired oversized fan-out payloads, in-flight records that outlived their
    messages and, with ``PGPUBSUB_KEEP_HANDLED``, handled messages older than that, at most
    every :data:`PRUNE_INTERVAL` seconds (the first time at once)."""

    def __init__(
        self,
        settings: PgPubSubSettings,
        using: str,
        clock: Clock = SYSTEM_CLOCK,
        *,
        batch: int = PRUNE_BATCH,
        time_budget: float = PRUNE_TIME_BUDGET,
    ):
        self._settings = settings
        self._using = using
        self._clock = clock
        self._batch = batch
        self._time_budget = time_budget
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
        if self._settings.keep_handled is not None and not self.prune_handled(
            self._settings.keep_handled
        ):
            self._last_run = None  # more to prune: again at the next poll

    def prune_handled(self, older_than: datetime.timedelta) -> bool:
        """Delete handled messages handled more than ``older_than`` ago, :data:`PRUNE_BATCH`
        per statement, for at most :data:`PRUNE_TIME_BUDGET` seconds; return True when none
        is left, False when the time ran out first."""
        started = self._clock.monotonic()
        total = 0
        finished = False
        while not finished and self._clock.monotonic() - started < self._time_budget:
            deleted = queue.prune_handled(older_than, using=self._using, limit=self._batch)
            total += deleted
            finished = deleted < self._batch
        if total:
            logger.info(
                "Pruned %s handled message%s older than %s",
                f"{total:,}",
                "" if total == 1 else "s",
                duration_words(older_than),
                extra={"action": "pruned_handled", "count": total},
            )
        return finished


def duration_words(duration: datetime.timedelta) -> str:
    """``duration`` in the largest whole unit, e.g. ``"7 days"``, ``"90 minutes"``."""
    seconds = duration.total_seconds()
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds:g} second{'' if seconds == 1 else 's'}"


class NoHousekeeping:
    """Housekeeping that does nothing (for tests of the worker loop without a database)."""

    def run_if_due(self) -> None:
        pass
