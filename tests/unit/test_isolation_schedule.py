"""Which mode a channel's batches run in, and when the retries a worker scheduled are due."""

from __future__ import annotations

from pgpubsub.stored import ISOLATION_PERIOD, IsolationSchedule, Mode
from tests.support.fakes import FakeClock
from tests.unit.channels_for_tests import Bulletin, Chore


def test_batches_run_optimistically_until_one_is_rolled_back() -> None:
    schedule = IsolationSchedule(FakeClock())

    assert schedule.mode(Chore) is Mode.OPTIMISTIC


def test_after_a_rollback_the_channel_runs_isolated_for_sixty_seconds() -> None:
    clock = FakeClock()
    schedule = IsolationSchedule(clock)

    schedule.isolate(Chore)
    clock.advance(59.9)
    assert ISOLATION_PERIOD == 60.0  # the documented period
    assert schedule.mode(Chore) is Mode.ISOLATED
    assert schedule.mode(Bulletin) is Mode.OPTIMISTIC  # per channel

    clock.advance(0.1)
    assert schedule.mode(Chore) is Mode.OPTIMISTIC


def test_the_earliest_retry_is_the_next_wake_up_and_is_handed_out_once_due() -> None:
    clock = FakeClock()
    schedule = IsolationSchedule(clock)
    assert schedule.next_retry() is None

    schedule.retry_scheduled(Chore, 8.0)
    schedule.retry_scheduled(Chore, 2.0)
    schedule.retry_scheduled(Bulletin, 4.0)

    assert schedule.next_retry() == clock.now + 2.05  # a margin: the database's clock decides
    clock.advance(2.0)
    assert schedule.due_retries() == []
    clock.advance(0.05)
    assert schedule.due_retries() == [Chore]
    assert schedule.due_retries() == []
    clock.advance(2.0)
    assert schedule.due_retries() == [Bulletin]
    assert schedule.next_retry() is not None  # Chore's other retry, not forgotten
    clock.advance(4.0)
    assert schedule.due_retries() == [Chore]
    assert schedule.next_retry() is None
