"""Channels of the example app."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from decimal import Decimal
from uuid import UUID

from pgpubsub import Channel, TriggerChannel
from testapp.models import Author, Child, LedgerEntry, Media, Post


@dataclass
class AuthorTriggerChannel(TriggerChannel):
    """Every new author gets exactly one first post, however many workers run."""

    model = Author
    lock_notifications = True


@dataclass
class PostTriggerChannel(TriggerChannel):
    """Fan-out: every listening process hears about every post (not stored)."""

    model = Post


@dataclass
class PostReads(Channel):
    """Sent from Python when a post is read; counted exactly once."""

    post_id: int
    lock_notifications = True


@dataclass
class MediaTriggerChannel(TriggerChannel):
    model = Media
    lock_notifications = True


@dataclass
class ChildTriggerChannel(TriggerChannel):
    model = Child
    lock_notifications = True


@dataclass
class Announcement(Channel):
    """A plain fan-out channel carrying every supported field type."""

    text: str
    count: int = 0
    ratio: float = 0.0
    flag: bool = False
    amount: Decimal = Decimal("0")
    ident: UUID | None = None
    day: datetime.date | None = None
    moment: datetime.datetime | None = None
    tags: list[str] = field(default_factory=list)
    pair: tuple[int, ...] = ()
    unique: set[int] = field(default_factory=set)
    scores: dict[str, Decimal] = field(default_factory=dict)


@dataclass
class Task(Channel):
    """A lockable plain channel: fails, sleeps or kills its worker process when asked to."""

    key: str
    fail: bool = False
    sleep: float = 0.0
    crash: bool = False
    #: "SystemExit", "KeyboardInterrupt" or "BaseException": raise it (a callback's bug).
    raise_base: str = ""
    #: Keep this many MB allocated for the life of the worker process (a leaking listener).
    leak_mb: int = 0
    #: Seconds to wait in a query (``pg_sleep``): the callback blocks in the driver's C code.
    query_sleep: float = 0.0
    lock_notifications = True


@dataclass
class AsyncTask(Channel):
    """Like Task, for an ``async def`` listener."""

    key: str
    fail: bool = False
    lock_notifications = True


@dataclass
class LedgerEntryTriggerChannel(TriggerChannel):
    """Entries live in the "other" database: its trigger is installed there only."""

    model = LedgerEntry
    lock_notifications = True


@dataclass
class Tick(Channel):
    """A lockable channel whose listener does nothing: large backlogs that drain quickly."""

    number: int
    lock_notifications = True


@dataclass
class Receipt(Channel):
    """A lockable channel whose listener records the identity of the message it handles."""

    order_id: int
    lock_notifications = True


__all__ = [
    "Announcement",
    "AsyncTask",
    "Author",
    "AuthorTriggerChannel",
    "ChildTriggerChannel",
    "LedgerEntryTriggerChannel",
    "MediaTriggerChannel",
    "OrderedTask",
    "Post",
    "PostReads",
    "PostTriggerChannel",
    "Receipt",
    "Task",
    "Tick",
]


@dataclass
class OrderedTask(Channel):
    """Messages of one key are handled one at a time, in the order they were sent."""

    key: str
    seq: int
    sleep: float = 0.0
    #: Fail this many attempts before succeeding (more than PGPUBSUB_MAX_ATTEMPTS: dead letter).
    fail_attempts: int = 0
    lock_notifications = True
    ordering_key = "key"
