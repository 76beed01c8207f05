"""Worker recycling: a worker retires after so many messages, or past so much memory.

A listener that leaks (a cache that only grows, a library that keeps every response) makes its
worker grow until the out-of-memory killer ends it, in the middle of a batch. ``listen
--max-messages N`` and ``--max-memory MB`` retire a worker before that, between two batches:
it finishes the batch it runs, commits, exits with code 0, and its supervisor starts a fresh
process at once. Nothing is lost or handled twice: a retiring worker stops as after SIGTERM.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_MB = 1024 * 1024


def resident_memory_mb() -> float:
    """This process's resident memory in MB: the current size on Linux, the peak elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Kilobytes on Linux, bytes on macOS.
        return peak / _MB if sys.platform == "darwin" else peak / 1024
    return pages * os.sysconf("SC_PAGE_SIZE") / _MB


@dataclass(frozen=True)
class Recycling:
    """When a worker retires: after ``max_messages`` messages (handled or failed attempts),
    or once its resident memory reaches ``max_memory`` MB; None: never for that reason.

    Example::

        recycling = Recycling(max_messages=10_000, max_memory=500)
        reason = recycling.reason(handled=worker.total.processed)
    """

    max_messages: int | None = None
    max_memory: int | None = None
    memory: Callable[[], float] = resident_memory_mb

    @property
    def enabled(self) -> bool:
        return self.max_messages is not None or self.max_memory is not None

    def reason(self, messages: int) -> str | None:
        """Why a worker that took ``messages`` messages should retire now; None: it should not."""
        if self.max_messages is not None and messages >= self.max_messages:
            return f"it took {messages} messages (--max-messages {self.max_messages})"
        if self.max_memory is not None:
            used = self.memory()
            if used >= self.max_memory:
                return f"it uses {used:.0f} MB of memory (--max-memory {self.max_memory})"
        return None
