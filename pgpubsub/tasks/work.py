"""The tasks a ``listen`` worker runs besides its channels: one
:class:`~pgpubsub.tasks.runner.TaskRunner` per ``pgpubsub.tasks.PgPubSubBackend`` of its
database. The worker hands over its connection (the leases' session), the doorbells it
received, and its polls; this module holds what to do with them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings as django_settings
from django.utils.module_loading import import_string

from pgpubsub.clock import SYSTEM_CLOCK, Clock
from pgpubsub.conf import PgPubSubSettings
from pgpubsub.connection import ListenConnection, Message
from pgpubsub.exceptions import ListenOptionsError
from pgpubsub.timelimit import Overdue, Watchdog

#: Seconds between two prunings of old results by one worker.
PRUNE_INTERVAL = 60.0


class NoTaskWork:
    """A worker that runs no tasks (no pgpubsub tasks backend, or ``--no-tasks``)."""

    def serves_any(self) -> bool:
        return False

    def doorbells(self) -> list[str]:
        return []

    def set_stop_check(self, should_stop: Callable[[], bool]) -> None:
        pass

    def attach(self, connection: ListenConnection) -> None:
        pass

    def detach(self) -> None:
        pass

    def handle(self, messages: list[Message]) -> list[Message]:
        return messages

    def drain_all(self) -> None:
        pass

    def wake_at(self) -> float | None:
        return None

    def run_due(self) -> None:
        pass

    def ran(self) -> int:
        """How many task attempts this worker has run (succeeded, failed or to be retried)."""
        return 0

    def set_watchdog(self, watchdog: Callable[[], Watchdog]) -> None:
        pass

    def fail_overdue(self, overdue: Overdue) -> None:
        pass


class TaskWork(NoTaskWork):
    """Runs the tasks of ``runners`` (each a backend's selected queues) for a worker."""

    def __init__(self, runners: Sequence[Any], clock: Clock = SYSTEM_CLOCK) -> None:
        from pgpubsub.tasks import store

        self._runners = list(runners)
        self._by_doorbell = {store.doorbell(runner.alias): runner for runner in self._runners}
        self._later = store.LATER
        self._clock = clock
        self._pruned_at: float | None = None

    def serves_any(self) -> bool:
        return bool(self._runners)

    def describe(self) -> list[str]:
        """``alias:queue`` of each queue served, for logs."""
        return [f"{r.alias}:{queue}" for r in self._runners for queue in r.queues]

    def doorbells(self) -> list[str]:
        return list(self._by_doorbell)

    def set_stop_check(self, should_stop: Callable[[], bool]) -> None:
        for runner in self._runners:
            runner.should_stop = should_stop

    def attach(self, connection: ListenConnection) -> None:
        for runner in self._runners:
            runner.attach(connection.execute)

    def detach(self) -> None:
        for runner in self._runners:
            runner.detach()

    def handle(self, messages: list[Message]) -> list[Message]:
        """Run the tasks the doorbells among ``messages`` announce; return the others."""
        rest: list[Message] = []
        ring: dict[Any, None] = {}
        for message in messages:
            runner = self._by_doorbell.get(message.channel)
            if runner is None:
                rest.append(message)
            elif message.payload == self._later:
                runner.look_up_due()
            elif message.payload in runner.queues:
                ring[runner] = None
        for runner in ring:
            runner.drain()
        return rest

    def drain_all(self) -> None:
        """At a worker's start and every poll: settle the tasks of dead workers, run what is
        due, note when the next task is, and prune old results now and then."""
        for runner in self._runners:
            runner.recover_orphans()
            runner.drain()
            runner.look_up_due()
        now = self._clock.monotonic()
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_INTERVAL:
            self._pruned_at = now
            for runner in self._runners:
                runner.prune()

    def wake_at(self) -> float | None:
        times = [t for t in (runner.wake_at() for runner in self._runners) if t is not None]
        return min(times) if times else None

    def run_due(self) -> None:
        for runner in self._runners:
            runner.run_if_due()

    def ran(self) -> int:
        return sum(runner.counts.processed for runner in self._runners)

    def set_watchdog(self, watchdog: Callable[[], Watchdog]) -> None:
        """Enforce the time limits of tasks (``TIME_LIMIT``, ``task_options(time_limit=)``)
        with the watchdog ``watchdog`` gives."""
        for runner in self._runners:
            runner.watchdog = watchdog

    def fail_overdue(self, overdue: Overdue) -> None:
        """On the watchdog's thread: charge the overdue task a failed attempt."""
        for runner in self._runners:
            if runner.fail_overdue(overdue):
                return


def pgpubsub_backends() -> dict[str, Any]:
    """The aliases and backends of ``TASKS`` that are pgpubsub's (none without ``TASKS``)."""
    configured = getattr(django_settings, "TASKS", None) or {}
    ours = [
        alias for alias, params in configured.items() if _is_ours(str(params.get("BACKEND", "")))
    ]
    if not ours:
        return {}
    from pgpubsub.tasks.compat import task_backends

    return {alias: task_backends[alias] for alias in ours}


def _is_ours(path: str) -> bool:
    try:
        backend = import_string(path)
    except ImportError:
        return False
    from pgpubsub.tasks.backend import PgPubSubBackend

    return isinstance(backend, type) and issubclass(backend, PgPubSubBackend)


def task_work(
    *,
    using: str,
    queues: Sequence[str] | None,
    settings: PgPubSubSettings,
    worker_id: str,
    clock: Clock = SYSTEM_CLOCK,
) -> NoTaskWork:
    """The tasks a worker on database ``using`` runs: ``queues`` (names, or ``alias:name``)
    of the pgpubsub backends stored there, or every queue of them (None).

    Raises:
        ListenOptionsError: a queue named is in no pgpubsub backend of that database.
    """
    backends = {
        alias: backend
        for alias, backend in pgpubsub_backends().items()
        if backend.database == using
    }
    chosen = _choose(backends, queues, using)
    if not chosen:
        return NoTaskWork()
    from pgpubsub.tasks.runner import TaskRunner

    runners = [
        TaskRunner(backends[alias], names, settings=settings, worker_id=worker_id, clock=clock)
        for alias, names in chosen.items()
    ]
    return TaskWork(runners, clock)


def _choose(
    backends: dict[str, Any], queues: Sequence[str] | None, using: str
) -> dict[str, list[str]]:
    if queues is None:
        return {alias: sorted(backend.queues) for alias, backend in backends.items()}
    chosen: dict[str, list[str]] = {}
    for name in queues:
        alias, _, queue = name.rpartition(":")
        matches = [
            a for a, backend in backends.items() if queue in backend.queues and alias in ("", a)
        ]
        if not matches:
            known = sorted(f"{a}:{q}" for a, b in backends.items() for q in b.queues)
            raise ListenOptionsError(
                f"Task queue {name!r} is in no pgpubsub.tasks backend of database {using!r} "
                f"(TASKS). Known: {', '.join(known) or 'none'}."
            )
        for match in matches:
            chosen.setdefault(match, [])
            if queue not in chosen[match]:
                chosen[match].append(queue)
    return chosen
