"""A bounded fault storm: connections cut at random while two workers drain a stream of messages.

Every message must take effect exactly once. Each message carries a unique key, and its callback
writes that key to a ledger (``ListenerEvent``) in the callback's transaction: a message lost is
a key missing from the ledger, a message handled twice is a key written twice. (No unique index
on the ledger: it would turn a second handling into a failure that the retries then hide.)
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest
from django.db import connection, connections, transaction

import pgpubsub
from pgpubsub.models import Notification
from testapp.channels import Task
from testapp.models import ListenerEvent
from tests.acceptance.conftest import StartListen
from tests.support.processes import wait_for

MESSAGES = 3000
SEND_BATCHES = 60
#: Seconds between two connection cuts (drawn uniformly).
CUT_EVERY = (0.05, 0.3)
#: Seconds the storm goes on after the last message is sent, while the workers drain.
STORM_TAIL = 4.0
#: The storm's own bound: it never runs longer than this, whatever happens.
STORM_SECONDS = 45.0
#: So many attempts that cut connections (which may charge a healthy message one attempt)
#: never make a message a dead letter: a dead letter here would count as a lost message.
STORM_ENV = {"PGPUBSUB_MAX_ATTEMPTS": "1000", "PGPUBSUB_RECONNECT_TIMEOUT": "60"}


class _ConnectionCutter(threading.Thread):
    """Terminates a random backend of the test database now and then, but not the test's."""

    def __init__(self, seed: int, spared: int) -> None:
        super().__init__(daemon=True)
        self.spared = spared
        self.random = random.Random(seed)
        self.stop_event = threading.Event()
        self.cuts = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        deadline = time.monotonic() + STORM_SECONDS
        try:
            while not self.stop_event.wait(self.random.uniform(*CUT_EVERY)):
                if time.monotonic() > deadline:
                    return
                self.cuts += self._cut_one()
        except BaseException as exc:  # reported by the test, not lost in a thread
            self.error = exc
        finally:
            connections.close_all()

    def _cut_one(self) -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND pid <> %s AND backend_type = 'client backend'",
                [self.spared],
            )
            candidates = [pid for (pid,) in cursor.fetchall()]
            if not candidates:
                return 0
            cursor.execute("SELECT pg_terminate_backend(%s)", [self.random.choice(candidates)])
            (terminated,) = cursor.fetchone()
            return int(terminated)


def _send_all(rng: random.Random) -> None:
    per_batch = MESSAGES // SEND_BATCHES
    for batch in range(SEND_BATCHES):
        with transaction.atomic():
            for number in range(per_batch):
                # A few slow callbacks, so that some cuts land in the middle of one.
                sleep = 0.02 if rng.random() < 0.03 else 0.0
                pgpubsub.notify(Task, key=f"storm-{batch}-{number}", sleep=sleep)
        time.sleep(rng.uniform(0.0, 0.1))


@pytest.mark.django_db(transaction=True)
def test_fault_storm_loses_nothing_and_handles_nothing_twice(
    listen: StartListen,
) -> None:
    seed = random.randrange(2**32)
    print(f"fault storm seed: {seed}")  # shown when the test fails: replay with this seed
    process = listen("--processes", "2", "--channels", "testapp.channels.Task", env=STORM_ENV)
    process.wait_for_workers(2)

    with connection.cursor() as cursor:  # the test's own connection, which sends
        cursor.execute("SELECT pg_backend_pid()")
        (own_backend,) = cursor.fetchone()
    cutter = _ConnectionCutter(seed, spared=own_backend)
    began = time.monotonic()
    cutter.start()
    try:
        _send_all(random.Random(seed))
        print(f"sent in {time.monotonic() - began:.1f} s, {cutter.cuts} cuts")
        cutter.stop_event.wait(STORM_TAIL)
    finally:
        cutter.stop_event.set()
        cutter.join(timeout=10)
    assert cutter.error is None, f"the connection cutter failed: {cutter.error!r}"
    # The storm is over: what is still stored drains without further faults.
    drain_began = time.monotonic()
    wait_for(
        lambda: not Notification.objects.exists(),
        timeout=30,
        interval=0.2,
        message="an empty queue after the storm",
    )
    print(f"storm: {cutter.cuts} cuts; drained {time.monotonic() - drain_began:.1f} s later")
    process.stop()

    handled = Counter(
        ListenerEvent.objects.filter(listener="task").values_list("object_key", flat=True)
    )
    per_batch = MESSAGES // SEND_BATCHES
    expected = {f"storm-{b}-{n}" for b in range(SEND_BATCHES) for n in range(per_batch)}
    assert cutter.cuts >= 10, f"only {cutter.cuts} connections were cut: not a storm"
    repeated = sorted(key for key, times in handled.items() if times > 1)
    assert not repeated, f"{len(repeated)} message(s) handled twice, e.g. {repeated[:10]}"
    lost = sorted(expected - set(handled))
    assert not lost, f"{len(lost)} message(s) lost, e.g. {lost[:10]}"
