"""Time as the worker and the supervisor see it: read, and waited for.

Passed in rather than called directly, so that the unit tests run the worker loop, its
reconnect backoff and its shutdown on a fake clock, in milliseconds.
"""

from __future__ import annotations

import select
import time
from collections.abc import Sequence
from typing import Protocol


class Clock(Protocol):
    """A monotonic clock that can wait for a file descriptor to become readable."""

    def monotonic(self) -> float:
        """Seconds since an arbitrary start; never goes back."""
        ...

    def wait(self, seconds: float, fds: Sequence[int] = ()) -> None:
        """Wait ``seconds``, or until one of ``fds`` is readable (a wake-up pipe)."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``select``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, seconds: float, fds: Sequence[int] = ()) -> None:
        select.select(list(fds), [], [], max(seconds, 0.0))


SYSTEM_CLOCK = SystemClock()
