"""The shutdown policy shared by worker and supervisor, and the supervisor's restart delays."""

from __future__ import annotations

import signal
import threading

from pgpubsub.shutdown import ShutdownPolicy
from pgpubsub.supervisor import _Slot
from tests.support.fakes import FakeClock


def policy(clock: FakeClock, window: float = 0.0) -> tuple[ShutdownPolicy, list[str]]:
    calls: list[str] = []
    return (
        ShutdownPolicy(
            graceful=lambda name: calls.append(f"graceful {name}"),
            immediate=lambda name: calls.append(f"immediate {name}"),
            ignore_repeats_within=window,
            clock=clock,
        ),
        calls,
    )


def test_the_first_stop_signal_is_graceful_and_the_second_immediate() -> None:
    clock = FakeClock()
    shutdown, calls = policy(clock)

    shutdown.on_signal(signal.SIGTERM)
    shutdown.on_signal(signal.SIGINT)

    assert calls == ["graceful SIGTERM", "immediate SIGINT"]
    assert shutdown.requested


def test_a_second_signal_within_the_window_is_the_same_request_delivered_twice() -> None:
    clock = FakeClock()
    shutdown, calls = policy(clock, window=1.0)

    shutdown.on_signal(signal.SIGTERM)
    clock.advance(0.9)
    shutdown.on_signal(signal.SIGTERM)
    assert calls == ["graceful SIGTERM"]

    clock.advance(0.1)
    shutdown.on_signal(signal.SIGTERM)
    assert calls == ["graceful SIGTERM", "immediate SIGTERM"]


def test_a_worker_crashing_again_and_again_is_restarted_later_each_time() -> None:
    clock = FakeClock()
    slot = _Slot(0, started_at=clock.now)

    delays = []
    for _ in range(8):
        clock.advance(0.2)  # the worker dies at once
        delays.append(slot.schedule_restart(clock.now))
        clock.advance(delays[-1])
        slot.started_at = clock.now

    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert slot.restart_at == clock.now


def test_a_worker_that_ran_a_while_is_restarted_at_once_and_the_backoff_starts_over() -> None:
    clock = FakeClock()
    slot = _Slot(0, started_at=clock.now)
    clock.advance(1)
    assert slot.schedule_restart(clock.now) == 1.0
    slot.started_at = clock.now

    clock.advance(11)  # healthy
    assert slot.schedule_restart(clock.now) == 0.0
    slot.started_at = clock.now
    clock.advance(1)
    assert slot.schedule_restart(clock.now) == 1.0


def test_the_deadline_of_a_graceful_stop_calls_overdue_unless_cancelled() -> None:
    overdue = threading.Event()
    shutdown = ShutdownPolicy(
        graceful=lambda name: None, immediate=lambda name: None, deadline=0.01, overdue=overdue.set
    )
    shutdown.on_signal(signal.SIGTERM)
    assert overdue.wait(timeout=30), "the deadline passed without a call"

    cancelled = threading.Event()
    shutdown = ShutdownPolicy(
        graceful=lambda name: None,
        immediate=lambda name: None,
        deadline=3600,
        overdue=cancelled.set,
    )
    shutdown.on_signal(signal.SIGTERM)
    shutdown.cancel()
    assert shutdown.timer is not None
    shutdown.timer.join(timeout=30)
    assert not cancelled.is_set()
