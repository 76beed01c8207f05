"""The progress of ``listen --recover``: log lines on an interval, a bar on a terminal."""

from __future__ import annotations

import io
import logging

import pytest

from pgpubsub.progress import RecoveryProgress


def test_progress_bar_is_redrawn_on_one_line_and_ends_full() -> None:
    terminal = io.StringIO()
    progress = RecoveryProgress(1000, interval=3600, terminal=terminal)
    progress._BAR_REFRESH = 3600  # type: ignore[misc]  # deterministic: no redraw but the first

    progress.advance(250)
    progress.advance(750)
    progress.finish()

    first, last = terminal.getvalue().split("\r")[1:]
    assert first.startswith("Recovery [########......................]  25% 250/1000 ")
    assert last.startswith("Recovery [##############################] 100% 1000/1000 ")
    assert last.endswith("0 s left\x1b[K\n")
    assert progress.done == 1000


def test_progress_log_line_clears_the_bar_before_it_is_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    terminal = io.StringIO()
    progress = RecoveryProgress(200, interval=0, terminal=terminal)

    with caplog.at_level(logging.INFO, logger="pgpubsub.progress"):
        progress.advance(100)

    assert [record.getMessage().split(",")[0] for record in caplog.records] == [
        "Recovery: 100/200 done"
    ]
    assert caplog.records[0].action == "recover_progress"  # type: ignore[attr-defined]
    assert terminal.getvalue().startswith("\r\x1b[K\rRecovery [")


def test_without_a_terminal_progress_is_logged_only(caplog: pytest.LogCaptureFixture) -> None:
    progress = RecoveryProgress(0, interval=0)

    with caplog.at_level(logging.INFO, logger="pgpubsub.progress"):
        progress.advance(0)
        progress.finish()

    assert [record.getMessage() for record in caplog.records] == [
        "Recovery: 0/0 done, 0/s, about unknown left",
        "Recovery finished: 0 notification(s) in 0.0 s",
    ]
