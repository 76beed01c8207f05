"""Running callbacks for messages: stored (lockable) batches and fan-out messages."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections, transaction
from django.db.models import Q
from django.utils.module_loading import import_string

from pgpubsub import codec, inflight, queue, signals
from pgpubsub.channel import BaseChannel
from pgpubsub.conf import PgPubSubSettings, get_settings
from pgpubsub.exceptions import WorkerDied
from pgpubsub.registry import ChannelRegistry, registry

logger = logging.getLogger(__name__)

#: Seconds a channel is processed message by message after a failure in one of its batches.
_ISOLATION_PERIOD = 60.0


def parse_json(channel: type[BaseChannel], text: str) -> Any:
    """Parse a channel's JSON; trigger rows keep numeric columns exact (``Decimal``)."""
    return codec.loads_exact(text) if channel.is_trigger_channel() else json.loads(text)


def decode_payload(channel: type[BaseChannel], text: str) -> dict[str, Any]:
    """Parse payload JSON into the object callbacks are decoded from."""
    data = parse_json(channel, text)
    if not isinstance(data, dict):
        raise ValueError(f"payload of {channel.name()} is not a JSON object: {text[:200]!r}")
    return data


def listener_filter(settings: PgPubSubSettings) -> Q | None:
    """The Q of ``PGPUBSUB_LISTENER_FILTER``, if one is configured."""
    if not settings.listener_filter:
        return None
    provider = import_string(settings.listener_filter)
    return provider().get_filter()


class Dispatcher:
    """Calls the callbacks registered on a channel with a decoded payload."""

    def __init__(self, registry: ChannelRegistry, settings: PgPubSubSettings) -> None:
        self._registry = registry
        self._pass_context = settings.pass_context_to_listeners

    def deliver(self, channel: type[BaseChannel], payload: dict[str, Any]) -> int:
        """Run every callback of ``channel`` that accepts ``payload``; return how many ran."""
        kwargs = channel.callback_kwargs(payload)
        # Only trigger payloads carry a context (django-pgpubsub 1.3 passed it to them only).
        if self._pass_context and channel.is_trigger_channel():
            kwargs["context"] = payload.get("context") or {}
        ran = 0
        for listener in self._registry.listeners_for(channel):
            if listener.accepts(payload):
                if listener.is_async:
                    # Runs the coroutine in a fresh event loop and the code it hands to
                    # sync_to_async (Django's async ORM methods) back on this thread: on this
                    # thread's connection, inside the batch's transaction.
                    async_to_sync(listener.callback)(**kwargs)
                else:
                    listener.callback(**kwargs)
                ran += 1
        return ran


@dataclass
class BatchResult:
    claimed: int = 0
    processed: int = 0
    failed: int = 0


@dataclass(frozen=True)
class _Outcome:
    """How one attempt at a message ended, reported by the signals once its transaction ended."""

    notification_id: int | None
    attempt: int
    duration: float
    claim_latency: float | None
    error: BaseException | None = None
    will_retry: bool = False

    @classmethod
    def of_stored(
        cls, message: queue.StoredMessage, started: float, error: BaseException | None = None
    ) -> _Outcome:
        return cls(
            message.id,
            message.attempts + 1,
            time.perf_counter() - started,
            message.claim_latency,
            error,
        )


def _failure_words(exc: BaseException) -> str:
    """How a callback failed, in a log line's words."""
    if isinstance(exc, Exception):
        return "failed"
    return (
        f"failed: a callback raised {type(exc).__name__}, counted as its failure (the worker "
        "carries on; stop workers with SIGTERM)"
    )


def _report(channel: type[BaseChannel], outcomes: Iterable[_Outcome]) -> None:
    """Send ``notification_processed`` or ``notification_failed`` for each outcome."""
    for outcome in outcomes:
        common = {
            "notification_id": outcome.notification_id,
            "attempt": outcome.attempt,
            "duration": outcome.duration,
            "claim_latency": outcome.claim_latency,
        }
        if outcome.error is None:
            responses = signals.notification_processed.send_robust(channel, **common)
        else:
            responses = signals.notification_failed.send_robust(
                channel, error=outcome.error, will_retry=outcome.will_retry, **common
            )
        for receiver, response in responses:
            if isinstance(response, Exception):
                logger.error(
                    "Signal receiver %r raised on a message of channel %s (ignored)",
                    receiver,
                    channel.name(),
                    exc_info=response,
                    extra={"action": "signal_failed", "channel": channel.name()},
                )


class StoredProcessor:
    """Claims stored notifications in batches and runs their callbacks exactly once.

    Each batch is one transaction: its rows are locked, their callbacks run, and handled
    rows are deleted before the commit. A batch first runs optimistically, without a
    savepoint per message (two round trips fewer per message). If a callback raises, or a
    deferred constraint fails at commit, the batch is rolled back and run again with one
    savepoint per message, so a failing message rolls back only its own work and is
    scheduled for a retry (or marked failed) while the others are handled. The channel then
    stays in this isolated mode for ``_ISOLATION_PERIOD`` seconds.

    With a ``journal`` (the worker's), each batch is recorded in flight before its callbacks
    run, so that a message that kills the worker process is charged an attempt by the next
    worker that claims it (:mod:`pgpubsub.inflight`). Claims settle the records of dead
    workers with or without a journal.
    """

    def __init__(
        self,
        *,
        using: str = DEFAULT_DB_ALIAS,
        settings: PgPubSubSettings | None = None,
        channel_registry: ChannelRegistry | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.using = using
        self.settings = settings or get_settings()
        self.dispatcher = Dispatcher(channel_registry or registry, self.settings)
        self.extra_filter = listener_filter(self.settings)
        self.should_stop = should_stop
        #: Set by the worker for each connection it opens; None in-process.
        self.journal: inflight.Journal | None = None
        self._isolated_until: dict[type[BaseChannel], float] = {}

    def process_batch(self, channel: type[BaseChannel]) -> BatchResult:
        """Claim and process one batch of ``channel``'s due notifications."""
        # After a failure the channel stays isolated for a while: a poison message that is
        # retried must not make the other callbacks of its batches run twice, again and again.
        if time.monotonic() >= self._isolated_until.get(channel, 0.0):
            result = self._run_batch(channel, isolated=False)
            if result is not None:
                return result
            self._isolated_until[channel] = time.monotonic() + _ISOLATION_PERIOD
            logger.info(
                "A message of a batch of channel %s failed: redoing the batch message by "
                "message, and the channel's batches for %.0f s",
                channel.name(),
                _ISOLATION_PERIOD,
                extra={"action": "isolating", "channel": channel.name()},
            )
        result = self._run_batch(channel, isolated=True)
        assert result is not None  # an isolated batch records failures instead of giving up
        return result

    def _run_batch(self, channel: type[BaseChannel], *, isolated: bool) -> BatchResult | None:
        """Run a batch; None when an optimistic (not isolated) batch had to be rolled back."""
        result = BatchResult()
        # Timed and reported only when a signal receiver is connected (hot path).
        outcomes: list[_Outcome] | None = [] if signals.receivers_connected() else None
        journal, record = self.journal, None
        try:
            with transaction.atomic(using=self.using):
                messages = queue.claim_batch(
                    channel.listen_safe_name(),
                    self.settings.batch_size,
                    using=self.using,
                    extra_filter=self.extra_filter,
                    measure_latency=outcomes is not None,
                )
                result.claimed = len(messages)
                if not messages:
                    return result
                if journal is not None:
                    record = journal.begin([message.id for message in messages])
                settled: list[int] = []
                if any(message.left_behind for message in messages):
                    messages, settled = self._settle_left_behind(
                        channel, messages, record, outcomes
                    )
                    result.failed += result.claimed - len(messages)
                    isolated = True  # one of them may kill this worker too
                handled: list[int] = []
                for message in messages:
                    if self.should_stop():
                        break  # the rest stay stored and are unlocked at commit
                    if isolated:
                        # (A record of a one-message batch names its message from the start.)
                        if journal is not None and record is not None and result.claimed > 1:
                            journal.running(record, message.id)
                        outcome = self._process_one(channel, message)
                        if outcomes is not None:
                            outcomes.append(outcome)
                        if outcome.error is not None:
                            result.failed += 1
                            continue
                    else:
                        started = time.perf_counter() if outcomes is not None else 0.0
                        if not self._deliver_stored(channel, message):
                            transaction.set_rollback(True, using=self.using)
                            self._discard(record)
                            return None
                        if outcomes is not None:
                            outcomes.append(_Outcome.of_stored(message, started))
                    handled.append(message.id)
                own = [record] if record is not None else []
                queue.delete_messages(handled, using=self.using, in_flight_records=own + settled)
        except IntegrityError:
            self._discard(record)
            if isolated:
                raise
            return None  # a deferred constraint failed at COMMIT: find the culprit
        except BaseException:
            self._discard(record)
            raise
        result.processed = len(handled)
        if outcomes:
            _report(channel, outcomes)  # after the commit: a redone batch reports once
        return result

    def _discard(self, record: int | None) -> None:
        """Delete this batch's in-flight record after a rollback: its worker is alive."""
        if record is None or self.journal is None:
            return
        try:
            self.journal.discard(record)
        except Exception:  # a lost connection: the next claimant settles the record
            logger.debug("Could not delete in-flight record %s", record, exc_info=True)

    def _settle_left_behind(
        self,
        channel: type[BaseChannel],
        messages: list[queue.StoredMessage],
        own_record: int | None,
        outcomes: list[_Outcome] | None,
    ) -> tuple[list[queue.StoredMessage], list[int]]:
        """Charge each message a dead worker was running; return the others, and the records
        to delete with this batch."""
        claimed = {message.id: message for message in messages}
        records = inflight.left_behind(list(claimed), using=self.using, own_record=own_record)
        if records:
            logger.warning(
                "%s message(s) of channel %s had been claimed by a worker that ended mid-batch "
                "(%s): running them one by one",
                len(messages),
                channel.name(),
                ", ".join(sorted({record.worker for record in records})),
                extra={"action": "left_behind", "channel": channel.name()},
            )
        settled: list[int] = []
        for record in records:
            if record.running_id is not None and record.running_id not in claimed:
                continue  # its running message is locked elsewhere: that claimant settles it
            settled.append(record.id)
            crashed = claimed.pop(record.running_id, None) if record.running_id else None
            if crashed is not None:
                outcome = self._charge_crash(channel, crashed, record)
                if outcomes is not None:
                    outcomes.append(outcome)
        return [message for message in messages if message.id in claimed], settled

    def _charge_crash(
        self, channel: type[BaseChannel], message: queue.StoredMessage, record: inflight.LeftBehind
    ) -> _Outcome:
        """Count the attempt of a message whose callbacks were running when its worker died."""
        error = WorkerDied(
            f"The worker process running this message ended before it finished ({record.worker},"
            f" batch started {record.started_at.isoformat(timespec='seconds')}): it was killed"
            " (for example by the out-of-memory killer or kill -9), crashed in native code, or"
            " was stopped without waiting."
        )
        return self._count_failed_attempt(
            channel,
            message,
            _Outcome.of_stored(message, time.perf_counter(), error),
            str(error),
            "was running when its worker process ended",
        )

    def _count_failed_attempt(
        self,
        channel: type[BaseChannel],
        message: queue.StoredMessage,
        failure: _Outcome,
        error_text: str,
        what_happened: str,
        *,
        exc_info: bool = False,
    ) -> _Outcome:
        """Record a failed attempt (a retry is scheduled, or the message is marked failed)
        and log it; return ``failure`` telling whether the message will be retried."""
        dead = queue.record_failure(message, error_text, using=self.using, settings=self.settings)
        logger.error(
            "Notification %s of channel %s %s (attempt %s of %s)%s",
            message.id,
            channel.name(),
            what_happened,
            message.attempts + 1,
            self.settings.max_attempts,
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

    def _deliver_stored(self, channel: type[BaseChannel], message: queue.StoredMessage) -> bool:
        try:
            self.dispatcher.deliver(channel, decode_payload(channel, message.payload_text))
        except BaseException:  # see _process_one: redone in isolation, where it is recorded
            return False
        return True

    def _process_one(self, channel: type[BaseChannel], message: queue.StoredMessage) -> _Outcome:
        started = time.perf_counter()
        try:
            with transaction.atomic(using=self.using):
                self.dispatcher.deliver(channel, decode_payload(channel, message.payload_text))
                # Deferred constraints (Django's foreign keys) would otherwise be checked at
                # the batch's COMMIT and fail every message of it: check them in this savepoint.
                connections[self.using].check_constraints()
        except BaseException as exc:
            # SystemExit, KeyboardInterrupt and the like too: raised by a callback, they are
            # that message's failure, not a request to stop the worker (signals stop it), and
            # letting them through would roll back and stall the whole batch, forever.
            return self._count_failed_attempt(
                channel,
                message,
                _Outcome.of_stored(message, started, exc),
                traceback.format_exc(),
                _failure_words(exc),
                exc_info=True,
            )
        outcome = _Outcome.of_stored(message, started)
        logger.debug(
            "Processed notification %s of channel %s: %s",
            message.id,
            channel.name(),
            message.payload_text,
            extra={"action": "processed", "channel": channel.name(), "notification_id": message.id},
        )
        return outcome

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
            total.claimed += batch.claimed
            total.processed += batch.processed
            total.failed += batch.failed
            if batch.claimed < self.settings.batch_size:
                break
        return total


def deliver_fanout(
    dispatcher: Dispatcher, channel: type[BaseChannel], payload: dict[str, Any], using: str
) -> bool:
    """Run the callbacks of a fan-out message; a failure is logged and the worker carries on."""
    observed = signals.receivers_connected()
    started = time.perf_counter() if observed else 0.0
    error: BaseException | None = None
    try:
        with transaction.atomic(using=using):
            dispatcher.deliver(channel, payload)
    except BaseException as exc:  # SystemExit too: see StoredProcessor._process_one
        error = exc
        logger.exception(
            "A listener of channel %s %s on a fan-out message (not retried)",
            channel.name(),
            _failure_words(exc),
            extra={"action": "failed", "channel": channel.name()},
        )
    if observed:
        _report(channel, [_Outcome(None, 1, time.perf_counter() - started, None, error)])
    return error is None


def process_stored_notifications(
    channels: Iterable[type[BaseChannel] | str] | None = None, using: str | None = None
) -> int:
    """Process every stored notification of ``channels`` (default: every lockable channel).

    Runs in the calling process; returns the number of notifications handled.
    """
    selected = [c for c in registry.select(include=channels) if c.lock_notifications]
    processor = StoredProcessor(using=using or DEFAULT_DB_ALIAS)
    return sum(processor.drain(channel).processed for channel in selected)
