"""Summaries of worker profiles: cProfile per message, and py-spy's sampled stacks.

Also runnable on saved profiles: ``python benchmarks/profiles.py DIR [MESSAGES]``.
"""

from __future__ import annotations

import pstats
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# Where a worker waits for a NOTIFY: idle, not work.
_IDLE_FUNCTIONS = ("<built-in method select.select>", "<method 'poll' of 'select.epoll' objects>")


def _idle(leaf: str) -> bool:
    """A sample whose innermost Python frame is the LISTEN connection's ``wait``."""
    name, _, where = leaf.partition(" (")
    return name.endswith(".wait") and where.startswith("pgpubsub/connection.py")


def _where(function: tuple[str, int, str]) -> str:
    filename, line, name = function
    for marker in ("site-packages/", "/pgpubsub/", "/benchmarks/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            if marker != "site-packages/":
                filename = marker.strip("/") + "/" + filename
            break
    return f"{name} ({filename}:{line})" if line else name


def cprofile_summary(directory: Path, messages: int, top: int = 25) -> str:
    """The costliest functions of every ``*.prof`` in ``directory``, per handled message."""
    files = sorted(str(path) for path in directory.glob("*.prof"))
    if not files:
        return "  (no profiles: did the workers exit cleanly?)"
    stats = pstats.Stats(*files)
    table = {
        function: timing
        for function, timing in stats.stats.items()  # type: ignore[attr-defined]
        if function[2] not in _IDLE_FUNCTIONS
    }
    per_message = max(messages, 1)

    def line(function: tuple[str, int, str], timing: tuple[Any, ...]) -> str:
        _, calls, tottime, cumtime, _ = timing
        return (
            f"  {tottime / per_message * 1e6:>11.1f} {cumtime / per_message * 1e6:>10.1f} "
            f"{calls / per_message:>9.2f}  {_where(function)}"
        )

    lines = [
        f"  {len(files)} worker profile(s), {messages} messages handled; waits for a NOTIFY "
        "(select) left out; cumulative times of the loop functions include them",
        f"  {'self us/msg':>11} {'cum us/msg':>10} {'calls/msg':>9}  function",
    ]
    by_self = sorted(table.items(), key=lambda item: item[1][2], reverse=True)
    lines += [line(function, timing) for function, timing in by_self[:top]]
    lines.append("  by cumulative time (pgpubsub, benchapp, django.db):")
    ours = [
        item
        for item in table.items()
        if any(part in item[0][0] for part in ("/pgpubsub/", "/benchapp/", "django/db/"))
    ]
    by_cumulative = sorted(ours, key=lambda item: item[1][3], reverse=True)
    lines += [line(function, timing) for function, timing in by_cumulative[:top]]
    return "\n".join(lines)


def _frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rpartition(" ")
    return stack.split(";"), int(count)


def _short(frame: str) -> str:
    for marker in ("site-packages/", "/work/main/"):
        if marker in frame:
            name, _, rest = frame.partition(" (")
            return f"{name} ({rest.split(marker, 1)[1]}"
    return frame


def py_spy_summary(directory: Path, label: str, top: int = 20) -> str:
    """Self and inclusive shares of the busy samples in ``directory/label-*.txt``."""
    files = sorted(directory.glob(f"{label}-*.txt"))
    if not files:
        return ""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    busy = idle = 0
    for path in files:
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            frames, count = _frames(line)
            frames = [_short(frame) for frame in frames]
            if _idle(frames[-1]):
                idle += count
                continue
            busy += count
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
    if not busy:
        return "  (no busy samples)"
    lines = [
        f"  {len(files)} worker(s): {busy} busy samples, {idle} idle (waiting for NOTIFY)",
        "  self % of busy samples:",
    ]
    lines += [f"  {count / busy:6.1%}  {frame}" for frame, count in own.most_common(top)]
    lines.append("  inclusive % of busy samples:")
    lines += [f"  {count / busy:6.1%}  {frame}" for frame, count in inclusive.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    target = Path(sys.argv[1])
    if list(target.glob("*.prof")):
        print(cprofile_summary(target, int(sys.argv[2]) if len(sys.argv) > 2 else 1))
    else:
        labels = {path.name.rsplit("-", 1)[0] for path in target.glob("*.txt")}
        for name in sorted(labels):
            print(f"{name}:")
            print(py_spy_summary(target, name))
