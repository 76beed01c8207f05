"""The shutdown policy that the worker and the supervisor share, and the signals it handles.

- SIGTERM or SIGINT (from a person or a process manager): the first asks for a graceful
  stop (a worker finishes its current message; the supervisor stops its workers and waits);
  the second, whenever it comes, for a stop at once.
- SIGUSR1 (what a supervisor sends its workers): a graceful stop, however often it comes.
  Because the supervisor does not forward SIGTERM itself, a worker that also receives
  systemd's SIGTERM (``KillMode=control-group``) sees one SIGTERM, not two.
- SIGQUIT (what a supervisor sends its workers after a second SIGTERM): stop at once.

Until a process installs its policy, these signals are blocked (:func:`block_signals`):
one that arrives while a process starts waits for the handler instead of killing the process
(exit code 143 instead of a graceful stop).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

logger = logging.getLogger(__name__)

#: The signals that people and process managers send to stop a ``listen`` process.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: Sent by a supervisor to its workers: finish the current message, then exit.
STOP_AFTER_MESSAGE = signal.SIGUSR1
#: Sent by a supervisor to its workers: exit at once.
STOP_NOW = signal.SIGQUIT
#: Every signal a :class:`ShutdownPolicy` handles.
HANDLED_SIGNALS = (*STOP_SIGNALS, STOP_AFTER_MESSAGE, STOP_NOW)


def block_signals(extra: tuple[signal.Signals, ...] = ()) -> set[int | signal.Signals]:
    """Hold back the handled signals (and ``extra``) until a policy is installed.

    Child processes inherit the blocked set, so a signal sent to a starting worker waits for
    its handler. Returns the previous mask, for :func:`restore_signals`.
    """
    return signal.pthread_sigmask(signal.SIG_BLOCK, {*HANDLED_SIGNALS, *extra})


def restore_signals(mask: set[int | signal.Signals]) -> None:
    """Set the mask that :func:`block_signals` returned (pending signals are delivered)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


class ShutdownPolicy:
    """Turns stop signals into a graceful stop, then an immediate one.

    Arguments:
        graceful: called with the signal's name on the first stop request.
        immediate: called with the signal's name on the second SIGTERM/SIGINT, or SIGQUIT.
        deadline: with ``overdue``, seconds after the first stop request at which ``overdue``
            is called (on a timer thread) unless :meth:`cancel` was called first.

    Example::

        policy = ShutdownPolicy(graceful=lambda name: worker.request_stop(),
                                immediate=lambda name: os._exit(1))
        policy.install()
    """

    def __init__(
        self,
        *,
        graceful: Callable[[str], None],
        immediate: Callable[[str], None],
        deadline: float | None = None,
        overdue: Callable[[], None] = lambda: None,
    ) -> None:
        self._graceful = graceful
        self._immediate = immediate
        self._deadline = deadline
        self._overdue = overdue
        self._stop_signals = 0
        self.requested = False
        #: Calls ``overdue`` at the deadline, once started by the first stop request.
        self.timer: threading.Timer | None = None

    def install(self) -> None:
        """Handle the signals with this policy, then let them in (in the main thread only:
        elsewhere Python cannot install signal handlers, and the embedding code owns them)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self.on_signal)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)

    def on_signal(self, signum: int, frame: FrameType | None = None) -> None:
        """Apply the policy to one received signal."""
        name = signal.Signals(signum).name
        if signum in STOP_SIGNALS:
            self._stop_signals += 1
        if signum == STOP_NOW or self._stop_signals > 1:
            self._immediate(name)
        elif not self.requested:
            self.requested = True
            self._graceful(name)
            if self._deadline is not None:
                self.timer = threading.Timer(self._deadline, self._overdue)
                self.timer.daemon = True
                self.timer.start()

    def cancel(self) -> None:
        """The stop is done: the deadline no longer applies."""
        if self.timer is not None:
            self.timer.cancel()
