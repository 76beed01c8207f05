"""Progress reports of a worker: ``--recover``'s progress, and the traffic summary.

Both log on a steady interval (``PGPUBSUB_PROGRESS_INTERVAL``), never per message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from pgpubsub.clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from pgpubsub.stored import BatchResult

logger = logging.getLogger(__name__)


class TrafficSummary:
    """An INFO line every ``interval`` seconds while messages are handled, none when idle:
    what was handled, failed and retried since the previous line, and the age of the
    oldest message waiting.

    ``oldest_waiting`` returns that age in seconds (None: nothing waits); it is asked only
    when a line is written, so an idle worker sends no query for it.
    """

    def __init__(
        self,
        interval: float,
        oldest_waiting: Callable[[], float | None],
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._interval = interval
        self._oldest_waiting = oldest_waiting
        self._clock = clock
        self._since = clock.monotonic()
        self.handled = self.failed = self.retried = 0

    def add(self, handled: int, failed: int = 0, retried: int = 0) -> None:
        """Count messages handled, failed attempts, and the failures that will be retried."""
        self.handled += handled
        self.failed += failed
        self.retried += retried

    def log_if_due(self) -> None:
        """Write the line if ``interval`` has passed and there was traffic since the last."""
        now = self._clock.monotonic()
        if now - self._since < self._interval:
            return
        if self.handled or self.failed:
            oldest = self._oldest_waiting()
            logger.info(
                "In the last %.0f s: %s handled, %s failed (%s to be retried); %s",
                now - self._since,
                self.handled,
                self.failed,
                self.retried,
                "nothing waiting" if oldest is None else f"oldest waiting {oldest:.1f} s",
                extra={
                    "action": "summary",
                    "handled": self.handled,
                    "failed": self.failed,
                    "retried": self.retried,
                    "oldest_waiting": oldest,
                },
            )
        self._since = now
        self.handled = self.failed = self.retried = 0


class RecoveryProgress:
    """Progress of ``--recover``: log lines on a steady interval, and a bar on a terminal.

    A log line every ``interval`` seconds (0: after every batch). With a ``terminal``, a bar
    redrawn in place on one line (``\\r``), cleared before each progress log line.
    """

    _BAR_WIDTH = 30
    _BAR_REFRESH = 0.1

    def __init__(
        self,
        total: int,
        interval: float,
        terminal: TextIO | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.total = total
        self.interval = interval
        self.terminal = terminal
        self.done = 0
        self._clock = clock
        self._started = self._last_log = clock.monotonic()
        self._last_draw = float("-inf")

    def start(self, channels: int) -> None:
        """Log what is to be recovered."""
        logger.info(
            "Recovering %s stored notification(s) of %s channel(s)",
            self.total,
            channels,
            extra={"action": "recover", "total": self.total},
        )

    def advance_by(self, batch: BatchResult) -> None:
        """Count a batch's claimed messages as done."""
        self.advance(batch.claimed)

    def elapsed(self) -> float:
        return self._clock.monotonic() - self._started

    def advance(self, count: int) -> None:
        self.done += count
        now = self._clock.monotonic()
        if now - self._last_log >= self.interval:
            self._last_log = now
            self._clear_bar()
            rate, eta = self._rate_and_eta()
            logger.info(
                "Recovery: %s/%s done, %.0f/s, about %s left",
                self.done,
                self.total,
                rate,
                eta,
                extra={"action": "recover_progress", "done": self.done, "total": self.total},
            )
            self._last_draw = float("-inf")  # redraw the bar under the log line at once
        if self.terminal is not None and now - self._last_draw >= self._BAR_REFRESH:
            self._last_draw = now
            self._draw_bar()

    def finish(self) -> None:
        """End the bar's line, and log what was recovered."""
        if self.terminal is not None:
            self._draw_bar()
            self.terminal.write("\n")
            self.terminal.flush()
        logger.info(
            "Recovery finished: %s notification(s) in %.1f s",
            self.done,
            self.elapsed(),
            extra={"action": "recovered", "done": self.done},
        )

    def _rate_and_eta(self) -> tuple[float, str]:
        elapsed = self.elapsed()
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = max(self.total - self.done, 0)
        return rate, f"{left / rate:.0f} s" if rate > 0 else "unknown"

    def _draw_bar(self) -> None:
        assert self.terminal is not None
        fraction = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = round(fraction * self._BAR_WIDTH)
        rate, eta = self._rate_and_eta()
        self.terminal.write(
            f"\rRecovery [{'#' * filled}{'.' * (self._BAR_WIDTH - filled)}] {fraction:4.0%} "
            f"{self.done}/{self.total} {rate:.0f}/s {eta} left\x1b[K"
        )
        self.terminal.flush()

    def _clear_bar(self) -> None:
        if self.terminal is not None:
            self.terminal.write("\r\x1b[K")
            self.terminal.flush()
