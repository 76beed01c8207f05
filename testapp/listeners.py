"""Listeners of the example app."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from django.db import connection
from django.db.models import F

import pgpubsub
from testapp.channels import (
    Announcement,
    AsyncTask,
    AuthorTriggerChannel,
    ChildTriggerChannel,
    LedgerEntryTriggerChannel,
    MediaTriggerChannel,
    OrderedTask,
    PostReads,
    PostTriggerChannel,
    Receipt,
    Task,
    Tick,
)
from testapp.models import Author, Ledger, LedgerEntry, ListenerEvent, Post


@pgpubsub.post_insert_listener(AuthorTriggerChannel)
def create_first_post(old: Author | None, new: Author, **context: Any) -> None:
    """Give each new author a first post."""
    Post.objects.create(author_id=new.pk, title=f"Welcome, {new.name}!")


@pgpubsub.post_insert_listener(PostTriggerChannel)
def log_new_post(old: Post | None, new: Post, **context: Any) -> None:
    ListenerEvent.objects.create(
        listener="log_new_post", operation="insert", object_key=str(new.pk), pid=os.getpid()
    )


@pgpubsub.listener(PostReads)
def count_read(post_id: int) -> None:
    Post.objects.filter(pk=post_id).update(read_count=F("read_count") + 1)


def _record_media(operation: str, old: Any, new: Any) -> None:
    row = new if new is not None else old
    ListenerEvent.objects.create(
        listener="media",
        operation=operation,
        object_key=str(row.pk),
        detail={
            "old_title": old.title if old else None,
            "new_title": new.title if new else None,
            "price": str(row.price),
            "owner_id": row.owner_id,
        },
        pid=os.getpid(),
    )


@pgpubsub.post_insert_listener(MediaTriggerChannel)
def media_inserted(old: Any, new: Any, **context: Any) -> None:
    _record_media("insert", old, new)


@pgpubsub.post_update_listener(MediaTriggerChannel)
def media_updated(old: Any, new: Any, **context: Any) -> None:
    _record_media("update", old, new)


@pgpubsub.pre_delete_listener(MediaTriggerChannel)
def media_deleted(old: Any, new: Any, **context: Any) -> None:
    _record_media("delete", old, new)


@pgpubsub.post_save_listener(ChildTriggerChannel)
def child_saved(old: Any, new: Any, **context: Any) -> None:
    ListenerEvent.objects.create(
        listener="child",
        object_key=str(new.pk),
        detail={"toy": new.toy, "id": new.id, "name": new.name, "born": str(new.born)},
    )


#: An Announcement with this text hangs its callback (tests of time limits).
HANGING_ANNOUNCEMENT = "hang past the time limit"


@pgpubsub.listener(Announcement)
def record_announcement(**fields: Any) -> None:
    if fields["text"] == HANGING_ANNOUNCEMENT:
        time.sleep(120)
    ListenerEvent.objects.create(
        listener="announcement",
        object_key=fields["text"][:100],
        detail={"length": len(fields["text"]), "count": fields["count"]},
        pid=os.getpid(),
    )


#: What leaking tasks keep (``Task.leak_mb``), for the life of the worker process.
_leaked: list[bytes] = []


@pgpubsub.listener(Task)
def run_task(
    key: str,
    fail: bool,
    sleep: float,
    crash: bool,
    raise_base: str,
    leak_mb: int = 0,
    query_sleep: float = 0.0,
) -> None:
    if query_sleep:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(%s)", [query_sleep])
    if leak_mb:
        _leaked.append(b"x" * (leak_mb * 1024 * 1024))  # written, so resident
    if sleep:
        time.sleep(sleep)
    if fail:
        raise ValueError(f"task {key} was asked to fail")
    if raise_base == "SystemExit":
        sys.exit(3)
    if raise_base == "KeyboardInterrupt":
        raise KeyboardInterrupt
    if raise_base:
        raise BaseException(f"task {key} raised a bare BaseException")
    if crash:  # what the out-of-memory killer, or a crash in native code, does to a worker
        os.kill(os.getpid(), signal.SIGKILL)
    ListenerEvent.objects.create(listener="task", object_key=key, pid=os.getpid())


@pgpubsub.listener(Receipt)
def record_receipt(order_id: int) -> None:
    """Record which message this is (a replayed copy names its original)."""
    message = pgpubsub.current_message()
    assert message is not None
    ListenerEvent.objects.create(
        listener="receipt",
        object_key=str(order_id),
        detail={"id": message.id, "replay_of": message.replay_of, "attempt": message.attempt},
        pid=os.getpid(),
    )


@pgpubsub.listener(AsyncTask)
async def run_async_task(key: str, fail: bool) -> None:
    """An async listener: its ORM work joins the worker's transaction, as a plain one's does."""
    await ListenerEvent.objects.acreate(listener="async_task", object_key=key, pid=os.getpid())
    if fail:
        raise ValueError(f"async task {key} was asked to fail")


@pgpubsub.post_insert_listener(LedgerEntryTriggerChannel)
def apply_ledger_entry(old: LedgerEntry | None, new: LedgerEntry, **context: Any) -> None:
    """Runs on a worker of the "other" database, where the router sends ledgers."""
    Ledger.objects.filter(pk=new.ledger_id).update(
        balance=F("balance") + new.amount, last_applied_by=os.getpid()
    )


@pgpubsub.listener(Tick)
def tick(number: int) -> None:
    """Does nothing: what a backlog of Tick messages costs is pgpubsub's own work."""


@pgpubsub.listener(OrderedTask)
def run_ordered_task(key: str, seq: int, sleep: float, fail_attempts: int) -> None:
    message = pgpubsub.current_message()
    assert message is not None
    if message.attempt <= fail_attempts:
        raise ValueError(f"ordered task {key} #{seq} was asked to fail")
    if sleep:
        time.sleep(sleep)
    ListenerEvent.objects.create(
        listener="ordered", object_key=key, detail={"seq": seq}, pid=os.getpid()
    )
