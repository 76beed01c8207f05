"""The worker: listens on its channels and processes their messages until told to stop.

NOTIFY only wakes the worker; the stored rows are the truth. The worker also scans its
lockable channels every ``PGPUBSUB_POLL_INTERVAL`` seconds, so a NOTIFY lost during a
reconnect, or a message left by a killed worker, costs latency and never a message.

The worker holds no SQL and no connection logic: its :class:`~pgpubsub.connection.ListenSession`
keeps a connection open (reconnecting with backoff), the processors run messages
(:mod:`pgpubsub.stored`, :mod:`pgpubsub.fanout`), and :mod:`pgpubsub.housekeeping` prunes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence

from django.db import close_old_connections, connections

from pgpubsub import inflight, queue, readiness
from pgpubsub.channel import BaseChannel
from pgpubsub.clock import SYSTEM_CLOCK, Clock
from pgpubsub.conf import PgPubSubSettings, get_settings
from pgpubsub.connection import (
    WORKER_APPLICATION_NAME,
    ConnectionFactory,
    ListenConnection,
    ListenSession,
    Message,
    PollingOnly,
    connection_errors,
    open_listen_connection,
)
from pgpubsub.exceptions import DatabaseUnavailable
from pgpubsub.fanout import FanoutProcessor
from pgpubsub.functions import DELAYED_DOORBELL
from pgpubsub.housekeeping import Housekeeping, NoHousekeeping
from pgpubsub.options import WorkerOptions, select_channels
from pgpubsub.overdue import TimeLimits
from pgpubsub.progress import RecoveryProgress, TrafficSummary
from pgpubsub.recycling import Recycling
from pgpubsub.registry import ChannelRegistry, registry
from pgpubsub.shutdown import STOP_AFTER_MESSAGE, ShutdownPolicy
from pgpubsub.stored import BatchResult, StoredProcessor
from pgpubsub.tasks.work import NoTaskWork, task_work
from pgpubsub.wakeup import Wakeup

logger = logging.getLogger(__name__)

__all__ = ["Worker", "WorkerOptions", "create_worker"]


class Worker:
    """Runs the listeners of the selected channels in the current process.

    First SIGTERM/SIGINT (or SIGUSR1, from the supervisor): finish the current message,
    commit, exit 0 (within ``PGPUBSUB_SHUTDOWN_TIMEOUT``). Second SIGTERM/SIGINT (or SIGQUIT):
    exit at once; an unfinished stored message is rolled back and stays stored for another
    worker (see :mod:`pgpubsub.shutdown`).

    Arguments:
        options: what to listen to (channels, database, ``--recover``...).
        settings: pgpubsub's settings.
        channel_registry: the channels and their callbacks.
        connect: opens the worker's own connection (see :func:`create_worker`).
        clock: the time it reads and waits on (a fake one in unit tests).
        housekeeping: prunes on the side (``NoHousekeeping()`` in unit tests).
        name: how the worker names itself in its records and on its connection (the one
            ``connect`` gives its connections; default: a new one).
        tasks: the tasks of Django's tasks framework it runs (:mod:`pgpubsub.tasks.work`).

    Raises:
        ChannelNotFound, ListenOptionsError: see :func:`pgpubsub.options.select_channels`.

    Example::

        worker = create_worker(WorkerOptions(channels=("shop.channels.Orders",)))
        sys.exit(worker.run())
    """

    def __init__(
        self,
        options: WorkerOptions,
        settings: PgPubSubSettings,
        channel_registry: ChannelRegistry,
        connect: ConnectionFactory,
        *,
        clock: Clock = SYSTEM_CLOCK,
        housekeeping: Housekeeping | NoHousekeeping | None = None,
        name: inflight.WorkerName | None = None,
        tasks: NoTaskWork | None = None,
    ) -> None:
        self.options = options
        self.settings = settings
        self.clock = clock
        self._tasks = tasks or NoTaskWork()
        self._tasks.set_stop_check(self._stop_before_next_task)
        self.channels = select_channels(
            options, channel_registry, runs_tasks=self._tasks.serves_any()
        )
        self.lockable = [c for c in self.channels if c.lock_notifications]
        self.stopping = False
        self.total = BatchResult()
        self._registry = channel_registry
        self._wakeup = Wakeup()
        self.name = name or inflight.WorkerName.for_this_process(WORKER_APPLICATION_NAME)
        self._journal = inflight.Journal(self.name.label, using=options.using)
        self._limits = TimeLimits(
            self.channels,
            settings.message_time_limit,
            journal=self._journal,
            # This thread's connection: the watchdog ends its session from its own thread.
            db=connections[options.using],
            tasks=self._tasks,
            stored_running=lambda: self._stored.dispatcher.running_label(),
            fanout_running=lambda: self._fanout.dispatcher.running_label(),
        )
        self._tasks.set_watchdog(self._limits.for_tasks)
        self._stored = StoredProcessor(
            using=options.using,
            settings=settings,
            channel_registry=channel_registry,
            journal=self._journal,
            should_stop=lambda: self.stopping,
            clock=clock,
            watchdog=self._limits.watchdog,
            worker=self.name.label,
        )
        self._fanout = FanoutProcessor(channel_registry, settings, options.using)
        self._housekeeping = housekeeping or Housekeeping(settings, options.using, clock)
        self._recycling = Recycling(options.max_messages, options.max_memory)
        self._summary = TrafficSummary(settings.progress_interval, self._oldest_waiting, clock)
        self._shutdown = ShutdownPolicy(
            graceful=self._stop_gracefully,
            immediate=_exit_now,
            deadline=settings.shutdown_timeout,
            overdue=self._shutdown_overdue,
        )
        self._session = ListenSession(
            connect,
            [c.listen_safe_name() for c in self.channels] + self._tasks.doorbells(),
            reconnect_timeout=settings.reconnect_timeout,
            errors=connection_errors(options.using),
            clock=clock,
            should_stop=lambda: self.stopping,
            wake_fds=self._wake_fds(),
            on_disconnect=self._disconnected,
        )
        self._connected_before = False
        self._orphan_report = [True]

    # --- lifecycle -------------------------------------------------------------------

    def run(self) -> int:
        """Listen and process until stopped; return the process exit code."""
        self._shutdown.install()
        names = [c.name() for c in self.channels]
        logger.info(
            "Worker %s started on channels: %s",
            os.getpid(),
            ", ".join(names) or "(none)",
            extra={"action": "started", "channels": names},
        )
        if self.options.metrics_port is not None and not _serve_metrics(self.options):
            return 1
        self._limits.start()
        try:
            self._session.run(self._serve)
        except DatabaseUnavailable:
            return 1
        finally:
            self._shutdown.cancel()
            self._wakeup.close()
            self._limits.stop()
        logger.info(
            "Worker %s stopped: %s processed, %s failed",
            os.getpid(),
            self.total.processed,
            self.total.failed,
            extra={"action": "stopped"},
        )
        return 0

    def request_stop(self) -> None:
        """Ask the worker to stop after the current message (thread- and signal-safe)."""
        self.stopping = True
        self._wakeup.ring()

    def _stop_gracefully(self, signal_name: str) -> None:
        if self._stop_if_orphaned():  # the kernel's signal (see supervisor.run_worker_process)
            return
        logger.info(
            "%s received: finishing the current message, then stopping (%s)",
            signal_name,
            "asked by the supervisor"
            if signal_name == STOP_AFTER_MESSAGE.name
            else "send it again to stop at once",
            extra={"action": "shutting_down"},
        )
        self.request_stop()

    def _shutdown_overdue(self) -> None:
        logger.error(
            "Still busy %.0f s after the stop request (PGPUBSUB_SHUTDOWN_TIMEOUT): exiting; "
            "an unfinished stored message stays stored for another worker",
            self.settings.shutdown_timeout,
            extra={"action": "killed"},
        )
        os._exit(1)

    # --- one connection --------------------------------------------------------------

    def _serve(self, connection: ListenConnection) -> None:
        """Work with ``connection`` until stopped (a lost connection raises out of here)."""
        self._journal.attach(connection)
        self._tasks.attach(connection)
        self._announce_listening()
        if self.options.recover and not self._connected_before:
            self._recover()
        else:
            self._drain_all()
        self._connected_before = True
        next_poll = self.clock.monotonic() + self.settings.poll_interval
        while not self.stopping:
            wake_at = min(
                t
                for t in (next_poll, self._stored.schedule.next_retry(), self._tasks.wake_at())
                if t is not None
            )
            messages = connection.wait(wake_at - self.clock.monotonic(), self._wake_fds())
            self._wakeup.clear()
            self._stop_if_orphaned()
            self._handle(messages)
            if not self.stopping:
                self._tasks.run_due()
            due = self._stored.schedule.due_retries()
            for channel in due:
                self._drain(channel)
            self._stored.look_up_due(due)
            if self.clock.monotonic() >= next_poll:
                connection.ping()
                self._drain_all()
                next_poll = self.clock.monotonic() + self.settings.poll_interval
            self._summary.log_if_due()

    def _announce_listening(self) -> None:
        how = (
            f"by polling every {self.settings.poll_interval:.1f} s (no LISTEN)"
            if self.options.poll_only
            else "with LISTEN"
        )
        logger.info(
            "Listening on %s channel(s) of database %r %s",
            len(self.channels),
            self.options.using,
            how,
            extra={"action": "listening"},
        )
        readiness.announce(
            self.options.ready_file,
            readiness.LISTENING,
            worker=self.options.number,
            channels=[c.name() for c in self.channels],
            poll_only=self.options.poll_only,
        )

    def _disconnected(self) -> None:
        self._journal.detach()
        self._tasks.detach()
        try:
            connections[self.options.using].close()
        except Exception:
            logger.debug("Closing the Django connection failed", exc_info=True)

    def _wake_fds(self) -> Sequence[int]:
        fds = [self._wakeup.fileno]
        parent = multiprocessing.parent_process()
        if parent is not None and parent.sentinel is not None:
            fds.append(parent.sentinel)
        return fds

    def _stop_if_orphaned(self) -> bool:
        """Stop after the current message if the supervisor is gone; return whether it is."""
        parent = multiprocessing.parent_process()
        if parent is None or parent.is_alive():
            return False
        if self.stopping:
            return True
        # Checked from the loop and from the kernel's signal, whose handler can run between
        # any two bytecodes of this one: list.pop() is a single step, so one caller reports.
        try:
            self._orphan_report.pop()
        except IndexError:
            return True
        logger.warning("The supervising process is gone: stopping", extra={"action": "orphaned"})
        self.request_stop()
        return True

    # --- messages --------------------------------------------------------------------

    def _handle(self, messages: list[Message]) -> None:
        if not self.stopping:
            messages = self._tasks.handle(messages)
        woken: dict[type[BaseChannel], None] = {}
        later: dict[type[BaseChannel], None] = {}
        for message in messages:
            channel = self._registry.channel_for(message.channel)
            if channel is None or channel not in self.channels:
                continue
            if channel.lock_notifications:
                if message.payload == DELAYED_DOORBELL:
                    later[channel] = None
                else:
                    woken[channel] = None
            elif not self.stopping:
                self._count_fanout(self._deliver_fanout(channel, message.payload))
        for channel in woken:
            self._drain(channel)
        self._stored.look_up_due(later)

    def _deliver_fanout(self, channel: type[BaseChannel], text: str) -> bool:
        return self._limits.run_fanout(channel, lambda: self._fanout.deliver(channel, text))

    def _drain_all(self) -> None:
        # Once per poll interval, not per message: with CONN_MAX_AGE = 0 (Django's default)
        # this closes the connection, and reconnecting for every wake-up would cost latency.
        # Broken connections are caught by the session, which reconnects.
        close_old_connections()
        for channel in self.lockable:
            if self.stopping:
                return
            self._drain(channel)
        self._stored.look_up_due(self.lockable)
        if not self.stopping:
            self._tasks.drain_all()
        self._housekeeping.run_if_due()

    def _recover(self) -> None:
        """``--recover``: drain everything stored at start, reporting progress."""
        names = [c.listen_safe_name() for c in self.lockable]
        progress = RecoveryProgress(
            queue.count_due(names, using=self.options.using) if names else 0,
            self.settings.progress_interval,
            terminal=sys.stderr if self.options.progress_bar and sys.stderr.isatty() else None,
            clock=self.clock,
        )
        progress.start(len(names))
        for channel in self.lockable:
            self._drain(channel, on_batch=progress.advance_by)
        progress.finish()

    def _drain(
        self, channel: type[BaseChannel], on_batch: Callable[[BatchResult], None] | None = None
    ) -> None:
        """Process ``channel``'s due batches, counting each one as it commits (and retiring
        after the one that reaches a recycling limit)."""

        def after_batch(result: BatchResult) -> None:
            self._record(result)
            if on_batch is not None:
                on_batch(result)

        self._stored.drain(channel, on_batch=after_batch)

    def _record(self, result: BatchResult) -> None:
        self.total.add(result)
        self._summary.add(result.processed, result.failed, result.retried)
        self._retire_if_due()

    def _count_fanout(self, delivered: bool) -> None:
        if delivered:
            self.total.processed += 1
            self._summary.handled += 1
        else:
            self.total.failed += 1
            self._summary.failed += 1
        self._retire_if_due()

    def _stop_before_next_task(self) -> bool:
        """Asked by the task runners before each task: tasks count towards recycling too."""
        self._retire_if_due()
        return self.stopping

    def _retire_if_due(self) -> None:
        """Stop (exit 0, to be replaced) once past ``--max-messages`` or ``--max-memory``
        (messages handled or failed, and tasks run, count alike)."""
        if not self._recycling.enabled or self.stopping:
            return
        taken = self.total.processed + self.total.failed + self._tasks.ran()
        reason = self._recycling.reason(taken)
        if reason is None:
            return
        logger.info(
            "Worker %s retiring: %s; its supervisor starts a fresh process",
            os.getpid(),
            reason,
            extra={"action": "retiring"},
        )
        self.request_stop()

    def _oldest_waiting(self) -> float | None:
        names = [c.listen_safe_name() for c in self.lockable]
        return queue.oldest_due_age(names, using=self.options.using) if names else None


def create_worker(options: WorkerOptions, settings: PgPubSubSettings | None = None) -> Worker:
    """A worker for ``options`` with the real collaborators: the project's registry, a new
    connection to ``options.using`` (one that never LISTENs with ``poll_only``), the clock."""
    name = inflight.WorkerName.for_this_process(WORKER_APPLICATION_NAME)
    settings = settings or get_settings()
    tasks = (
        task_work(
            using=options.using,
            queues=options.task_queues,
            settings=settings,
            worker_id=name.label,
        )
        if options.run_tasks
        else None
    )
    connect = connection_factory(options, name.connection)
    return Worker(options, settings, registry, connect, name=name, tasks=tasks)


def connection_factory(
    options: WorkerOptions, application_name: str | None = None
) -> ConnectionFactory:
    """How a worker with ``options`` opens its connection (named ``application_name``)."""
    if options.poll_only:
        # No LISTEN, but a connection of its own for the in-flight records.
        return lambda: PollingOnly(open_listen_connection(options.using, application_name))
    return lambda: open_listen_connection(options.using, application_name)


def _exit_now(signal_name: str) -> None:
    logger.warning(
        "%s: exiting now",
        "SIGQUIT (the supervisor stops at once)"
        if signal_name == "SIGQUIT"
        else f"Second {signal_name}",
        extra={"action": "killed"},
    )
    os._exit(1)


def _serve_metrics(options: WorkerOptions) -> bool:
    from pgpubsub.metrics import serve_metrics  # optional dependency: imported only here

    port, address = options.metrics_port, options.metrics_address
    assert port is not None
    try:
        serve_metrics(port, address=address, using=options.using)
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
