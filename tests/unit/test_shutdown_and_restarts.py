"""The shutdown policy shared by worker and supervisor, and the supervisor's restart delays."""

from __future__ import annotations

import signal
import threading

from pgpubsub.shutdown import ShutdownPolicy
from pgpubsub.supervisor import _Slot
from tests.support.fakes import FakeClock


def policy() -> tuple[ShutdownPolicy, list[str]]:
    calls: list[str] = []
    return (
        ShutdownPolicy(
            graceful=lambda name: calls.append(f"graceful {name}"),
            immediate=lambda name: calls.append(f"immediate {name}"),
        ),
        calls,
    )


def test_the_first_stop_signal_is_graceful_and_the_second_immediate() -> None:
    shutdown, calls = policy()

    shutdown.on_signal(signal.SIGTERM)
    shutdown.on_signal(signal.SIGINT)

    assert calls == ["graceful SIGTERM", "immediate SIGINT"]
    assert shutdown.requested


def test_the_supervisors_stop_request_does_not_count_as_a_first_sigterm() -> None:
    # systemd's SIGTERM to the whole control group and the supervisor's SIGUSR1, either way
    # round: one graceful stop, never an immediate one.
    for order in ([signal.SIGUSR1, signal.SIGTERM], [signal.SIGTERM, signal.SIGUSR1]):
        shutdown, calls = policy()
        for signum in order:
            shutdown.on_signal(signum)
        shutdown.on_signal(signal.SIGUSR1)
        assert calls == [f"graceful {order[0].name}"]

    shutdown.on_signal(signal.SIGTERM)
    assert calls[-1] == "immediate SIGTERM"


def test_sigquit_from_the_supervisor_stops_at_once() -> None:
    shutdown, calls = policy()
    shutdown.on_signal(signal.SIGUSR1)
    shutdown.on_signal(signal.SIGQUIT)
    assert calls == ["graceful SIGUSR1", "immediate SIGQUIT"]


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
