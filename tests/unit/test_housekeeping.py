"""Housekeeping: pruning handled messages stops when its time is up; periods logged in words."""

from __future__ import annotations

import datetime

import pytest

from pgpubsub import queue
from pgpubsub.conf import PgPubSubSettings
from pgpubsub.housekeeping import Housekeeping, duration_words
from tests.support.fakes import FakeClock

WEEK = datetime.timedelta(days=7)


def test_a_pruning_stops_when_its_time_budget_is_spent(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    statements: list[int] = []

    def prune_a_full_batch(older_than: datetime.timedelta, *, using: str, limit: int) -> int:
        clock.advance(0.4)  # each statement takes 0.4 s
        statements.append(limit)
        return limit

    monkeypatch.setattr(queue, "prune_handled", prune_a_full_batch)
    housekeeping = Housekeeping(PgPubSubSettings(), "default", clock, batch=3, time_budget=1.0)

    assert housekeeping.prune_handled(WEEK) is False
    assert statements == [3, 3, 3]


def test_a_pruning_ends_at_the_first_batch_that_is_not_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deleted = iter([3, 3, 1])
    monkeypatch.setattr(queue, "prune_handled", lambda *args, **kwargs: next(deleted))
    housekeeping = Housekeeping(PgPubSubSettings(), "default", FakeClock(), batch=3)

    assert housekeeping.prune_handled(WEEK) is True


@pytest.mark.parametrize(
    ("duration", "words"),
    [
        (datetime.timedelta(days=7), "7 days"),
        (datetime.timedelta(days=1), "1 day"),
        (datetime.timedelta(hours=36), "36 hours"),
        (datetime.timedelta(minutes=90), "90 minutes"),
        (datetime.timedelta(seconds=1), "1 second"),
        (datetime.timedelta(seconds=2.5), "2.5 seconds"),
    ],
)
def test_the_period_is_logged_in_words(duration: datetime.timedelta, words: str) -> None:
    assert duration_words(duration) == words
