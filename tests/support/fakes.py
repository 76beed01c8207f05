"""Fakes for the unit tier: a clock whose time only moves when waited on, and a scripted
connection standing in for the worker's own connection to PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.db import OperationalError

from pgpubsub.connection import Message


class FakeClock:
    """Time starts at ``start`` and moves only when something waits (or ``advance``)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        #: Every ``wait`` (the reconnect backoff), in seconds.
        self.waits: list[float] = []
        #: Called at each ``wait``, after the time moved (a test stops the worker there).
        self.on_wait: Callable[[], None] = lambda: None

    def monotonic(self) -> float:
        return self.now

    def wait(self, seconds: float, fds: Sequence[int] = ()) -> None:
        self.waits.append(seconds)
        self.advance(seconds)
        self.on_wait()

    def advance(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


#: A step of a connection's script: messages that arrive at once; ``None``: nothing arrives
#: (the wait lasts its whole timeout on the clock); an exception ``wait`` raises (the
#: connection is lost); or a function called at once, as a wake-up (a stop request).
Step = list[Message] | None | BaseException | Callable[[], None]

#: The step in which nothing arrives before the timeout.
QUIET = None


class ScriptedConnection:
    """A connection whose ``wait`` plays ``script``, one step per call.

    Once the script is played, ``wait`` fails the test (a worker that should have stopped by
    then did not).
    """

    def __init__(self, clock: FakeClock, script: Iterable[Step] = ()) -> None:
        self._clock = clock
        self._script = list(script)
        self.listened: list[str] = []
        self.timeouts: list[float] = []
        self.pings = 0
        self.statements: list[str] = []
        self.closed = False

    def listen(self, channels: Iterable[str]) -> None:
        self.listened.extend(channels)

    def wait(self, timeout: float, wake_fds: Sequence[int] = ()) -> list[Message]:
        self.timeouts.append(timeout)
        if not self._script:
            raise AssertionError("the worker kept waiting after its script ended")
        step = self._script.pop(0)
        if step is None:
            self._clock.advance(timeout)
            return []
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, list):
            return step
        step()
        return []

    def ping(self) -> None:
        self.pings += 1

    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        self.statements.append(sql)
        return []

    def close(self) -> None:
        self.closed = True


def lost(text: str = "server closed the connection unexpectedly") -> OperationalError:
    """The error a lost connection raises."""
    return OperationalError(text)


class FakeServer:
    """A connection factory: each call returns the next connection, or raises the next error.

    After ``limit`` calls it fails the test instead of going on forever (a worker that never
    gives up reconnecting).
    """

    def __init__(
        self, *outcomes: ScriptedConnection | BaseException, then: BaseException | None = None
    ) -> None:
        self._outcomes = list(outcomes)
        self._then = then
        self.calls = 0
        self.limit = 1000

    def __call__(self) -> ScriptedConnection:
        self.calls += 1
        if self.calls > self.limit:
            raise AssertionError(f"still reconnecting after {self.limit} attempts")
        outcome = self._outcomes.pop(0) if self._outcomes else self._then
        if outcome is None:
            raise AssertionError("no connection left in the script")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
