"""The worker loop against a scripted connection and a fake clock: reconnect, backoff,
give-up, polling and shutdown, each in milliseconds and without a database."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator

import pytest

from pgpubsub.conf import PgPubSubSettings
from pgpubsub.connection import Message
from pgpubsub.housekeeping import NoHousekeeping
from pgpubsub.options import WorkerOptions
from pgpubsub.registry import ChannelRegistry, Listener
from pgpubsub.shutdown import HANDLED_SIGNALS
from pgpubsub.worker import Worker
from tests.support.fakes import QUIET, FakeClock, FakeServer, ScriptedConnection, lost
from tests.unit.channels_for_tests import Bulletin

POLL_INTERVAL = 5.0
RECONNECT_TIMEOUT = 30.0


@pytest.fixture(autouse=True)
def keep_signal_handlers() -> Iterator[None]:
    """Worker.run() installs its handlers in the main thread: give pytest its own back."""
    saved = {signum: signal.getsignal(signum) for signum in HANDLED_SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_worker(
    server: FakeServer, clock: FakeClock, reconnect_timeout: float = RECONNECT_TIMEOUT
) -> Worker:
    channels = ChannelRegistry()
    channels.register(Listener(Bulletin, lambda text: None))
    return Worker(
        WorkerOptions(),
        PgPubSubSettings(poll_interval=POLL_INTERVAL, reconnect_timeout=reconnect_timeout),
        channels,
        server,
        clock=clock,
        housekeeping=NoHousekeeping(),
    )


def test_the_worker_listens_on_its_channels_and_stops_when_asked(clock: FakeClock) -> None:
    connection = ScriptedConnection(clock)
    server = FakeServer(connection)
    worker = make_worker(server, clock)
    connection._script = [lambda: worker.request_stop()]

    assert worker.run() == 0
    assert connection.listened == [Bulletin.listen_safe_name()]
    assert connection.closed
    assert server.calls == 1


def test_the_worker_polls_and_probes_its_connection_every_poll_interval(
    clock: FakeClock,
) -> None:
    connection = ScriptedConnection(clock)
    worker = make_worker(FakeServer(connection), clock)
    connection._script = [QUIET, QUIET, lambda: worker.request_stop()]

    assert worker.run() == 0
    assert connection.timeouts == [POLL_INTERVAL] * 3
    assert connection.pings == 2  # the third wait was cut short by the stop


def test_messages_wake_the_worker_before_its_poll_is_due(clock: FakeClock) -> None:
    connection = ScriptedConnection(clock)
    worker = make_worker(FakeServer(connection), clock)
    unknown = [Message("a channel nobody listens to", "")]
    connection._script = [unknown, unknown, lambda: worker.request_stop()]

    assert worker.run() == 0
    assert connection.timeouts == [POLL_INTERVAL] * 3  # no time passed: the same deadline
    assert connection.pings == 0


def test_a_lost_connection_is_reopened_with_a_doubling_backoff(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    first = ScriptedConnection(clock, [lost()])
    second = ScriptedConnection(clock)
    server = FakeServer(first, lost("refused"), lost("refused"), second)
    worker = make_worker(server, clock)
    second._script = [lambda: worker.request_stop()]

    with caplog.at_level(logging.INFO, logger="pgpubsub"):
        assert worker.run() == 0

    assert clock.waits == [0.5, 1.0, 2.0]
    assert first.closed and second.closed
    assert second.listened == [Bulletin.listen_safe_name()]
    assert "Lost the database connection (refused); reconnecting in 2.0 s" in caplog.text
    assert "Reconnected after 3.5 s without the database" in caplog.text


def test_the_backoff_starts_again_after_a_connection_that_worked(clock: FakeClock) -> None:
    connections = [ScriptedConnection(clock, [QUIET, lost()]) for _ in range(3)]
    last = ScriptedConnection(clock)
    worker = make_worker(FakeServer(*connections, last), clock)
    last._script = [lambda: worker.request_stop()]

    assert worker.run() == 0
    assert clock.waits == [0.5, 0.5, 0.5]


def test_the_backoff_is_capped_at_ten_seconds(clock: FakeClock) -> None:
    worker = make_worker(FakeServer(then=lost("refused")), clock, reconnect_timeout=60.0)

    assert worker.run() == 1
    assert clock.waits[:6] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert set(clock.waits[5:]) == {10.0}


def test_the_worker_gives_up_after_the_reconnect_timeout_and_exits_1(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    server = FakeServer(then=lost("refused"))
    worker = make_worker(server, clock)

    with caplog.at_level(logging.ERROR, logger="pgpubsub"):
        assert worker.run() == 1

    # It gave up at the first failure more than the timeout after the first.
    waited = sum(clock.waits)
    assert RECONNECT_TIMEOUT < waited <= RECONNECT_TIMEOUT + 10.0
    assert server.calls == len(clock.waits) + 1
    assert "(PGPUBSUB_RECONNECT_TIMEOUT): giving up" in caplog.text


def test_a_stop_request_during_the_backoff_ends_the_worker_without_reconnecting(
    clock: FakeClock,
) -> None:
    server = FakeServer(then=lost("refused"))
    worker = make_worker(server, clock)
    clock.on_wait = worker.request_stop

    assert worker.run() == 0
    assert server.calls == 1
    assert clock.waits == [0.5]


def test_a_stop_signal_finishes_the_loop_and_a_duplicate_is_ignored(clock: FakeClock) -> None:
    connection = ScriptedConnection(clock)
    worker = make_worker(FakeServer(connection), clock)

    def two_signals() -> None:
        worker._shutdown.on_signal(signal.SIGTERM)  # systemd's, to the whole control group
        worker._shutdown.on_signal(signal.SIGUSR1)  # the supervisor's: the same request

    connection._script = [two_signals]

    assert worker.run() == 0
    assert worker.stopping
    timer = worker._shutdown.timer
    assert timer is not None
    timer.join(timeout=5)  # cancelled: it ends at once instead of exiting the process later
    assert not timer.is_alive()


def test_an_error_that_is_not_a_lost_connection_leaves_the_worker(clock: FakeClock) -> None:
    connection = ScriptedConnection(clock, [ValueError("a bug")])
    worker = make_worker(FakeServer(connection), clock)

    with pytest.raises(ValueError, match="a bug"):
        worker.run()
    assert connection.closed


class _DeadParent:
    def is_alive(self) -> bool:
        return False


def test_an_orphaned_worker_says_so_once_when_the_kernels_signal_lands_mid_check(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor killed: the worker's loop and its signal handler (the kernel's
    PR_SET_PDEATHSIG) both notice; the handler may run in the middle of the loop's check."""
    worker = make_worker(FakeServer(ScriptedConnection(clock)), clock)
    monkeypatch.setattr("pgpubsub.worker.multiprocessing.parent_process", _DeadParent)
    reports: list[str] = []

    class SignalDuringTheReport(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            reports.append(record.getMessage())
            if len(reports) == 1:  # the handler runs before the loop's request_stop()
                worker._stop_gracefully("SIGUSR1")

    handler = SignalDuringTheReport()
    logging.getLogger("pgpubsub.worker").addHandler(handler)
    try:
        assert worker._stop_if_orphaned()
    finally:
        logging.getLogger("pgpubsub.worker").removeHandler(handler)
    assert reports == ["The supervising process is gone: stopping"]
    assert worker.stopping
