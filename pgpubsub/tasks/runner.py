"""Running the stored tasks of one backend: claim, run, record the outcome.

Two ways to run a task (``OPTIONS["ATOMIC"]``, or :func:`~pgpubsub.tasks.task_options`):

- outside any transaction (the default): the claim commits the task RUNNING under the
  worker's lease, the task runs in autocommit mode for as long as it needs, and its outcome
  is recorded afterwards. A worker that dies mid-task leaves a RUNNING task whose lease
  nobody holds: the next worker to look charges it an attempt (it runs again, or is FAILED).
  Database effects of a task retried that way can happen twice: make such tasks idempotent;
- inside one transaction (atomic): the task's database effects and its SUCCESSFUL outcome
  commit together, or neither does, as for stored messages: effects exactly once. The
  transaction stays open while the task runs, so this suits short, database-only tasks.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connections, transaction

from pgpubsub.clock import SYSTEM_CLOCK, Clock
from pgpubsub.conf import PgPubSubSettings
from pgpubsub.tasks import store
from pgpubsub.tasks.arguments import json_problem, to_json
from pgpubsub.tasks.backend import PgPubSubBackend
from pgpubsub.tasks.compat import (
    Task,
    TaskContext,
    TaskResult,
    task_finished,
    task_started,
)
from pgpubsub.tasks.models import FAILED, READY, RUNNING, SUCCESSFUL
from pgpubsub.tasks.options import RetryPolicy, TaskOptions, options_of, retry_policy
from pgpubsub.tasks.results import build_result, find_task
from pgpubsub.timelimit import Overdue, Watchdog

logger = logging.getLogger(__name__)

#: Tasks claimed at most in one statement: a burst of short tasks costs a claim per batch.
MAX_BATCH = 50
#: Seconds a worker may hold claimed tasks it has not started: once its batch has run longer,
#: it hands the rest back to the queue (another worker may be idle), and claims one at a time
#: until tasks run quickly again.
HOLD_SECONDS = 0.05

#: Runs one statement on a session that outlives transactions (the lease's holder).
Execute = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


class _LeaseLost(Exception):
    """The task was taken over by another worker (this one's lease was thought dead)."""


@dataclass
class RunCounts:
    """What a runner did."""

    succeeded: int = 0
    failed: int = 0
    retried: int = 0

    @property
    def processed(self) -> int:
        return self.succeeded + self.failed + self.retried


@dataclass(frozen=True)
class _Running:
    """The task a runner runs now, for the watchdog's thread to record its failure."""

    claimed: store.ClaimedTask
    task: Task
    policy: RetryPolicy


class TaskRunner:
    """Runs the tasks of ``backend``'s ``queues`` in this process.

    Arguments:
        backend: the backend whose tasks it runs (its options, database and alias).
        queues: the queue names served.
        settings: pgpubsub's settings (the default retry policy).
        worker_id: names this process in the tasks' ``worker_ids``.
        should_stop: asked before each task.
        clock: times the wake-ups for tasks not due yet.
        watchdog: gives the watchdog that enforces time limits (created on first use); None:
            time limits are not enforced (a runner outside ``listen``).
    """

    def __init__(
        self,
        backend: PgPubSubBackend,
        queues: Sequence[str],
        *,
        settings: PgPubSubSettings,
        worker_id: str,
        should_stop: Callable[[], bool] = lambda: False,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.backend = backend
        self.alias = backend.alias
        self.using = backend.database
        self.queues = list(queues)
        self.settings = settings
        self.worker_id = worker_id
        self.should_stop = should_stop
        self.clock = clock
        self.counts = RunCounts()
        self.watchdog: Callable[[], Watchdog] | None = None
        self._running: _Running | None = None
        self._lease: int | None = None
        self._due_at: float | None = None
        self._batch_size = 1

    # --- the lease ----------------------------------------------------------------------

    def attach(self, execute: Execute) -> None:
        """Hold a lease through ``execute``'s session (the worker's own connection) from now
        on: tasks are claimed under it."""
        while True:
            lease = random.randint(1, 2**31 - 1)
            if store.take_lease(execute, lease):
                self._lease = lease
                return

    def release(self, execute: Execute) -> None:
        """Give the lease back (an in-process runner that is done)."""
        if self._lease is not None:
            store.release_lease(execute, self._lease)
            self._lease = None

    def detach(self) -> None:
        """The lease's session is gone: claim nothing until the next :meth:`attach`."""
        self._lease = None

    # --- work ---------------------------------------------------------------------------

    def drain(self) -> int:
        """Run due tasks until none is left (or a stop is asked); return how many ran."""
        ran = 0
        while self._lease is not None and not self.should_stop():
            claimed = store.claim(
                using=self.using,
                backend=self.alias,
                queues=self.queues,
                worker_id=self.worker_id,
                lease=self._lease,
                limit=self._batch_size,
            )
            if not claimed:
                break
            ran += self._run_batch(claimed)
        return ran

    def _run_batch(self, claimed: list[store.ClaimedTask]) -> int:
        """Run claimed tasks in order; hand back those not started when a stop is asked or
        the batch has run longer than HOLD_SECONDS. The next batch is twice as large when
        this one was quick, a single task otherwise."""
        started = self.clock.monotonic()
        for index, task in enumerate(claimed):
            late = self.clock.monotonic() - started > HOLD_SECONDS
            if index and (late or self.should_stop()):
                assert self._lease is not None
                store.release(claimed[index:], using=self.using, lease=self._lease)
                self._batch_size = 1
                return index
            self.run(task)
        quick = self.clock.monotonic() - started <= HOLD_SECONDS
        self._batch_size = min(self._batch_size * 2, MAX_BATCH) if quick else 1
        return len(claimed)

    def run(self, claimed: store.ClaimedTask) -> None:
        """Run a claimed task and record its outcome."""
        assert self._lease is not None
        try:
            task = find_task(
                claimed.task_path,
                backend=self.alias,
                queue_name=claimed.queue_name,
                priority=claimed.priority,
                run_after=claimed.run_after,
            )
        except Exception as exc:
            self._failed(claimed, None, exc, self._policy(TaskOptions()))
            return
        options = options_of(task.func)
        limit = options.time_limit or self.backend.backend_options.time_limit
        if limit is None or self.watchdog is None:
            self._run(claimed, task, options)
            return
        watchdog = self.watchdog()
        self._running = _Running(claimed, task, self._policy(options))
        watchdog.arm(claimed.id, limit, claimed.task_path, None)
        try:
            self._run(claimed, task, options)
        finally:
            watchdog.disarm()
            self._running = None

    def _run(self, claimed: store.ClaimedTask, task: Task, options: TaskOptions) -> None:
        atomic = self.backend.backend_options.atomic if options.atomic is None else options.atomic
        running = build_result(task, claimed, backend=self.alias, status=RUNNING)
        _send(task_started, running)
        try:
            if atomic:
                with transaction.atomic(using=self.using):
                    value_json = _returned(_call(task, running))
                    self._succeeded(claimed, value_json, asynchronous=False)
            else:
                value_json = _returned(_call(task, running))
                self._succeeded(claimed, value_json, asynchronous=True)
        except _LeaseLost:
            logger.warning(
                "Task %s (%s) was taken over by another worker while it ran: its outcome here "
                "is not recorded",
                claimed.id,
                claimed.task_path,
                extra={"action": "task_lost", "task_id": claimed.id},
            )
            return
        except BaseException as exc:  # a task's SystemExit is its failure too (stored.py)
            self._failed(claimed, task, exc, self._policy(options))
            return
        self.counts.succeeded += 1
        finished = build_result(
            task,
            claimed,
            backend=self.alias,
            status=SUCCESSFUL,
            return_value=_loads(value_json),
        )
        _send(task_finished, finished)

    def _succeeded(
        self, claimed: store.ClaimedTask, value_json: str, *, asynchronous: bool
    ) -> None:
        assert self._lease is not None
        if not store.record_success(
            claimed.id, value_json, using=self.using, lease=self._lease, asynchronous=asynchronous
        ):
            raise _LeaseLost()

    def _policy(self, options: TaskOptions) -> RetryPolicy:
        return retry_policy(self.backend.backend_options, options, self.settings)

    def _failed(
        self,
        claimed: store.ClaimedTask,
        task: Task | None,
        exc: BaseException,
        policy: RetryPolicy,
    ) -> None:
        error = store.error_entry(
            f"{type(exc).__module__}.{type(exc).__qualname__}",
            "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        )
        self._record_failure(claimed, task, error, policy, self._lease)

    def _record_failure(
        self,
        claimed: store.ClaimedTask,
        task: Task | None,
        error: dict[str, str],
        policy: RetryPolicy,
        lease: int | None,
    ) -> None:
        dead = store.record_failure(claimed, error, using=self.using, lease=lease, policy=policy)
        if dead is None:
            return
        delay = policy.delay(claimed.attempts)
        logger.error(
            "Task %s (%s) failed (attempt %s of %s)%s: %s",
            claimed.id,
            claimed.task_path,
            claimed.attempts,
            policy.max_attempts,
            ": marked FAILED, see `manage.py pgpubsub failed`"
            if dead
            else f", will retry in {delay:g} s",
            error["traceback"].strip().splitlines()[-1] if error["traceback"].strip() else "",
            extra={
                "action": "task_failed" if dead else "task_retry",
                "task_id": claimed.id,
                "attempt": claimed.attempts,
            },
        )
        if dead:
            self.counts.failed += 1
            if task is not None:
                failed = build_result(
                    task,
                    store.ClaimedTask(**{**claimed.__dict__, "errors": [*claimed.errors, error]}),
                    backend=self.alias,
                    status=FAILED,
                )
                _send(task_finished, failed)
        else:
            self.counts.retried += 1
            self.due_in(delay)

    def fail_overdue(self, overdue: Overdue) -> bool:
        """On the watchdog's thread, while the task still runs on the main one: charge the
        task ``overdue`` names a failed attempt (retry or FAILED, by its policy), on this
        thread's own connection; False if this runner is not running it."""
        running = self._running
        if running is None or running.claimed.id != overdue.notification_id:
            return False
        error = store.error_entry(
            "pgpubsub.exceptions.TimeLimitExceeded",
            f"pgpubsub.exceptions.TimeLimitExceeded: task {running.claimed.task_path} "
            f"{overdue.reason()}: its worker was stopped",
        )
        try:
            self._record_failure(running.claimed, running.task, error, running.policy, self._lease)
        finally:
            connections[self.using].close()
        return True

    # --- dead workers, later tasks, pruning ---------------------------------------------

    def recover_orphans(self) -> int:
        """Settle the RUNNING tasks of workers that died; return how many were charged.

        A worker runs its claimed tasks in order and records each outcome as it ends, so of a
        dead lease's tasks still RUNNING the first was running: it is charged an attempt. The
        others had not started: they are handed back as they were."""
        charged = 0
        with transaction.atomic(using=self.using):
            orphans = store.orphaned(using=self.using, backend=self.alias)
            running: dict[int | None, store.ClaimedTask] = {}
            for claimed in orphans:
                running.setdefault(claimed.lease, claimed)
            for claimed in orphans:
                if running[claimed.lease] is not claimed:
                    store.release([claimed], using=self.using, lease=claimed.lease)
                    continue
                charged += 1
                try:
                    task: Task | None = find_task(
                        claimed.task_path,
                        backend=self.alias,
                        queue_name=claimed.queue_name,
                        priority=claimed.priority,
                        run_after=claimed.run_after,
                    )
                except Exception:
                    task = None
                options = options_of(task.func) if task is not None else TaskOptions()
                worker = claimed.worker_ids[-1] if claimed.worker_ids else "an unknown worker"
                error = store.error_entry(
                    "pgpubsub.exceptions.WorkerDied",
                    f"pgpubsub.exceptions.WorkerDied: the worker running this task ({worker}) "
                    "ended before it finished: it was killed (for example by the out-of-memory "
                    "killer or kill -9), crashed in native code, or lost its database session.",
                )
                self._record_failure(claimed, task, error, self._policy(options), None)
        return charged

    def look_up_due(self) -> None:
        """Note when the next task not due yet (run_after, a retry) becomes due."""
        seconds = store.next_due(using=self.using, backend=self.alias, queues=self.queues)
        if seconds is not None:
            self.due_in(seconds + 0.002)

    def due_in(self, seconds: float) -> None:
        """Wake up to claim in ``seconds`` (the earliest noted time wins)."""
        at = self.clock.monotonic() + max(seconds, 0.0)
        if self._due_at is None or at < self._due_at:
            self._due_at = at

    def wake_at(self) -> float | None:
        """The clock time at which a task is known to become due, if any."""
        return self._due_at

    def run_if_due(self) -> None:
        """Drain if a noted due time has come."""
        if self._due_at is not None and self.clock.monotonic() >= self._due_at:
            self._due_at = None
            self.drain()
            self.look_up_due()

    def prune(self) -> int:
        """Delete results older than the backend's retention options."""
        options = self.backend.backend_options
        return store.prune(
            using=self.using,
            backend=self.alias,
            successful=options.result_retention,
            failed=options.failed_retention,
        )


def _call(task: Task, running: TaskResult) -> Any:
    if task.takes_context:
        return task.call(TaskContext(task_result=running), *running.args, **running.kwargs)
    return task.call(*running.args, **running.kwargs)


def _returned(value: Any) -> str:
    """A return value as JSON text; a TypeError (the task's failure) if JSON cannot hold it."""
    problem = json_problem(value, "the return value")
    if problem is not None:
        raise TypeError(f"The task returned a value that is not JSON-serialisable: {problem}")
    return to_json(value)


def _loads(text: str) -> Any:
    import json

    return json.loads(text)


def _send(signal: Any, result: TaskResult) -> None:
    """Send a task signal; a receiver's error is logged, never the task's outcome."""
    for receiver, response in signal.send_robust(PgPubSubBackend, task_result=result):
        if isinstance(response, Exception):
            logger.error(
                "A receiver of a task signal (%r) raised: %r",
                receiver,
                response,
                extra={"action": "signal_error", "task_id": result.id},
            )


def django_session(using: str) -> Execute:
    """Runs statements on Django's connection ``using`` (the lease of an in-process runner)."""

    def execute(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with connections[using].cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    return execute


def run_tasks(backend: str = "default", queues: Sequence[str] | None = None) -> int:
    """Run every due task of the tasks backend ``backend`` in this process (for tests and
    scripts); return how many ran. Uses a lease on Django's connection, released at the end."""
    from pgpubsub.conf import get_settings
    from pgpubsub.tasks.compat import task_backends

    configured = task_backends[backend]
    if not isinstance(configured, PgPubSubBackend):
        raise TypeError(f"TASKS[{backend!r}] is not a pgpubsub.tasks.PgPubSubBackend")
    runner = TaskRunner(
        configured,
        sorted(configured.queues) if queues is None else queues,
        settings=get_settings(),
        worker_id=f"in-process {time.time():.0f}",
    )
    execute = django_session(configured.database)
    runner.attach(execute)
    try:
        runner.recover_orphans()
        return runner.drain()
    finally:
        runner.release(execute)


__all__ = ["READY", "RunCounts", "TaskRunner", "run_tasks"]
