"""A Worker run in-process on a thread: fan-out delivery and draining of stored messages."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import pgpubsub
from pgpubsub.models import Notification
from pgpubsub.worker import WorkerOptions, create_worker
from testapp.channels import Announcement, Task
from testapp.models import ListenerEvent
from tests.support.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


class WorkerThread:
    """Runs ``Worker.run`` on a thread; the test stops it and checks it ended cleanly."""

    def __init__(self, *channels: str) -> None:
        self.worker = create_worker(WorkerOptions(channels=channels))
        self.exit_codes: list[int] = []
        self.thread = threading.Thread(target=self._run, name="pgpubsub-test-worker")

    def _run(self) -> None:
        self.exit_codes.append(self.worker.run())

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.worker.request_stop()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "the worker did not stop"
        assert self.exit_codes == [0], "the worker did not exit cleanly"


@pytest.fixture
def worker() -> Iterator[WorkerThread]:
    running = WorkerThread("testapp.channels.Announcement", "testapp.channels.Task")
    yield running
    if running.thread.is_alive():
        running.stop()


def delivered(listener: str, **fields: Any) -> bool:
    return ListenerEvent.objects.filter(listener=listener, **fields).exists()


def start_listening(worker: WorkerThread) -> None:
    """Start the worker and wait until it listens: it drains stored messages once it does."""
    pgpubsub.notify(Task, key="stored before start")
    worker.start()
    wait_for(
        lambda: delivered("task", object_key="stored before start"),
        timeout=15,
        message="the worker to drain the message stored before it started",
    )


def test_worker_delivers_fan_out_messages_and_stored_messages(worker: WorkerThread) -> None:
    start_listening(worker)

    pgpubsub.notify(Announcement, text="hello everyone", count=3)
    pgpubsub.notify(Task, key="stored while running")

    wait_for(lambda: delivered("announcement", object_key="hello everyone", detail__count=3))
    wait_for(lambda: delivered("task", object_key="stored while running"))
    wait_for(lambda: not Notification.objects.exists(), message="the stored rows to be deleted")
    worker.stop()
    assert worker.exit_codes == [0]


def test_worker_reads_an_oversized_fan_out_message_from_its_stored_copy(
    worker: WorkerThread,
) -> None:
    start_listening(worker)
    text = "y" * 100_000

    pgpubsub.notify(Announcement, text=text)

    wait_for(lambda: delivered("announcement", detail__length=100_000))
    worker.stop()


def test_worker_keeps_going_after_a_failing_message(worker: WorkerThread) -> None:
    start_listening(worker)

    pgpubsub.notify(Task, key="bad", fail=True)
    pgpubsub.notify(Task, key="after the bad one")

    wait_for(lambda: delivered("task", object_key="after the bad one"))
    failed = wait_for(lambda: Notification.objects.filter(attempts__gte=1).first())
    assert failed.payload["kwargs"]["key"] == "bad"
    worker.stop()
    assert worker.exit_codes == [0]
