"""Channels of the benchmark app."""

from __future__ import annotations

from dataclasses import dataclass

from benchapp.models import Item
from pgpubsub import Channel, TriggerChannel


@dataclass
class ItemChannel(TriggerChannel):
    """Exactly-once: every inserted ``Item`` is stored and handled by one worker."""

    model = Item
    lock_notifications = True


@dataclass
class Ping(Channel):
    """Fan-out: every listening process receives every message (nothing stored)."""

    run: int
    seq: int
    last: bool = False


@dataclass
class Standing(Channel):
    """A lockable channel no benchmark worker serves: its rows stand in the table."""

    n: int
    lock_notifications = True


@dataclass
class Ordered(Channel):
    """Per-key ordering: the messages of one ``key`` are handled one at a time, in id order."""

    key: str
    n: int
    lock_notifications = True
    ordering_key = "key"


@dataclass
class Unordered(Channel):
    """The shape of ``Ordered`` without ``ordering_key``: the rate ``Ordered`` is compared with."""

    key: str
    n: int
    lock_notifications = True


@dataclass
class Delayed(Channel):
    """Messages sent for later with ``notify_at``; ``n`` finds each one's due time."""

    n: int
    lock_notifications = True
