"""The worker: listens on its channels and processes their messages until told to stop.

NOTIFY only wakes the worker; the stored rows are the truth. The worker also scans its
lockable channels every ``PGPUBSUB_POLL_INTERVAL`` seconds, so a NOTIFY lost during a
reconnect, or a message left by a killed worker, costs latency and never a message.
"""

from __future__ import annotations

import datetime
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TextIO

from django.db import (
    InterfaceError,
    OperationalError,
    close_old_connections,
    connections,
)

from pgpubsub import envelope, inflight, queue
from pgpubsub.channel import BaseChannel
from pgpubsub.conf import PgPubSubSettings, get_settings
from pgpubsub.connection import (
    WORKER_APPLICATION_NAME,
    ListenConnection,
    Message,
    PollingOnly,
    driver_module,
    open_listen_connection,
)
from pgpubsub.options import WorkerOptions
from pgpubsub.processing import (
    BatchResult,
    Dispatcher,
    StoredProcessor,
    decode_payload,
    deliver_fanout,
    parse_json,
)
from pgpubsub.registry import registry
from pgpubsub.wakeup import Wakeup

logger = logging.getLogger(__name__)

_RECONNECT_BACKOFF_MAX = 10.0
_PRUNE_INTERVAL = 60.0
_DUPLICATE_SIGNAL_WINDOW = 1.0


@dataclass
class _Stats:
    processed: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)


class Worker:
    """Runs the listeners of the selected channels in the current process.

    First SIGTERM/SIGINT: finish the current message, commit, exit 0 (within
    ``PGPUBSUB_SHUTDOWN_TIMEOUT``). Second signal: exit at once; an unfinished stored message
    is rolled back and stays stored for another worker.
    """

    def __init__(self, options: WorkerOptions, settings: PgPubSubSettings | None = None) -> None:
        self.options = options
        self.settings = settings or get_settings()
        self.channels = registry.select(include=options.channels, exclude=options.exclude_channels)
        self.lockable = [c for c in self.channels if c.lock_notifications]
        self.stopping = False
        self._stop_requested_at = 0.0
        self._listener: ListenConnection | None = None
        self._wakeup = Wakeup()
        self._processor = StoredProcessor(
            using=options.using, settings=self.settings, should_stop=lambda: self.stopping
        )
        self._dispatcher = Dispatcher(registry, self.settings)
        self._stats = _Stats()
        self._last_prune = 0.0
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        #: Names this worker process in its in-flight records: unique across restarts.
        self._label = (
            f"{WORKER_APPLICATION_NAME} {os.getpid()} on {socket.gethostname()}, started {started}"
        )

    # --- lifecycle -------------------------------------------------------------------

    def run(self) -> int:
        """Listen and process until stopped; return the process exit code."""
        self._install_signal_handlers()
        logger.info(
            "Worker %s started on channels: %s",
            os.getpid(),
            ", ".join(c.name() for c in self.channels) or "(none)",
            extra={"action": "started", "channels": [c.name() for c in self.channels]},
        )
        if self.options.metrics_port is not None and not self._serve_metrics(
            self.options.metrics_port
        ):
            return 1
        outage_started: float | None = None
        backoff = 0.5
        first_connection = True
        connection_errors: tuple[type[BaseException], ...] = (
            OperationalError,
            InterfaceError,
            *self._driver_errors(),
        )
        while not self.stopping:
            try:
                self._connect()
                if outage_started is not None:
                    logger.info(
                        "Reconnected after %.1f s without the database",
                        time.monotonic() - outage_started,
                        extra={"action": "reconnected"},
                    )
                outage_started, backoff = None, 0.5
                if first_connection and self.options.recover:
                    self._recover()
                else:
                    self._drain_all()
                first_connection = False
                self._serve()
            except connection_errors as exc:
                self._disconnect()
                if self.stopping:
                    break
                now = time.monotonic()
                outage_started = outage_started or now
                if now - outage_started > self.settings.reconnect_timeout:
                    logger.error(
                        "No database for %.0f s (PGPUBSUB_RECONNECT_TIMEOUT): giving up",
                        now - outage_started,
                        extra={"action": "gave_up"},
                    )
                    return 1
                logger.warning(
                    "Lost the database connection (%s); reconnecting in %.1f s",
                    str(exc).strip() or type(exc).__name__,
                    backoff,
                    extra={"action": "reconnecting"},
                )
                self._sleep(backoff)
                backoff = min(backoff * 2, _RECONNECT_BACKOFF_MAX)
        self._disconnect()
        self._wakeup.close()
        logger.info(
            "Worker %s stopped: %s processed, %s failed",
            os.getpid(),
            self._stats.processed,
            self._stats.failed,
            extra={"action": "stopped"},
        )
        return 0

    def request_stop(self) -> None:
        """Ask the worker to stop after the current message (thread- and signal-safe)."""
        self.stopping = True
        self._wakeup.ring()

    def _serve_metrics(self, port: int) -> bool:
        from pgpubsub.metrics import serve_metrics  # optional dependency: imported only here

        address = self.options.metrics_address
        try:
            serve_metrics(port, address=address, using=self.options.using)
        except OSError as exc:
            logger.error(
                "Cannot serve metrics on %s:%s (%s): exiting",
                address,
                port,
                exc,
                extra={"action": "metrics_failed", "port": port},
            )
            return False
        logger.info(
            "Serving metrics on http://%s:%s/metrics",
            address,
            port,
            extra={"action": "metrics", "port": port},
        )
        return True

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        driver = driver_module(self.options.using)
        return (driver.OperationalError, driver.InterfaceError)

    def _connect(self) -> None:
        if self.options.poll_only:
            # No LISTEN, but a connection of its own for the in-flight records.
            self._listener = PollingOnly(open_listen_connection(self.options.using))
            self._open_journal(self._listener)
            logger.info(
                "Listening on %s channel(s) of database %r by polling every %.1f s (no LISTEN)",
                len(self.channels),
                self.options.using,
                self.settings.poll_interval,
                extra={"action": "listening"},
            )
            return
        self._listener = open_listen_connection(self.options.using)
        self._listener.listen(c.listen_safe_name() for c in self.channels)
        self._open_journal(self._listener)
        logger.info(
            "Listening on %s channel(s) of database %r",
            len(self.channels),
            self.options.using,
            extra={"action": "listening"},
        )

    def _open_journal(self, connection: ListenConnection) -> None:
        """Record batches in flight on ``connection``, first deleting this worker's own old
        records (left when its connections were cut: it did not die)."""
        journal = inflight.Journal(connection, self._label, using=self.options.using)
        journal.discard_own()
        self._processor.journal = journal

    def _disconnect(self) -> None:
        self._processor.journal = None
        if self._listener is not None:
            try:
                self._listener.close()
            except Exception:
                logger.debug("Closing the LISTEN connection failed", exc_info=True)
            self._listener = None
        try:
            connections[self.options.using].close()
        except Exception:
            logger.debug("Closing the Django connection failed", exc_info=True)

    # --- signals ---------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stopping:
            if time.monotonic() - self._stop_requested_at < _DUPLICATE_SIGNAL_WINDOW:
                # One stop request delivered twice (systemd signals the whole cgroup and the
                # supervisor forwards it too): not a request to stop at once.
                return
            logger.warning("Second %s: exiting now", name, extra={"action": "killed"})
            os._exit(1)
        self._stop_requested_at = time.monotonic()
        logger.info(
            "%s received: finishing the current message, then stopping (send it again to "
            "stop at once)",
            name,
            extra={"action": "shutting_down"},
        )
        self.request_stop()
        timer = threading.Timer(self.settings.shutdown_timeout, self._shutdown_overdue)
        timer.daemon = True
        timer.start()

    def _shutdown_overdue(self) -> None:
        logger.error(
            "Still busy %.0f s after the stop request (PGPUBSUB_SHUTDOWN_TIMEOUT): exiting; "
            "an unfinished stored message stays stored for another worker",
            self.settings.shutdown_timeout,
            extra={"action": "killed"},
        )
        os._exit(1)

    # --- the loop --------------------------------------------------------------------

    def _wake_fds(self) -> list[int]:
        fds = [self._wakeup.fileno]
        parent = multiprocessing.parent_process()
        if parent is not None and parent.sentinel is not None:
            fds.append(parent.sentinel)
        return fds

    def _serve(self) -> None:
        assert self._listener is not None
        next_poll = time.monotonic() + self.settings.poll_interval
        while not self.stopping:
            messages = self._listener.wait(next_poll - time.monotonic(), self._wake_fds())
            self._wakeup.clear()
            self._stop_if_orphaned()
            self._handle(messages)
            if time.monotonic() >= next_poll:
                self._listener.ping()
                self._drain_all()
                next_poll = time.monotonic() + self.settings.poll_interval

    def _stop_if_orphaned(self) -> None:
        parent = multiprocessing.parent_process()
        if parent is not None and not parent.is_alive() and not self.stopping:
            logger.warning(
                "The supervising process is gone: stopping", extra={"action": "orphaned"}
            )
            self.stopping = True

    def _handle(self, messages: list[Message]) -> None:
        woken: dict[type[BaseChannel], None] = {}
        for message in messages:
            channel = registry.channel_for(message.channel)
            if channel is None or channel not in self.channels:
                continue
            if channel.lock_notifications:
                woken[channel] = None
            else:
                self._deliver_fanout(channel, message.payload)
        for channel in woken:
            self._record(self._processor.drain(channel))

    def _deliver_fanout(self, channel: type[BaseChannel], text: str) -> None:
        if self.stopping:
            return
        payload = self._unwrap(channel, text)
        if payload is None:
            self._stats.failed += 1
            return
        if deliver_fanout(self._dispatcher, channel, payload, self.options.using):
            self._stats.processed += 1
        else:
            self._stats.failed += 1

    def _unwrap(self, channel: type[BaseChannel], text: str) -> dict[str, Any] | None:
        """The payload of a fan-out NOTIFY; None (logged) when there is none to deliver.

        Anyone who can connect may NOTIFY our channels: junk is logged and dropped.
        """
        try:
            decoded = envelope.decode(text, lambda raw: parse_json(channel, raw))
            if isinstance(decoded, envelope.Inline):
                return decoded.payload
            stored = queue.load_broadcast(decoded.id, using=self.options.using)
            if stored is None:
                logger.warning(
                    "Oversized message %s of channel %s was pruned before it was read "
                    "(PGPUBSUB_BROADCAST_RETENTION)",
                    decoded.id,
                    channel.name(),
                    extra={"action": "dropped", "channel": channel.name()},
                )
                return None
            return decode_payload(channel, stored)
        except envelope.UnreadableEnvelope as exc:
            logger.warning(
                "Dropped a NOTIFY on channel %s that pgpubsub did not write: %s; it was %s",
                channel.name(),
                exc,
                envelope.excerpt(text),
                extra={"action": "dropped", "channel": channel.name()},
            )
            return None

    def _drain_all(self) -> None:
        # Once per poll interval, not per message: with CONN_MAX_AGE = 0 (Django's default)
        # this closes the connection, and reconnecting for every wake-up would cost latency.
        # Broken connections are caught by the reconnect loop in run().
        close_old_connections()
        for channel in self.lockable:
            if self.stopping:
                return
            self._record(self._processor.drain(channel))
        self._prune()

    def _prune(self) -> None:
        """Delete expired oversized fan-out payloads and stale in-flight records."""
        if time.monotonic() - self._last_prune < _PRUNE_INTERVAL:
            return
        self._last_prune = time.monotonic()
        pruned = queue.prune_broadcasts(self.settings.broadcast_retention, using=self.options.using)
        if pruned:
            logger.info("Pruned %s expired oversized fan-out payloads", pruned)
        stale = inflight.prune(using=self.options.using)
        if stale:
            logger.info(
                "Deleted %s record(s) of batches whose worker ended, whose messages are gone",
                stale,
            )

    def _recover(self) -> None:
        """Drain everything stored at start, reporting progress on a steady interval."""
        names = [c.listen_safe_name() for c in self.lockable]
        total = queue.count_due(names, using=self.options.using) if names else 0
        logger.info(
            "Recovering %s stored notification(s) of %s channel(s)",
            total,
            len(names),
            extra={"action": "recover", "total": total},
        )
        progress = _RecoveryProgress(
            total,
            self.settings.progress_interval,
            terminal=sys.stderr if self.options.progress_bar and sys.stderr.isatty() else None,
        )
        for channel in self.lockable:
            self._record(
                self._processor.drain(
                    channel, on_batch=lambda batch: progress.advance(batch.claimed)
                )
            )
        progress.finish()
        logger.info(
            "Recovery finished: %s notification(s) in %.1f s",
            progress.done,
            progress.elapsed(),
            extra={"action": "recovered", "done": progress.done},
        )

    def _record(self, result: BatchResult) -> None:
        self._stats.processed += result.processed
        self._stats.failed += result.failed

    def _sleep(self, seconds: float) -> None:
        """Sleep, waking early on a stop request."""
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.1, deadline - time.monotonic()))


class _RecoveryProgress:
    """Progress of ``--recover``: log lines on a steady interval, and a bar on a terminal.

    A log line every ``interval`` seconds (0: after every batch). With a ``terminal``, a bar
    redrawn in place on one line (``\\r``), cleared before each progress log line.
    """

    _BAR_WIDTH = 30
    _BAR_REFRESH = 0.1

    def __init__(self, total: int, interval: float, terminal: TextIO | None = None) -> None:
        self.total = total
        self.interval = interval
        self.terminal = terminal
        self.done = 0
        self._started = self._last_log = time.monotonic()
        self._last_draw = float("-inf")

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
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
        if self.terminal is not None:
            self._draw_bar()
            self.terminal.write("\n")
            self.terminal.flush()

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
