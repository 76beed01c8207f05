"""Worker recycling: ``listen --max-messages`` and ``--max-memory`` retire a worker after its
batch, and the supervisor replaces it, without losing or repeating a message."""

from __future__ import annotations

from collections import Counter

import pytest
from django.db import transaction

import pgpubsub
from pgpubsub.models import Notification
from pgpubsub.tasks.compat import TaskResultStatus
from pgpubsub.tasks.models import StoredTask
from testapp import tasks
from testapp.channels import Task
from testapp.models import ListenerEvent
from tests.acceptance.conftest import StartListen, task_keys
from tests.support.processes import wait_for

TASK = "testapp.channels.Task"


def handled_by() -> Counter[int]:
    """How many tasks each worker process handled."""
    return Counter(ListenerEvent.objects.filter(listener="task").values_list("pid", flat=True))


@pytest.mark.django_db(transaction=True)
def test_a_worker_past_max_messages_retires_after_its_batch_and_is_replaced(
    listen: StartListen,
) -> None:
    # Batches of 4: a worker retires after its third (12 messages), in the middle of the
    # backlog, which the next worker takes over.
    process = listen("--channels", TASK, "--max-messages", "10", env={"PGPUBSUB_BATCH_SIZE": "4"})
    (first,) = process.wait_for_workers(1)

    keys = [f"task {number:02}" for number in range(30)]
    with transaction.atomic():
        for key in keys:
            pgpubsub.notify(Task, key=key)

    wait_for(lambda: len(task_keys()) >= len(keys), message="every task handled")
    output = process.output()
    workers = process.worker_pids()
    process.stop()

    assert task_keys() == keys  # each exactly once, across the retirements
    assert not Notification.objects.exists()
    counts = handled_by()
    assert len(counts) >= 3, counts
    assert all(count <= 12 for count in counts.values()), counts
    assert first in counts
    assert "retiring: it took" in output and "(--max-messages 10)" in output
    assert "exited cleanly: starting its replacement" in output
    assert "exited with code 1" not in output and "restarting in" not in output
    assert workers[0] != first


@pytest.mark.django_db(transaction=True)
def test_a_worker_past_max_memory_retires_and_the_next_one_handles_the_rest(
    listen: StartListen,
) -> None:
    """A listener that leaks: the worker that ran it goes, and takes its memory with it."""
    process = listen("--channels", TASK, "--max-memory", "200")
    (leaky,) = process.wait_for_workers(1)

    pgpubsub.notify(Task, key="small")
    wait_for(lambda: task_keys() == ["small"], message="a task that leaks nothing")
    assert process.worker_pids() == {0: leaky}, "below the limit: the same worker"

    pgpubsub.notify(Task, key="leaks", leak_mb=250)
    wait_for(lambda: process.worker_pids()[0] != leaky, message="the leaking worker replaced")
    pgpubsub.notify(Task, key="after")
    wait_for(lambda: "after" in task_keys(), message="a task for the fresh worker")
    output = process.output()
    fresh = process.worker_pids()[0]
    process.stop()

    assert task_keys() == ["after", "leaks", "small"]
    assert handled_by() == Counter({leaky: 2, fresh: 1})
    assert "retiring: it uses" in output and "(--max-memory 200)" in output
    assert "exited cleanly: starting its replacement" in output


@pytest.mark.django_db(transaction=True)
def test_tasks_count_towards_max_messages_and_a_retiring_worker_hands_back_the_rest(
    listen: StartListen,
) -> None:
    # Only tasks: a worker retires before its fourth one, which the next worker runs.
    process = listen("--channels", TASK, "--max-messages", "3")
    process.wait_for_workers(1)
    with transaction.atomic():
        results = [tasks.add.enqueue(number, 1) for number in range(8)]

    wait_for(
        lambda: StoredTask.objects.filter(status=TaskResultStatus.SUCCESSFUL).count() == 8,
        timeout=60,
        message="8 tasks succeeded",
    )
    output = process.output()
    process.stop()

    done = [tasks.add.get_result(result.id) for result in results]
    assert [result.return_value for result in done] == [number + 1 for number in range(8)]
    assert all(result.attempts == 1 for result in done)  # none run twice
    runs = Counter(result.worker_ids[0] for result in done)
    assert sorted(runs.values()) == [2, 3, 3], runs
    assert "retiring: it took 3 messages (--max-messages 3)" in output
    assert "exited cleanly: starting its replacement" in output
