"""Fan-out messages (channels without ``lock_notifications``): delivered from their NOTIFY.

Every listening worker runs the callbacks of every fan-out message once; nothing is stored
(except an oversized payload, by reference) and nothing is retried.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from django.db import transaction

from pgpubsub import codec, envelope, queue, signals
from pgpubsub.channel import BaseChannel
from pgpubsub.conf import PgPubSubSettings
from pgpubsub.processing import (
    Dispatcher,
    Outcome,
    decode_payload,
    failure_words,
    report_outcomes,
)
from pgpubsub.registry import ChannelRegistry

logger = logging.getLogger(__name__)


class FanoutProcessor:
    """Decodes the NOTIFY of a fan-out message and runs the channel's callbacks.

    Anyone who can connect may NOTIFY a channel: text that is not an envelope pgpubsub wrote
    is logged (its start only) and dropped, whatever its bytes.
    """

    def __init__(
        self, channel_registry: ChannelRegistry, settings: PgPubSubSettings, using: str
    ) -> None:
        self.dispatcher = Dispatcher(channel_registry, settings)
        self.using = using

    def deliver(self, channel: type[BaseChannel], text: str) -> bool:
        """Run the callbacks of the message ``text``; False when it was dropped or failed."""
        payload = self._payload(channel, text)
        if payload is None:
            return False
        return deliver_fanout(self.dispatcher, channel, payload, self.using)

    def _payload(self, channel: type[BaseChannel], text: str) -> dict[str, Any] | None:
        try:
            decoded = envelope.decode(
                text, codec.loads_exact if channel.is_trigger_channel() else json.loads
            )
        except envelope.UnreadableEnvelope as exc:
            logger.warning(
                "Dropped a NOTIFY on channel %s that pgpubsub did not write: %s; it was %s",
                channel.name(),
                exc,
                envelope.excerpt(text),
                extra={"action": "dropped", "channel": channel.name()},
            )
            return None
        if isinstance(decoded, envelope.Inline):
            return decoded.payload
        stored = queue.load_broadcast(decoded.id, using=self.using)
        if stored is None:
            logger.warning(
                "Oversized message %s of channel %s was pruned before it was read "
                "(PGPUBSUB_BROADCAST_RETENTION)",
                decoded.id,
                channel.name(),
                extra={"action": "dropped", "channel": channel.name()},
            )
            return None
        return decode_payload(channel, stored)


def deliver_fanout(
    dispatcher: Dispatcher, channel: type[BaseChannel], payload: dict[str, Any], using: str
) -> bool:
    """Run the callbacks of a fan-out message; a failure is logged and the worker carries on."""
    observed = signals.receivers_connected() or logger.isEnabledFor(logging.DEBUG)
    started = time.perf_counter() if observed else 0.0
    error: BaseException | None = None
    try:
        with transaction.atomic(using=using):
            dispatcher.deliver(channel, payload)
    except BaseException as exc:  # SystemExit too: see pgpubsub.stored
        error = exc
        logger.exception(
            "A listener of channel %s %s on a fan-out message (not retried)",
            channel.name(),
            failure_words(exc),
            extra={"action": "failed", "channel": channel.name()},
        )
    if observed:
        duration = time.perf_counter() - started
        report_outcomes(channel, [Outcome(None, 1, duration, None, error)])
        if error is None:
            logger.debug(
                "Handled a fan-out message of channel %s in %.1f ms",
                channel.name(),
                duration * 1000,
                extra={"action": "processed", "channel": channel.name(), "duration": duration},
            )
    return error is None
