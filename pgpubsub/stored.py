"""Stored messages of lockable channels: claimed in batches, their callbacks run exactly once.

Each batch is one transaction: its rows are locked, their callbacks run, and handled rows are
deleted before the commit (or, with ``PGPUBSUB_KEEP_HANDLED``, marked handled and kept). A
batch runs in one of two modes (:class:`Mode`):

- optimistic: no savepoint per message (two round trips fewer per message). If a callback
  raises, or a deferred constraint fails at commit, the batch is rolled back
  (:class:`RolledBack`) and redone isolated;
- isolated: one savepoint per message, so a failing message rolls back only its own work and
  is scheduled for a retry (or marked failed) while the others are handled. After a rollback
  a channel stays isolated for :data:`ISOLATION_PERIOD` seconds, so that a message retried
  again and again does not make the other callbacks of its batches run twice each time.

Each batch is recorded in a :class:`~pgpubsub.inflight.BatchJournal` before its callbacks
run, so that a message that kills its worker process is charged an attempt by the next
worker that claims it (:mod:`pgpubsub.inflight`).
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import itertools
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections, transaction

from pgpubsub import current, inflight, queue, signals
from pgpubsub.channel import BaseChannel
from pgpubsub.clock import SYSTEM_CLOCK, Clock
from pgpubsub.conf import PgPubSubSettings, get_settings
from pgpubsub.exceptions import TimeLimitExceeded, WorkerDied
from pgpubsub.processing import (
    Dispatcher,
    Outcome,
    decode_payload,
    failure_words,
    listener_filter,
    report_outcomes,
)
from pgpubsub.registry import ChannelRegistry, registry
from pgpubsub.timelimit import Watchdog

logger = logging.getLogger(__name__)

#: Seconds a channel is processed message by message after a failure in one of its batches.
ISOLATION_PERIOD = 60.0

#: A retry's wake-up comes this long after its due time: the database's clock decides.
_RETRY_MARGIN = 0.05
#: A message sent for later is looked up on the database's clock: a wake-up a little early
#: claims nothing and looks it up again.
_DUE_MARGIN = 0.002


class Mode(enum.Enum):
    """How a batch runs its messages."""

    OPTIMISTIC = "optimistic"
    ISOLATED = "isolated"


@dataclass(frozen=True)
class RolledBack:
    """An optimistic batch that was rolled back, to be redone isolated; ``reason`` says why."""

    reason: str


@dataclass
class BatchResult:
    """What one or more batches did."""

    claimed: int = 0
    processed: int = 0
    #: Failed attempts, each either retried later or marked failed.
    failed: int = 0
    #: The failed attempts that will be retried.
    retried: int = 0

    def add(self, other: BatchResult) -> None:
        self.claimed += other.claimed
        self.processed += other.processed
        self.failed += other.failed
        self.retried += other.retried


class IsolationSchedule:
    """Which mode each channel's next batch runs in, and when retries it scheduled are due."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK, period: float = ISOLATION_PERIOD) -> None:
        self._clock = clock
        self._period = period
        self._isolated_until: dict[type[BaseChannel], float] = {}
        #: (due time, tie-breaker, channel): a heap, earliest first.
        self._retries: list[tuple[float, int, type[BaseChannel]]] = []
        self._scheduled = itertools.count()

    def mode(self, channel: type[BaseChannel]) -> Mode:
        until = self._isolated_until.get(channel)
        if until is not None and self._clock.monotonic() < until:
            return Mode.ISOLATED
        return Mode.OPTIMISTIC

    def isolate(self, channel: type[BaseChannel]) -> None:
        """Run ``channel``'s batches isolated for the isolation period from now."""
        self._isolated_until[channel] = self._clock.monotonic() + self._period

    def retry_scheduled(self, channel: type[BaseChannel], delay: float) -> None:
        """Note that a message of ``channel`` is due again in ``delay`` seconds."""
        self.due_in(channel, delay + _RETRY_MARGIN)

    def due_in(self, channel: type[BaseChannel], delay: float) -> None:
        """Note that a message of ``channel`` becomes due in ``delay`` seconds."""
        due = self._clock.monotonic() + delay
        # Looked up again at every poll: a time already noted is not noted twice.
        if not any(at <= due and noted is channel for at, _, noted in self._retries):
            heapq.heappush(self._retries, (due, next(self._scheduled), channel))

    def next_retry(self) -> float | None:
        """The clock time at which the earliest retry noted is due, if any."""
        return self._retries[0][0] if self._retries else None

    def due_retries(self) -> list[type[BaseChannel]]:
        """The channels with a noted retry due now, each once (forgotten once returned)."""
        now = self._clock.monotonic()
        due: dict[type[BaseChannel], None] = {}
        while self._retries and self._retries[0][0] <= now:
            due[heapq.heappop(self._retries)[2]] = None
        return list(due)


@dataclass
class _Batch:
    """One claimed batch, inside its transaction."""

    messages: list[queue.StoredMessage]
    record: int | None = None
    handled: list[int] = field(default_factory=list)
    #: In-flight records of dead workers settled by this batch, deleted with it.
    settled: list[int] = field(default_factory=list)
    #: What happened to each message, when someone wants to know (signals, DEBUG logs).
    outcomes: list[Outcome] | None = None
    rolled_back: RolledBack | None = None
    result: BatchResult = field(default_factory=BatchResult)

    def note(self, outcome: Outcome) -> None:
        if self.outcomes is not None:
            self.outcomes.append(outcome)


class _HeldKeys:
    """The keys of a batch's messages that will be retried: the later messages of such a key
    in the batch must wait for the retry (per-key ordering), so they are left stored."""

    def __init__(self) -> None:
        self._retried: dict[str, int] = {}

    def note(self, message: queue.StoredMessage, outcome: Outcome) -> None:
        if outcome.will_retry and message.ordering_key is not None:
            self._retried.setdefault(message.ordering_key, message.id)

    def holds(self, message: queue.StoredMessage) -> bool:
        retried = self._retried.get(message.ordering_key or "")
        return message.ordering_key is not None and retried is not None and message.id > retried


class _FailedAttempts:
    """Records failed attempts: a retry scheduled (and noted for the worker's wake-up), or
    the message marked failed; and the log line that names the notification."""

    def __init__(self, settings: PgPubSubSettings, using: str, schedule: IsolationSchedule):
        self._settings = settings
        self._using = using
        self._schedule = schedule

    def charge_crash(
        self, channel: type[BaseChannel], message: queue.StoredMessage, record: inflight.LeftBehind
    ) -> Outcome:
        """Count the attempt of a message whose callbacks were running when its worker ended
        (or stopped itself, saying why) before its batch did."""
        batch = f"{record.worker}, batch started {record.started_at.isoformat(timespec='seconds')}"
        error: WorkerDied
        if record.stopped_because is not None:
            error = TimeLimitExceeded(
                f"This message {record.stopped_because}: its worker process ({batch}) was "
                "stopped and replaced. Raise PGPUBSUB_MESSAGE_TIME_LIMIT or the channel's "
                "message_time_limit if the callback needs longer."
            )
            what_happened = record.stopped_because
        else:
            error = WorkerDied(
                f"The worker process running this message ended before it finished ({batch}), "
                "or lost every database connection at once: it has none open. It was killed "
                "(for example by the out-of-memory killer or kill -9), crashed in native code, "
                "or was stopped without waiting; or its connections were all cut "
                "(pg_terminate_backend, a network failure, a restart of the server)."
            )
            what_happened = "was running when its worker process ended or lost its connections"
        return self.record(
            channel,
            message,
            Outcome.of_stored(message, time.perf_counter(), error),
            str(error),
            what_happened,
        )

    def record(
        self,
        channel: type[BaseChannel],
        message: queue.StoredMessage,
        failure: Outcome,
        error_text: str,
        what_happened: str,
        *,
        exc_info: bool = False,
    ) -> Outcome:
        """Record a failed attempt (a retry is scheduled, or the message is marked failed)
        and log it; return ``failure`` telling whether the message will be retried."""
        dead = queue.record_failure(message, error_text, using=self._using, settings=self._settings)
        if not dead:
            self._schedule.retry_scheduled(
                channel, queue.retry_delay(message.attempts + 1, self._settings)
            )
        logger.error(
            "Notification %s of channel %s %s (attempt %s of %s)%s",
            message.id,
            channel.name(),
            what_happened,
            message.attempts + 1,
            self._settings.max_attempts,
            ": marked failed, see `manage.py pgpubsub failed`" if dead else ", will retry",
            exc_info=exc_info,
            extra={
                "action": "failed" if dead else "retry",
                "channel": channel.name(),
                "notification_id": message.id,
                "attempt": message.attempts + 1,
            },
        )
        return dataclasses.replace(failure, will_retry=not dead)


class StoredProcessor:
    """Claims stored notifications in batches and runs their callbacks exactly once.

    Arguments:
        using: the database alias.
        settings: pgpubsub's settings (batch size, attempts, retry delays).
        channel_registry: where the channels' callbacks are found.
        journal: where batches in flight are recorded (a worker's
            :class:`~pgpubsub.inflight.Journal`; none in-process).
        should_stop: asked before each message; True leaves the rest of the batch stored.
        clock: times the isolation period and the retries.
        watchdog: ends the worker when a message runs past its time limit
            (:mod:`pgpubsub.timelimit`); None: no time limit is enforced.
        worker: names the process in the ``handled_by`` of messages kept handled
            (``PGPUBSUB_KEEP_HANDLED``): a worker passes the label of its in-flight records.
    """

    def __init__(
        self,
        *,
        using: str = DEFAULT_DB_ALIAS,
        settings: PgPubSubSettings | None = None,
        channel_registry: ChannelRegistry | None = None,
        journal: inflight.BatchJournal | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        clock: Clock = SYSTEM_CLOCK,
        watchdog: Watchdog | None = None,
        worker: str | None = None,
    ) -> None:
        self.using = using
        self.worker = worker or _in_process_label()
        self.settings = settings or get_settings()
        self.watchdog = watchdog
        self._time_limits: dict[type[BaseChannel], float | None] = {}
        self.dispatcher = Dispatcher(channel_registry or registry, self.settings)
        self.extra_filter = listener_filter(self.settings)
        self.journal = journal or inflight.NullJournal()
        self.should_stop = should_stop
        self.schedule = IsolationSchedule(clock)
        self._failures = _FailedAttempts(self.settings, using, self.schedule)
        #: Per ordered channel, the key after which its next claim starts its round of keys.
        self._key_round: dict[type[BaseChannel], str] = {}

    def look_up_due(self, channels: Iterable[type[BaseChannel]]) -> None:
        """Note when the next message of ``channels`` sent for later (or retried by another
        worker) becomes due, so that the worker wakes then rather than at its next poll."""
        by_name = {channel.listen_safe_name(): channel for channel in channels}
        if not by_name:
            return
        for name, delay in queue.next_due(list(by_name), using=self.using).items():
            self.schedule.due_in(by_name[name], delay + _DUE_MARGIN)

    def drain(
        self,
        channel: type[BaseChannel],
        on_batch: Callable[[BatchResult], None] | None = None,
    ) -> BatchResult:
        """Process batches of ``channel`` until none is due (or a stop is requested).

        ``on_batch`` is called after each batch (``--recover`` reports progress with it).
        """
        total = BatchResult()
        while not self.should_stop():
            batch = self.process_batch(channel)
            if on_batch is not None:
                on_batch(batch)
            total.add(batch)
            # A batch of an ordered channel that is not full may have freed the next
            # messages of its keys: claim again until a claim finds nothing.
            if batch.claimed == 0 or (
                batch.claimed < self.settings.batch_size and channel.ordering_key is None
            ):
                break
        return total

    def process_batch(self, channel: type[BaseChannel]) -> BatchResult:
        """Claim and process one batch of ``channel``'s due notifications."""
        if self.schedule.mode(channel) is Mode.OPTIMISTIC:
            outcome = self._run_optimistic(channel)
            if isinstance(outcome, BatchResult):
                return outcome
            self.schedule.isolate(channel)
            logger.info(
                "A batch of channel %s was rolled back (%s): redoing it message by message, "
                "and the channel's batches for %.0f s",
                channel.name(),
                outcome.reason,
                ISOLATION_PERIOD,
                extra={"action": "isolating", "channel": channel.name()},
            )
        return self._run_isolated(channel)

    def _run_optimistic(self, channel: type[BaseChannel]) -> BatchResult | RolledBack:
        try:
            with self._batch(channel) as batch:
                if any(message.left_behind for message in batch.messages):
                    # One of them may kill this worker too: only isolated batches settle.
                    batch.rolled_back = RolledBack("a worker ended in the middle of a batch")
                    return batch.rolled_back
                for message in batch.messages:
                    if self.should_stop():
                        break  # the rest stay stored and are unlocked at commit
                    started = time.perf_counter() if batch.outcomes is not None else 0.0
                    if not self._deliver(channel, message, batch.record):
                        batch.rolled_back = RolledBack("a callback raised")
                        return batch.rolled_back
                    batch.handled.append(message.id)
                    if batch.outcomes is not None:
                        batch.outcomes.append(Outcome.of_stored(message, started))
        except IntegrityError:
            return RolledBack("a deferred constraint failed at commit")
        return self._finished(channel, batch)

    def _run_isolated(self, channel: type[BaseChannel]) -> BatchResult:
        with self._batch(channel) as batch:
            messages = batch.messages
            held = _HeldKeys()
            if any(message.left_behind for message in messages):
                messages = self._settle_left_behind(channel, batch, held)
            for message in messages:
                if self.should_stop():
                    break
                if held.holds(message):
                    continue  # stays stored, behind the retry of an older one of its key
                # (A record of a one-message batch names its message from the start.)
                if batch.record is not None and len(batch.messages) > 1:
                    self.journal.running(batch.record, message.id)
                outcome = self._process_one(channel, message, batch.record)
                batch.note(outcome)
                if outcome.error is None:
                    batch.handled.append(message.id)
                else:
                    self._count(batch.result, outcome)
                    held.note(message, outcome)
        return self._finished(channel, batch)

    @contextmanager
    def _batch(self, channel: type[BaseChannel]) -> Iterator[_Batch]:
        """Claim a batch in a transaction; commit what the block handled, or roll back."""
        # Timed and reported only when someone listens (hot path).
        observed = signals.receivers_connected() or logger.isEnabledFor(logging.DEBUG)
        batch: _Batch | None = None
        try:
            with transaction.atomic(using=self.using):
                messages = queue.claim_batch(
                    channel.listen_safe_name(),
                    self.settings.batch_size,
                    using=self.using,
                    also_named=channel.stored_aliases(),
                    extra_filter=self.extra_filter,
                    measure_latency=observed,
                    ordered=channel.ordering_key is not None,
                    after_key=self._key_round.get(channel, ""),
                )
                if channel.ordering_key is not None:
                    self._key_round[channel] = queue.round_resumes_after(
                        messages, self._key_round.get(channel, ""), using=self.using
                    )
                batch = _Batch(messages, outcomes=[] if observed else None)
                batch.result.claimed = len(messages)
                if messages:
                    batch.record = self.journal.begin([message.id for message in messages])
                yield batch
                if batch.rolled_back is not None:
                    transaction.set_rollback(True, using=self.using)
                elif messages:
                    own = [batch.record] if batch.record is not None else []
                    self._settle_handled(batch.handled, own + batch.settled)
        except BaseException:
            self._discard(batch)
            raise
        if batch.rolled_back is not None:
            self._discard(batch)

    def _settle_handled(self, handled: list[int], in_flight_records: list[int]) -> None:
        """Delete the handled messages, or keep them marked handled (``PGPUBSUB_KEEP_HANDLED``),
        with the batch's in-flight records deleted in the same statement."""
        if self.settings.keep_handled is None:
            queue.delete_messages(handled, using=self.using, in_flight_records=in_flight_records)
        else:
            queue.mark_handled(
                handled, worker=self.worker, using=self.using, in_flight_records=in_flight_records
            )

    def _finished(self, channel: type[BaseChannel], batch: _Batch) -> BatchResult:
        """After the commit: report each outcome once (a redone batch reports once)."""
        batch.result.processed = len(batch.handled)
        if batch.outcomes:
            report_outcomes(channel, batch.outcomes)
            _log_handled(channel, batch.outcomes)
        return batch.result

    def _count(self, result: BatchResult, failure: Outcome) -> None:
        result.failed += 1
        result.retried += failure.will_retry

    def _discard(self, batch: _Batch | None) -> None:
        """Delete a batch's in-flight record after a rollback: its worker is alive."""
        if batch is None or batch.record is None:
            return
        try:
            self.journal.discard(batch.record)
        except Exception:  # a lost connection: the next claimant settles the record
            logger.debug("Could not delete in-flight record %s", batch.record, exc_info=True)

    def _settle_left_behind(
        self, channel: type[BaseChannel], batch: _Batch, held: _HeldKeys
    ) -> list[queue.StoredMessage]:
        """Charge each message a dead worker was running; return the others to run (noting
        in ``held`` the keys of those that will be retried). The settled records are deleted
        with this batch."""
        claimed = {message.id: message for message in batch.messages}
        records = inflight.left_behind(list(claimed), using=self.using, own_record=batch.record)
        if records:
            logger.warning(
                "%s message(s) of channel %s had been claimed by a worker that ended mid-batch "
                "(%s): running them one by one",
                len(batch.messages),
                channel.name(),
                ", ".join(sorted({record.worker for record in records})),
                extra={"action": "left_behind", "channel": channel.name()},
            )
        # A worker still connected lost only its batch's connection: the batch was rolled
        # back, its running message is not to blame and is not charged (see pgpubsub.inflight).
        alive = inflight.connected(
            [r.worker for r in records if r.running_id in claimed and r.stopped_because is None],
            using=self.using,
        )
        for record in records:
            if record.running_id is not None and record.running_id not in claimed:
                continue  # its running message is locked elsewhere: that claimant settles it
            if record.worker in alive:
                # Its worker deletes the record when it notices; its messages run here.
                logger.warning(
                    "Worker %s lost its database connection in the middle of a batch of "
                    "channel %s: the batch was rolled back, and its messages run again here "
                    "without being charged an attempt",
                    record.worker,
                    channel.name(),
                    extra={"action": "connection_lost", "channel": channel.name()},
                )
                continue
            batch.settled.append(record.id)
            crashed = claimed.pop(record.running_id, None) if record.running_id else None
            if crashed is not None:
                outcome = self._failures.charge_crash(channel, crashed, record)
                batch.note(outcome)
                self._count(batch.result, outcome)
                held.note(crashed, outcome)
        return [message for message in batch.messages if message.id in claimed]

    def _deliver(
        self, channel: type[BaseChannel], message: queue.StoredMessage, record: int | None
    ) -> bool:
        """Run an optimistic batch's message; False when it raised (it is redone isolated,
        where its failure is recorded)."""
        try:
            self._run_callbacks(channel, message, record)
        except BaseException:  # see _process_one
            return False
        return True

    def _run_callbacks(
        self, channel: type[BaseChannel], message: queue.StoredMessage, record: int | None
    ) -> None:
        """Decode ``message`` and run its callbacks, with :func:`pgpubsub.current_message`
        telling them which message they handle, under the watchdog of its time limit
        (``record``: its batch's in-flight record)."""
        limit = self._time_limit(channel)
        if limit is not None and self.watchdog is not None:
            self.watchdog.arm(message.id, limit, channel.name(), record)
        token = current.running.set((channel, message, self.using))
        try:
            self.dispatcher.deliver(channel, decode_payload(channel, message.payload_text))
        finally:
            current.running.reset(token)
            if limit is not None and self.watchdog is not None:
                self.watchdog.disarm()

    def _time_limit(self, channel: type[BaseChannel]) -> float | None:
        try:
            return self._time_limits[channel]
        except KeyError:
            limit = channel.time_limit(self.settings.message_time_limit)
            self._time_limits[channel] = limit
            return limit

    def _process_one(
        self, channel: type[BaseChannel], message: queue.StoredMessage, record: int | None
    ) -> Outcome:
        started = time.perf_counter()
        try:
            with transaction.atomic(using=self.using):
                self._run_callbacks(channel, message, record)
                # Deferred constraints (Django's foreign keys) would otherwise be checked at
                # the batch's COMMIT and fail every message of it: check them in this savepoint.
                connections[self.using].check_constraints()
        except BaseException as exc:
            # SystemExit, KeyboardInterrupt and the like too: raised by a callback, they are
            # that message's failure, not a request to stop the worker (signals stop it), and
            # letting them through would roll back and stall the whole batch, forever.
            return self._failures.record(
                channel,
                message,
                Outcome.of_stored(message, started, exc),
                traceback.format_exc(),
                failure_words(exc),
                exc_info=True,
            )
        return Outcome.of_stored(message, started)


def _in_process_label() -> str:
    """Names a process that runs stored messages in-process (not a worker)."""
    return f"pgpubsub in-process {os.getpid()} on {socket.gethostname()}"


def _log_handled(channel: type[BaseChannel], outcomes: Iterable[Outcome]) -> None:
    """One DEBUG line per message handled (the failures were logged as errors already)."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    for outcome in outcomes:
        if outcome.error is None:
            logger.debug(
                "Handled notification %s of channel %s (attempt %s) in %.1f ms",
                outcome.notification_id,
                channel.name(),
                outcome.attempt,
                outcome.duration * 1000,
                extra={
                    "action": "processed",
                    "channel": channel.name(),
                    "notification_id": outcome.notification_id,
                    "attempt": outcome.attempt,
                    "duration": outcome.duration,
                },
            )


def process_stored_notifications(
    channels: Iterable[type[BaseChannel] | str] | None = None, using: str | None = None
) -> int:
    """Process every stored notification of ``channels`` (default: every lockable channel).

    Runs in the calling process; returns the number of notifications handled.
    """
    selected = [c for c in registry.select(include=channels) if c.lock_notifications]
    processor = StoredProcessor(using=using or DEFAULT_DB_ALIAS)
    return sum(processor.drain(channel).processed for channel in selected)
