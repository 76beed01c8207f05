"""Django's connection pool (Django 5.1+, psycopg 3) does not get in the way of listening.

The workers below run with DATABASE_POOL=1 (testapp/settings.py): Django's own connections
come from a psycopg pool, while each worker's LISTEN connection is a connection of its own.
Where Django or the driver cannot pool, these tests are skipped; CI runs the whole suite in a
virtualenv that pools (.ci/run), where they run.
"""

from __future__ import annotations

import importlib.util

import django
import pytest
from django.db import connection

import pgpubsub
from pgpubsub.connection import WORKER_APPLICATION_NAME
from pgpubsub.models import Notification
from testapp.channels import Task
from tests.acceptance.conftest import StartListen, task_keys
from tests.support.processes import backend_pids, wait_for

POOLED = {"DATABASE_POOL": "1"}


def pooling_unavailable() -> str | None:
    """Why Django's connection pool cannot be used here, or None when it can."""
    if django.VERSION < (5, 1):
        return f"Django {django.get_version()} has no connection pool (5.1+ has)"
    if connection.vendor != "postgresql" or connection.Database.__name__ != "psycopg":
        return "Django's connection pool needs psycopg 3; this environment uses psycopg2"
    if importlib.util.find_spec("psycopg_pool") is None:
        return "Django's connection pool needs psycopg-pool: pip install 'psycopg[pool]'"
    return None


@pytest.fixture(autouse=True)
def _needs_pooling() -> None:
    reason = pooling_unavailable()
    if reason:
        pytest.skip(reason)


def listen_backends(worker: int) -> list[int]:
    """The backends of process ``worker`` opened as its LISTEN connection (named after it)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s) AND application_name LIKE %s",
            [backend_pids(worker), f"{WORKER_APPLICATION_NAME} {worker} %"],
        )
        return [pid for (pid,) in cursor.fetchall()]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_pooled_workers_receive_notifications_on_their_own_listen_connection(
    listen: StartListen, start_method: str
) -> None:
    # Polling once a minute: within the test, messages arrive only through LISTEN.
    process = listen(
        "--processes",
        "2",
        "--worker-start-method",
        start_method,
        "--channels",
        "testapp.channels.Task",
        env={**POOLED, "PGPUBSUB_POLL_INTERVAL": "60"},
    )
    workers = process.wait_for_workers(2)
    process.wait_listening(2)

    keys = [f"pooled {number:02}" for number in range(40)]
    for key in keys:
        pgpubsub.notify(Task, key=key)
    wait_for(
        lambda: len(task_keys()) >= len(keys) and not Notification.objects.exists(),
        timeout=20,
        message="40 tasks handled through LISTEN by pooled workers",
    )

    # One LISTEN connection per worker, beside (not among) the connections of its pool.
    for worker in workers:
        listening = listen_backends(worker)
        assert len(listening) == 1, (worker, listening)
        assert len(backend_pids(worker)) >= 2, "Django's pooled connection is a separate one"
    process.stop()

    assert task_keys() == keys  # each exactly once
    assert "Traceback" not in process.output()
