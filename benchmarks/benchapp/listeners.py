"""Listeners of the benchmark app: as little work as a real callback does, and no less."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pgpubsub
from benchapp.channels import Delayed, ItemChannel, Ordered, Ping, Standing, Unordered
from benchapp.models import Effect, FanoutReport, Item


@pgpubsub.post_insert_listener(ItemChannel)
def record_effect(old: Item | None, new: Item) -> None:
    """Write one ``Effect`` row per message, with the time the callback started."""
    started = time.time()
    Effect.objects.create(
        item_id=new.pk, pid=os.getpid(), started_at=started, finished_at=time.time()
    )


@dataclass
class _FanoutRun:
    run: int = -1
    received: int = 0
    first_at: float = 0.0


_fanout = _FanoutRun()


@pgpubsub.listener(Ping)
def count_ping(run: int, seq: int, last: bool) -> None:
    """Count a run's messages in memory; report once, at the run's last message.

    Fan-out callbacks commit one by one, so a database write per message would measure
    the disk's fsync rate instead of message delivery.
    """
    now = time.time()
    if run != _fanout.run:
        _fanout.run, _fanout.received, _fanout.first_at = run, 0, now
    _fanout.received += 1
    if last:
        FanoutReport.objects.create(
            run=run,
            pid=os.getpid(),
            received=_fanout.received,
            first_at=_fanout.first_at,
            last_at=now,
        )


@pgpubsub.listener(Standing)
def ignore_standing(n: int) -> None:
    """Registered so that ``Standing`` is a real channel; no benchmark worker serves it."""


@pgpubsub.listener(Ordered)
@pgpubsub.listener(Unordered)
def record_keyed(key: str, n: int) -> None:
    """One ``Effect`` per message (``item_id`` = ``n``): its id tells the order of handling."""
    started = time.time()
    Effect.objects.create(item_id=n, pid=os.getpid(), started_at=started, finished_at=time.time())


@pgpubsub.listener(Delayed)
def record_delayed(n: int) -> None:
    """One ``Effect`` per message, stamped when its callback started (against its due time)."""
    started = time.time()
    Effect.objects.create(item_id=n, pid=os.getpid(), started_at=started, finished_at=time.time())
