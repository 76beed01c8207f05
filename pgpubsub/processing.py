"""Running a message's callbacks, and reporting how each attempt ended.

Shared by the processors of stored messages (:mod:`pgpubsub.stored`) and of fan-out
messages (:mod:`pgpubsub.fanout`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from django.db.models import Q
from django.utils.module_loading import import_string

from pgpubsub import codec, queue, signals
from pgpubsub.channel import BaseChannel
from pgpubsub.conf import PgPubSubSettings
from pgpubsub.registry import ChannelRegistry, Listener

logger = logging.getLogger(__name__)


def parse_json(channel: type[BaseChannel], text: str) -> Any:
    """Parse a channel's JSON; trigger rows keep numeric columns exact (``Decimal``)."""
    return codec.loads_exact(text) if channel.is_trigger_channel() else json.loads(text)


def decode_payload(channel: type[BaseChannel], text: str) -> dict[str, Any]:
    """Parse payload JSON into the object callbacks are decoded from."""
    data = parse_json(channel, text)
    if isinstance(data, str):
        # A JSON string holding the object: what django-pgpubsub 1.3's notify() stores, and
        # keeps storing while 1.3 code still runs beside 2.0 during a rolling deploy.
        data = parse_json(channel, data)
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
        #: The callback running now (read by the time limit's watchdog thread).
        self.running: Listener | None = None

    def deliver(self, channel: type[BaseChannel], payload: dict[str, Any]) -> int:
        """Run every callback of ``channel`` that accepts ``payload``; return how many ran."""
        self.running = None
        kwargs = channel.callback_kwargs(payload)
        # Only trigger payloads carry a context (django-pgpubsub 1.3 passed it to them only).
        if self._pass_context and channel.is_trigger_channel():
            kwargs["context"] = payload.get("context") or {}
        ran = 0
        for listener in self._registry.listeners_for(channel):
            if listener.accepts(payload):
                self.running = listener
                if listener.is_async:
                    # Runs the coroutine in a fresh event loop and the code it hands to
                    # sync_to_async (Django's async ORM methods) back on this thread: on this
                    # thread's connection, inside the batch's transaction.
                    async_to_sync(listener.callback)(**kwargs)
                else:
                    listener.callback(**kwargs)
                ran += 1
        self.running = None
        return ran

    def running_label(self) -> str | None:
        """The dotted path of the callback running now, if one is."""
        listener = self.running
        return None if listener is None else listener.label


@dataclass(frozen=True)
class Outcome:
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
    ) -> Outcome:
        return cls(
            message.id,
            message.attempts + 1,
            time.perf_counter() - started,
            message.claim_latency,
            error,
        )


def failure_words(exc: BaseException) -> str:
    """How a callback failed, in a log line's words."""
    if isinstance(exc, Exception):
        return "failed"
    return (
        f"failed: a callback raised {type(exc).__name__}, counted as its failure (the worker "
        "carries on; stop workers with SIGTERM)"
    )


def report_outcomes(channel: type[BaseChannel], outcomes: Iterable[Outcome]) -> None:
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
