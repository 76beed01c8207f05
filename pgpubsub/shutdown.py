"""The shutdown policy that the worker and the supervisor share.

First SIGTERM or SIGINT: a graceful stop (a worker finishes its current message; the
supervisor forwards the signal and waits). A second one: stop at once. A second signal
within ``ignore_repeats_within`` seconds of the first is the same request delivered twice
(systemd signals the whole control group and the supervisor forwards it too) and is ignored.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from pgpubsub.clock import SYSTEM_CLOCK, Clock

logger = logging.getLogger(__name__)

#: The signals that ask a ``listen`` process to stop.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ShutdownPolicy:
    """Turns stop signals into a graceful stop, then an immediate one.

    Arguments:
        graceful: called with the signal's name on the first stop signal.
        immediate: called with the signal's name on a later one.
        ignore_repeats_within: seconds after the first signal during which another is
            ignored (0: none is).
        deadline: with ``overdue``, seconds after the first signal at which ``overdue`` is
            called (on a timer thread) unless :meth:`cancel` was called first.

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
        ignore_repeats_within: float = 0.0,
        deadline: float | None = None,
        overdue: Callable[[], None] = lambda: None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._graceful = graceful
        self._immediate = immediate
        self._ignore_repeats_within = ignore_repeats_within
        self._deadline = deadline
        self._overdue = overdue
        self._clock = clock
        self.requested_at: float | None = None
        #: Calls ``overdue`` at the deadline, once started by the first signal.
        self.timer: threading.Timer | None = None

    @property
    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return self.requested_at is not None

    def install(self) -> None:
        """Handle SIGTERM and SIGINT with this policy (in the main thread only: elsewhere
        Python cannot install signal handlers, and the embedding code owns them)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.on_signal)

    def on_signal(self, signum: int, frame: FrameType | None = None) -> None:
        """Apply the policy to one received signal."""
        name = signal.Signals(signum).name
        now = self._clock.monotonic()
        if self.requested_at is None:
            self.requested_at = now
            self._graceful(name)
            if self._deadline is not None:
                self.timer = threading.Timer(self._deadline, self._overdue)
                self.timer.daemon = True
                self.timer.start()
        elif now - self.requested_at >= self._ignore_repeats_within:
            self._immediate(name)

    def cancel(self) -> None:
        """The stop is done: the deadline no longer applies."""
        if self.timer is not None:
            self.timer.cancel()
