"""A self-pipe: wakes a process blocked in ``select`` when a signal or a stop request arrives."""

from __future__ import annotations

import contextlib
import os
import signal


class Wakeup:
    """The read end goes into ``select``; ``ring()`` makes it readable, ``clear()`` resets it."""

    def __init__(self) -> None:
        self.fileno, self._write_end = os.pipe()
        os.set_blocking(self.fileno, False)
        os.set_blocking(self._write_end, False)

    def ring(self) -> None:
        """Wake the waiter (safe in a signal handler; a full pipe is already ringing)."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write_end, b"!")

    def ring_on_signals(self) -> None:
        """Have the interpreter ring on every signal, before any Python handler runs."""
        signal.set_wakeup_fd(self._write_end, warn_on_full_buffer=False)

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fileno, 512):
                pass

    def close(self) -> None:
        os.close(self.fileno)
        os.close(self._write_end)
