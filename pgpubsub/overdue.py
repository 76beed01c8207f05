"""What a worker does when something it runs outlives its time limit: a stored message, a
fan-out message or a task. The watchdog thread that notices is :mod:`pgpubsub.timelimit`'s.

A callback cannot be interrupted safely from outside, so in every case the worker ends the
database session of its callbacks (a query still running there would keep its locks), leaves
in the database why, and exits with code 4; the supervisor replaces it at once.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any

from pgpubsub import inflight
from pgpubsub.channel import BaseChannel
from pgpubsub.connection import backend_pid
from pgpubsub.shutdown import STOP_AFTER_MESSAGE
from pgpubsub.tasks.work import NoTaskWork
from pgpubsub.timelimit import EXIT_TIME_LIMIT, Overdue, Watchdog, exit_for_time_limit

logger = logging.getLogger(__name__)

RunningLabel = Callable[[], "str | None"]


class TimeLimits:
    """The time limits of one worker process.

    Arguments:
        channels: the worker's channels: the watchdog thread of messages exists only if one of
            them has a limit (``message_time_limit``, or ``PGPUBSUB_MESSAGE_TIME_LIMIT``).
        default: ``PGPUBSUB_MESSAGE_TIME_LIMIT``.
        journal: the worker's in-flight journal (notes why a batch stopped, ends sessions).
        db: the worker's Django connection, whose session runs the callbacks.
        tasks: the worker's tasks, charged when one outlives its limit.
        stored_running: the callback of a stored message running now, for the logs.
        fanout_running: the same for fan-out messages.
    """

    def __init__(
        self,
        channels: Sequence[type[BaseChannel]],
        default: float | None,
        *,
        journal: inflight.Journal,
        db: Any,
        tasks: NoTaskWork,
        stored_running: RunningLabel,
        fanout_running: RunningLabel,
    ) -> None:
        self._default = default
        self._journal = journal
        self._db = db
        self._tasks = tasks
        self._fanout_running = fanout_running
        self._task_watchdog: Watchdog | None = None
        #: Watches stored and fan-out messages; None when no channel has a limit (no thread).
        self.watchdog: Watchdog | None = None
        if any(channel.time_limit(default) is not None for channel in channels):
            supervised = multiprocessing.parent_process() is not None
            self.watchdog = Watchdog(
                self._message_overdue,
                running_callback=stored_running,
                # Where the kernel does not signal a worker whose supervisor died (not Linux).
                on_orphaned=(
                    (lambda: os.kill(os.getpid(), STOP_AFTER_MESSAGE)) if supervised else None
                ),
            )

    def start(self) -> None:
        if self.watchdog is not None:
            self.watchdog.start()

    def stop(self) -> None:
        for watchdog in (self.watchdog, self._task_watchdog):
            if watchdog is not None:
                watchdog.stop()

    def run_fanout(self, channel: type[BaseChannel], deliver: Callable[[], bool]) -> bool:
        """``deliver()`` a fan-out message of ``channel`` under its time limit."""
        limit = channel.time_limit(self._default)
        if limit is None or self.watchdog is None:
            return deliver()
        self.watchdog.arm(
            0,
            limit,
            channel.name(),
            None,
            on_overdue=self._fanout_overdue,
            running_callback=self._fanout_running,
        )
        try:
            return deliver()
        finally:
            self.watchdog.disarm()

    def for_tasks(self) -> Watchdog:
        """The watchdog of tasks, started when the first task with a limit runs."""
        if self._task_watchdog is None:
            self._task_watchdog = Watchdog(self._task_overdue)
            self._task_watchdog.start()
        return self._task_watchdog

    # --- on the watchdog's thread ---------------------------------------------------------

    def _message_overdue(self, overdue: Overdue) -> None:
        """Leave why in the batch's record, end the batch's session and exit; the next worker
        that claims the message charges it an attempt."""
        logger.error(
            "Notification %s of channel %s %s: stopping this worker (exit code %s); the "
            "message will be charged a failed attempt and the rest of its batch run again",
            overdue.notification_id,
            overdue.channel,
            overdue.reason(),
            EXIT_TIME_LIMIT,
            extra={
                "action": "time_limit",
                "channel": overdue.channel,
                "notification_id": overdue.notification_id,
            },
        )

        def note_why() -> None:
            if overdue.record_id is not None:
                self._journal.stopped(overdue.record_id, overdue.notification_id, overdue.reason())

        self._end_and_exit(before=note_why)

    def _fanout_overdue(self, overdue: Overdue) -> None:
        """A fan-out message has no row to charge: end the callbacks' session and exit."""
        logger.error(
            "A fan-out message of channel %s %s: stopping this worker (exit code %s); fan-out "
            "messages are delivered at most once, so it is not run again",
            overdue.channel,
            overdue.reason(),
            EXIT_TIME_LIMIT,
            extra={"action": "time_limit", "channel": overdue.channel},
        )
        self._end_and_exit()

    def _task_overdue(self, overdue: Overdue) -> None:
        """End the task's session (an atomic task's transaction with it), charge the task a
        failed attempt, and exit."""
        logger.error(
            "Task %s (%s) %s: stopping this worker (exit code %s); the task is charged a failed "
            "attempt",
            overdue.notification_id,
            overdue.channel,
            overdue.reason(),
            EXIT_TIME_LIMIT,
            extra={"action": "time_limit", "task_id": overdue.notification_id},
        )
        self._end_and_exit(after=lambda: self._tasks.fail_overdue(overdue))

    def _end_and_exit(
        self,
        before: Callable[[], object] = lambda: None,
        after: Callable[[], object] = lambda: None,
    ) -> None:
        """``before()``, end the callbacks' session, ``after()``, then exit with code 4. What
        fails in the database is logged: the worker's sessions end with it anyway, and the
        next claimant charges what was running."""
        try:
            before()
            session = backend_pid(self._db)
            if session is not None:
                self._journal.end_session(session)
            after()
        except Exception:
            logger.warning("Could not record the time limit in the database", exc_info=True)
        exit_for_time_limit()


__all__ = ["TimeLimits"]
