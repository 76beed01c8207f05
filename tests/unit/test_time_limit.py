"""The per-message time limit: a channel's own limit, checked when the class is defined, and
the watchdog that calls for the worker's end when a message outlives it."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest

from pgpubsub import Channel, ChannelDefinitionError, TriggerChannel
from pgpubsub.timelimit import Overdue, Watchdog
from testapp.models import Author


def test_a_channel_without_its_own_limit_has_the_setting() -> None:
    @dataclass
    class Report(Channel):
        number: int
        lock_notifications = True

    assert Report.time_limit(30.0) == 30.0
    assert Report.time_limit(None) is None


def test_a_channel_limit_overrides_the_setting_and_none_lifts_it() -> None:
    @dataclass
    class Quick(Channel):
        number: int
        lock_notifications = True
        message_time_limit = 2

    @dataclass
    class Unlimited(Quick):
        message_time_limit = None

    @dataclass
    class Inherits(Quick):
        pass

    assert Quick.time_limit(30.0) == 2.0
    assert Unlimited.time_limit(30.0) is None
    assert Inherits.time_limit(30.0) == 2.0


def test_a_trigger_channel_takes_a_limit_too() -> None:
    @dataclass
    class Authors(TriggerChannel):
        model = Author
        lock_notifications = True
        message_time_limit = 0.5

    assert Authors.time_limit(None) == 0.5


@pytest.mark.parametrize("wrong", [0, -1, "30", True, float("inf"), float("nan"), [30]])
def test_a_wrong_limit_is_refused_when_the_channel_is_defined(wrong: Any) -> None:
    with pytest.raises(ChannelDefinitionError) as error:

        @dataclass
        class Report(Channel):
            number: int
            lock_notifications = True
            message_time_limit = wrong

    assert "message_time_limit of channel" in str(error.value)
    assert "Report must be a number of seconds greater than 0, or None" in str(error.value)


def test_the_watchdog_reports_a_message_that_outlives_its_limit() -> None:
    reported: list[Overdue] = []
    fired = threading.Event()

    def on_overdue(overdue: Overdue) -> None:
        reported.append(overdue)
        fired.set()

    watchdog = Watchdog(on_overdue, running_callback=lambda: "shop.listeners.ship")
    watchdog.start()
    try:
        watchdog.arm(7, 10.0, "shop.channels.Orders", 3)
        watchdog.disarm()  # this one ended in time
        watchdog.arm(8, 0.05, "shop.channels.Orders", 3)
        assert fired.wait(5)
    finally:
        watchdog.stop()

    assert reported == [Overdue(8, 0.05, "shop.channels.Orders", 3, "shop.listeners.ship")]
    assert reported[0].reason() == "exceeded its time limit of 0.05 s in shop.listeners.ship"


def test_a_disarmed_watchdog_does_not_fire() -> None:
    fired = threading.Event()
    watchdog = Watchdog(lambda overdue: fired.set())
    watchdog.start()
    try:
        watchdog.arm(1, 0.05, "shop.channels.Orders", None)
        watchdog.disarm()
        # The deadline passes while disarmed; a later message with a long limit is armed.
        watchdog.arm(2, 60.0, "shop.channels.Orders", None)
        assert not fired.wait(0.3)
    finally:
        watchdog.stop()
