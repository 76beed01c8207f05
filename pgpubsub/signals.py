"""Django signals sent as messages are processed: hooks for metrics, alerting and tracing.

Both are sent by the worker (and by ``process_stored_notifications``) after the transaction
that ran a message's callbacks ended, so a message counted as processed really is done: a
batch that is rolled back and redone message by message reports each message once. When no
receiver is connected nothing is timed or sent.

A receiver runs in the worker's thread, between two messages: keep it quick. An exception it
raises is logged (logger ``pgpubsub.processing``) and does not stop the worker.

Example::

    from django.dispatch import receiver
    from pgpubsub.signals import notification_failed

    @receiver(notification_failed)
    def page_on_dead_letter(sender, notification_id, error, will_retry, **kwargs):
        if not will_retry:
            alert(f"{sender.name()} message {notification_id} failed for good: {error!r}")
"""

from __future__ import annotations

from django.dispatch import Signal

#: Sent when a message's callbacks ran and their transaction committed.
#:
#: ``sender``: the channel class. Keyword arguments: ``notification_id`` (the stored
#: notification's id; ``None`` for a fan-out message), ``attempt`` (1 for the first attempt),
#: ``duration`` (seconds the callbacks took), ``claim_latency`` (seconds between the moment
#: a stored message became due and its claim by a worker; ``None`` for a fan-out message).
notification_processed = Signal()

#: Sent when a callback of a message raised (or its payload could not be decoded).
#:
#: ``sender``: the channel class. Keyword arguments: those of ``notification_processed``, and
#: ``error`` (the exception, with its ``__traceback__``) and ``will_retry`` (``True`` when the
#: stored message is scheduled for another attempt; ``False`` when it is now marked failed,
#: and for fan-out messages, which are never retried).
notification_failed = Signal()


def receivers_connected() -> bool:
    """Whether any receiver is connected to either signal (checked before timing anything)."""
    # The receivers list, as Signal.send() itself checks first: has_listeners() costs about
    # 2 µs even when nobody listens, this a few nanoseconds.
    return bool(notification_processed.receivers or notification_failed.receivers)
