"""The tasks backend (pgpubsub.tasks) with a real PostgreSQL, run in-process by run_tasks()."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from pgpubsub.tasks import store, task_options
from pgpubsub.tasks.compat import (
    InvalidTask,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_backends,
    task_enqueued,
    task_finished,
    task_started,
)
from pgpubsub.tasks.models import StoredTask
from pgpubsub.tasks.runner import run_tasks
from testapp import tasks
from testapp.models import Author

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_task_enqueued_runs_and_its_result_is_stored() -> None:
    result = tasks.add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY
    assert run_tasks() == 1
    stored = tasks.add.get_result(result.id)
    assert stored.status == TaskResultStatus.SUCCESSFUL
    assert stored.return_value == 5
    assert stored.args == [2, 3]
    assert stored.attempts == 1 and len(stored.worker_ids) == 1
    assert stored.enqueued_at <= stored.started_at <= stored.finished_at
    result.refresh()
    assert result.return_value == 5


def test_a_task_enqueued_in_a_rolled_back_transaction_never_runs() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.record_run.enqueue("rolled back")
        raise RuntimeError("roll back")
    assert run_tasks() == 0
    assert not StoredTask.objects.exists()


def test_a_task_enqueued_in_a_committed_transaction_runs() -> None:
    with transaction.atomic():
        result = tasks.record_run.enqueue("committed")
    assert run_tasks() == 1
    assert Author.objects.filter(name="committed").exists()
    assert tasks.record_run.get_result(result.id).status == TaskResultStatus.SUCCESSFUL


def test_higher_priority_tasks_run_first() -> None:
    tasks.record_run.using(priority=-10).enqueue("low")
    tasks.record_run.enqueue("normal")
    tasks.record_run.using(priority=50).enqueue("high")
    run_tasks()
    assert list(Author.objects.order_by("id").values_list("name", flat=True)) == [
        "high",
        "normal",
        "low",
    ]


def test_a_task_with_run_after_waits_until_then() -> None:
    later = timezone.now() + datetime.timedelta(hours=1)
    result = tasks.add.using(run_after=later).enqueue(1, 1)
    assert run_tasks() == 0
    StoredTask.objects.filter(pk=result.id).update(available_at=timezone.now())
    assert run_tasks() == 1
    stored = tasks.add.get_result(result.id)
    assert stored.return_value == 2 and stored.task.run_after == later


def test_an_async_task_runs() -> None:
    result = tasks.async_add.enqueue(20, 22)
    run_tasks()
    assert tasks.async_add.get_result(result.id).return_value == 42


def test_a_failing_task_is_retried_then_failed_with_its_errors() -> None:
    result = tasks.always_fails.enqueue("boom")
    run_tasks()
    first = tasks.always_fails.get_result(result.id)
    assert first.status == TaskResultStatus.READY  # waiting for its retry
    assert [e.exception_class_path for e in first.errors] == ["builtins.ValueError"]
    StoredTask.objects.filter(pk=result.id).update(available_at=timezone.now())
    run_tasks()
    dead = tasks.always_fails.get_result(result.id)
    assert dead.status == TaskResultStatus.FAILED  # max_attempts=2 (task_options)
    assert len(dead.errors) == 2 and "ValueError: boom" in dead.errors[-1].traceback
    assert dead.errors[-1].exception_class is ValueError
    assert dead.attempts == 2 and dead.finished_at is not None
    with pytest.raises(ValueError, match="failed"):
        dead.return_value  # noqa: B018


def test_a_failed_task_can_be_retried() -> None:
    result = tasks.always_fails.enqueue("boom")
    StoredTask.objects.filter(pk=result.id).update(status="FAILED", attempts=2)
    assert store.retry_failed(using="default", ids=[int(result.id)]) == 1
    assert tasks.always_fails.get_result(result.id).status == TaskResultStatus.READY
    run_tasks()
    assert StoredTask.objects.get(pk=result.id).attempts == 1


def test_a_task_given_its_context_sees_its_attempt() -> None:
    result = tasks.fails_first.enqueue("second time")
    run_tasks()
    StoredTask.objects.filter(pk=result.id).update(available_at=timezone.now())
    run_tasks()
    stored = tasks.fails_first.get_result(result.id)
    assert stored.return_value == 2 and stored.attempts == 2


def test_by_default_a_task_runs_outside_any_transaction() -> None:
    result = tasks.in_transaction.enqueue()
    run_tasks()
    assert tasks.in_transaction.get_result(result.id).return_value is False


def test_an_atomic_task_runs_in_the_transaction_that_records_its_result() -> None:
    result = tasks.atomic_in_transaction.enqueue()
    run_tasks()
    assert tasks.atomic_in_transaction.get_result(result.id).return_value is True


def test_an_atomic_task_that_fails_leaves_no_database_effect() -> None:
    tasks.atomic_then_fail.enqueue("atomic")
    tasks.outside_then_fail.enqueue("outside")
    run_tasks()
    assert list(Author.objects.values_list("name", flat=True)) == ["outside"]


def test_a_return_value_json_cannot_hold_fails_the_task() -> None:
    result = tasks.returns_object.enqueue()
    run_tasks()
    stored = tasks.returns_object.get_result(result.id)
    assert stored.status == TaskResultStatus.READY
    assert "not JSON-serialisable" in stored.errors[0].traceback


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        ((timezone.now(),), {}, "args[0] is a datetime.datetime"),
        ((), {"a": {1: 2}}, "kwargs['a'] has the key 1"),
        ((float("nan"),), {}, "args[0] is nan"),
        ((), {"a": [Author()]}, "kwargs['a'][0] is a testapp.models.Author"),
    ],
)
def test_arguments_json_cannot_hold_are_refused_at_enqueue(
    args: tuple[Any, ...], kwargs: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidTask, match=named.replace("[", r"\[").replace("]", r"\]")):
        tasks.add.enqueue(*args, **kwargs)
    assert not StoredTask.objects.exists()


def test_a_queue_the_backend_does_not_have_is_refused() -> None:
    with pytest.raises(InvalidTask, match="Queue 'nope'"):
        tasks.add.using(queue_name="nope")


def test_a_task_a_worker_could_not_import_is_refused_at_enqueue() -> None:
    shadowed = tasks.add.using(priority=1)
    # Its path names the plain function below, which is not a task.
    object.__setattr__(shadowed, "func", plain_function)
    with pytest.raises(InvalidTask, match="a worker would not find it"):
        shadowed.enqueue("x")


def plain_function(x: str) -> None:
    """A module-level function that is not a task."""


def test_a_result_that_does_not_exist() -> None:
    with pytest.raises(TaskResultDoesNotExist):
        tasks.add.get_result("123456789")
    with pytest.raises(TaskResultDoesNotExist, match="integers"):
        tasks.add.get_result("not-an-id")


@pytest.fixture
def signals_sent() -> Iterator[list[tuple[str, str]]]:
    sent: list[tuple[str, str]] = []

    def receiver(name: str) -> Any:
        def receive(sender: Any, task_result: Any, **kwargs: Any) -> None:
            sent.append((name, str(task_result.status)))

        return receive

    receivers = [
        (s, receiver(n))
        for s, n in (
            (task_enqueued, "enqueued"),
            (task_started, "started"),
            (task_finished, "finished"),
        )
    ]
    for signal, receive in receivers:
        signal.connect(receive)
    yield sent
    for signal, receive in receivers:
        signal.disconnect(receive)


def test_signals_are_sent(signals_sent: list[tuple[str, str]]) -> None:
    tasks.add.enqueue(1, 2)
    run_tasks()
    assert signals_sent == [
        ("enqueued", "READY"),
        ("started", "RUNNING"),
        ("finished", "SUCCESSFUL"),
    ]


def test_a_running_task_whose_lease_nobody_holds_is_charged_an_attempt() -> None:
    result = tasks.record_run.enqueue("orphan")
    # Claimed under a lease that no session holds, as by a worker that was killed.
    (claimed,) = store.claim(
        using="default", backend="default", queues=["default"], worker_id="dead", lease=12345
    )
    assert claimed.attempts == 1
    assert run_tasks() == 0  # charged an attempt: READY again after the retry delay
    assert tasks.record_run.get_result(result.id).status == TaskResultStatus.READY
    StoredTask.objects.filter(pk=result.id).update(available_at=timezone.now())
    assert run_tasks() == 1
    stored = tasks.record_run.get_result(result.id)
    assert stored.status == TaskResultStatus.SUCCESSFUL
    assert stored.errors[0].exception_class_path == "pgpubsub.exceptions.WorkerDied"
    assert stored.worker_ids[0] == "dead" and stored.attempts == 2


def test_a_running_task_whose_lease_is_held_is_left_alone() -> None:
    tasks.record_run.enqueue("alive")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s, 777)", [store.LEASE_CLASS])
    try:
        store.claim(
            using="default", backend="default", queues=["default"], worker_id="w", lease=777
        )
        assert run_tasks() == 0
        assert StoredTask.objects.get().status == "RUNNING"
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, 777)", [store.LEASE_CLASS])


def test_results_are_pruned_after_the_retention() -> None:
    old = tasks.add.enqueue(1, 1)
    new = tasks.add.enqueue(2, 2)
    run_tasks()
    StoredTask.objects.filter(pk=old.id).update(
        finished_at=timezone.now() - datetime.timedelta(days=2)
    )
    backend = task_backends["default"]
    assert store.prune(using="default", backend="default", successful=86400, failed=None) == 1
    assert StoredTask.objects.filter(pk=new.id).exists()
    assert backend.backend_options.result_retention == 86400


def test_the_backend_check_reports_bad_options() -> None:
    bad = {
        "default": {
            "BACKEND": "pgpubsub.tasks.PgPubSubBackend",
            "QUEUES": ["bad queue"],
            "OPTIONS": {
                "MAX_ATTEMPS": 3,
                "ATOMIC": "yes",
                "DATABASE": "nowhere",
                "TIME_LIMIT": 0,
            },
        }
    }
    with override_settings(TASKS=bad):
        messages = [m.msg for m in task_backends["default"].check()]
    assert any("unknown option 'MAX_ATTEMPS'" in m for m in messages)
    assert any("ATOMIC must be True or False" in m for m in messages)
    assert any("'bad queue' is not a valid queue name" in m for m in messages)
    assert any("'nowhere', not an alias of DATABASES" in m for m in messages)
    assert any("TIME_LIMIT must be a number greater than 0, or None" in m for m in messages)


@pytest.mark.parametrize("limit", [0, -1, "30", True])
def test_a_tasks_time_limit_must_be_a_positive_number_of_seconds(limit: object) -> None:
    with pytest.raises(TypeError, match=r"task_options\(time_limit=...\) must be a number"):
        task_options(time_limit=limit)  # type: ignore[arg-type]


def test_of_a_dead_workers_batch_the_first_task_is_charged_and_the_rest_handed_back() -> None:
    results = [tasks.record_run.enqueue(name) for name in ("running", "waiting 1", "waiting 2")]
    claimed = store.claim(
        using="default",
        backend="default",
        queues=["default"],
        worker_id="dead",
        lease=4242,
        limit=3,
    )
    assert [c.attempts for c in claimed] == [1, 1, 1]
    assert run_tasks() == 2  # the two handed back run now; the charged one waits for its retry
    first, *others = (StoredTask.objects.get(pk=r.id) for r in results)
    assert (first.status, first.attempts, len(first.errors)) == ("READY", 1, 1)
    assert first.worker_ids == ["dead"]
    for other in others:
        assert (other.status, other.attempts, other.errors) == ("SUCCESSFUL", 1, [])
        assert "dead" not in other.worker_ids


def test_a_worker_hands_back_the_tasks_of_its_batch_it_did_not_start_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pgpubsub.conf import get_settings
    from pgpubsub.tasks import runner

    monkeypatch.setattr(runner, "HOLD_SECONDS", 0.0)  # every batch is late after its first task
    ids = [int(tasks.record_run.enqueue(name).id) for name in ("a", "b", "c")]
    worker = runner.TaskRunner(
        task_backends["default"], ["default"], settings=get_settings(), worker_id="w"
    )
    execute = runner.django_session("default")
    worker.attach(execute)
    try:
        claimed = store.claim(
            using="default",
            backend="default",
            queues=["default"],
            worker_id="w",
            lease=worker._lease or 0,
            limit=3,
        )
        assert worker._run_batch(claimed) == 1
        handed_back = StoredTask.objects.filter(pk__in=ids[1:])
        assert {(t.status, t.attempts, tuple(t.worker_ids)) for t in handed_back} == {
            ("READY", 0, ())
        }
        assert worker.drain() == 2
    finally:
        worker.release(execute)
    assert list(Author.objects.order_by("id").values_list("name", flat=True)) == ["a", "b", "c"]
    assert [t.attempts for t in StoredTask.objects.order_by("id")] == [1, 1, 1]


def test_djangos_check_of_task_backends_is_registered_at_startup(tmp_path: Path) -> None:
    # A fresh process whose settings import no tasks framework (testapp's do), nor the
    # backport's app: pgpubsub's app has Django register the check that runs the backend's.
    (tmp_path / "minimal_settings.py").write_text(
        "INSTALLED_APPS = ['pgtrigger', 'pgpubsub']\n"
        "DATABASES = {'default': {'ENGINE': 'django.db.backends.postgresql', 'NAME': 'x'}}\n"
        "TASKS = {'default': {'BACKEND': 'pgpubsub.tasks.PgPubSubBackend'}}\n"
        "USE_TZ = True\n"
    )
    code = (
        "import django; django.setup(); from django.core.checks import registry; "
        "print(any(c.__name__ == 'check_tasks' for c in registry.registry.registered_checks))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "minimal_settings",
            "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        },
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert output.strip() == "True"
