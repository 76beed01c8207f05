"""A machine-readable record of what ``listen`` processes did: ``listen --ready-file PATH``.

Each event is one JSON object on a line of its own, appended to the file by whichever
process it concerns (``O_APPEND``: the lines of several processes never interleave):

- ``{"event": "worker_started", "pid": ..., "worker": N}``: the supervisor started worker N;
- ``{"event": "listening", "pid": ..., "worker": N, "channels": [...], "poll_only": ...}``:
  a worker listens (after each connect and reconnect) and will take stored messages.

Scripts and tests wait on these lines rather than on log messages written for people.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

#: The event written when a worker listens (after each connect and reconnect).
LISTENING = "listening"
#: The event written by the supervisor when it starts a worker process.
WORKER_STARTED = "worker_started"


def announce(path: str | None, event: str, **fields: Any) -> None:
    """Append ``event`` with ``fields`` (and this process's pid) to ``path``, if given."""
    if path is None:
        return
    record = {"event": event, "pid": os.getpid(), "time": time.time(), **fields}
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """The events written to ``path`` so far, oldest first (none if it does not exist)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    # A line being written is complete only with its newline.
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]
