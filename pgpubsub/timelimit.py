"""The per-message time limit: a watchdog thread that ends a worker whose callback hangs.

A callback cannot be interrupted safely from outside (it may hold locks, be inside C code,
or wait in ``time.sleep``), so a worker whose message runs past its limit is replaced: the
watchdog notes in the batch's in-flight record which message was running and why the worker
is stopped (:meth:`pgpubsub.inflight.Journal.stopped`), ends the batch's database session
(whose locks a query still running would otherwise hold), and exits the process with
:data:`EXIT_TIME_LIMIT`. The supervisor starts a successor at once, and the next worker that
claims the batch charges the message a failed attempt with that reason, as it charges a
message whose worker was killed (:mod:`pgpubsub.inflight`); the rest of the batch was rolled
back and runs again, once.

The limit is ``PGPUBSUB_MESSAGE_TIME_LIMIT`` (default None: no limit), or a channel's
``message_time_limit``. The watchdog is a thread: it runs while the main thread sleeps,
waits for the database or the network, or runs C code that releases the GIL (nearly all
blocking C code does). The same thread notices that the supervisor is gone while a message
runs, where the operating system cannot tell the worker (see :func:`stop_with_parent`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: The exit code of a worker stopped by its watchdog: the supervisor replaces it at once.
EXIT_TIME_LIMIT = 4

#: How often, at most, an armed watchdog looks whether the supervisor is still there.
_PARENT_CHECK_INTERVAL = 1.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Overdue:
    """A message whose callbacks ran past their limit."""

    notification_id: int
    limit: float
    #: The channel's dotted path.
    channel: str
    #: The in-flight record of its batch, if one was written.
    record_id: int | None
    #: The dotted path of the callback that was running, when known.
    callback: str | None

    def reason(self) -> str:
        """The failure, as stored in the message's ``last_error`` and logged."""
        where = f" in {self.callback}" if self.callback else ""
        return f"exceeded its time limit of {self.limit:g} s{where}"


@dataclass(frozen=True)
class _Armed:
    deadline: float
    notification_id: int
    limit: float
    channel: str
    record_id: int | None
    #: Overrides of the watchdog's own, for this armed run only (fan-out messages, tasks).
    on_overdue: Callable[[Overdue], None] | None = None
    running_callback: Callable[[], str | None] | None = None


class Watchdog:
    """Calls ``on_overdue`` (on its own thread) when an armed message outlives its limit.

    The worker's main thread calls :meth:`arm` before a message's callbacks and
    :meth:`disarm` after them: two attribute writes and an uncontended lock, no thread switch
    (the thread sleeps until the earliest deadline it knows of, then looks again).

    Arguments:
        on_overdue: ends the worker; called at most once.
        running_callback: the dotted path of the callback running now, if known.
        on_orphaned: called once if the parent process goes away while a message runs.
        clock: a monotonic clock.
    """

    def __init__(
        self,
        on_overdue: Callable[[Overdue], None],
        *,
        running_callback: Callable[[], str | None] = lambda: None,
        on_orphaned: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_overdue = on_overdue
        self._running_callback = running_callback
        self._on_orphaned = on_orphaned
        self._clock = clock
        self._parent = os.getppid()
        self._armed: _Armed | None = None
        self._idle = False
        self._stopped = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._watch, name="pgpubsub-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()

    def arm(
        self,
        notification_id: int,
        limit: float,
        channel: str,
        record_id: int | None,
        *,
        on_overdue: Callable[[Overdue], None] | None = None,
        running_callback: Callable[[], str | None] | None = None,
    ) -> None:
        """A message's callbacks start now and may run ``limit`` seconds. ``on_overdue`` and
        ``running_callback``, if given, replace the watchdog's own for this message."""
        armed = _Armed(
            self._clock() + limit,
            notification_id,
            limit,
            channel,
            record_id,
            on_overdue,
            running_callback,
        )
        with self._wake:
            self._armed = armed
            if self._idle:
                self._wake.notify()

    def disarm(self) -> None:
        """The armed message's callbacks ended (the thread is not woken for that)."""
        self._armed = None

    def _watch(self) -> None:
        while True:
            with self._wake:
                if self._stopped:
                    return
                armed = self._armed
                if armed is None:
                    self._idle = True
                    self._wake.wait()
                    self._idle = False
                    continue
                remaining = armed.deadline - self._clock()
                if remaining > 0:
                    wait = remaining
                    if self._on_orphaned is not None:
                        wait = min(wait, _PARENT_CHECK_INTERVAL)
                    self._wake.wait(wait)
                    self._check_parent()
                    continue
                if self._armed is not armed:
                    continue  # it ended just now
            on_overdue = armed.on_overdue or self._on_overdue
            running_callback = armed.running_callback or self._running_callback
            on_overdue(
                Overdue(
                    armed.notification_id,
                    armed.limit,
                    armed.channel,
                    armed.record_id,
                    running_callback(),
                )
            )
            return

    def _check_parent(self) -> None:
        if self._on_orphaned is not None and os.getppid() != self._parent:
            on_orphaned, self._on_orphaned = self._on_orphaned, None
            on_orphaned()


def stop_with_parent(signum: int) -> bool:
    """Have the kernel send ``signum`` to this process when its parent dies (Linux).

    A worker whose supervisor was killed with SIGKILL then stops as if the supervisor had
    asked it to, even in the middle of a message. Returns False where this is not available
    (the worker then notices its orphaning between messages, and its watchdog during one).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    return True


def signal_self_if_orphaned(parent_pid: int | None, signum: int) -> None:
    """Send ``signum`` to this process if its parent is no longer ``parent_pid`` (it died
    before :func:`stop_with_parent` took effect)."""
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), signum)


def exit_for_time_limit() -> None:
    """End this process at once (from the watchdog thread, while the main one hangs)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_TIME_LIMIT)


__all__ = [
    "EXIT_TIME_LIMIT",
    "Overdue",
    "Watchdog",
    "exit_for_time_limit",
    "signal_self_if_orphaned",
    "stop_with_parent",
]
