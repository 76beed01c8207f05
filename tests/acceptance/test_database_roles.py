"""Roles that are not superusers, with exactly the grants of docs/guides/database-roles.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.core.management import call_command
from django.db import ProgrammingError, connection

import pgpubsub
from pgpubsub import functions
from pgpubsub.models import Notification
from testapp.channels import Announcement, AuthorTriggerChannel, Task
from testapp.models import ListenerEvent
from tests.acceptance.conftest import MAX_ATTEMPTS, StartListen, task_keys
from tests.factories import AuthorFactory
from tests.support import processes
from tests.support.processes import MANAGE_PY, wait_for
from tests.support.roles import acting_as, documented_sql, temporary_roles

pytestmark = pytest.mark.django_db(transaction=True)


def url_as(role: str) -> str:
    """The test database's URL, logging in as ``role`` (the test server trusts any role)."""
    url = processes.test_database_url()
    user = connection.settings_dict["USER"]
    return url.replace(f"://{user}@", f"://{role}@", 1).replace(f"://{user}:", f"://{role}:", 1)


def grant_own_tables(role: str, *tables: str) -> None:
    """What the role does to the application's own tables: not pgpubsub's business."""
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f'GRANT SELECT, INSERT ON {table} TO "{role}"')
            cursor.execute(f'GRANT USAGE ON SEQUENCE {table}_id_seq TO "{role}"')


@contextmanager
def functions_restored() -> Iterator[None]:
    """Undo the strict setup's changes to the functions, which outlive the test's roles."""
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            every_version = {**functions.signatures(2), **functions.signatures(3)}
            for name, arguments in every_version.items():
                function = f"{functions.qualified(name)}({arguments})"
                cursor.execute(f"ALTER FUNCTION {function} SECURITY INVOKER")
                cursor.execute(f"GRANT EXECUTE ON FUNCTION {function} TO PUBLIC")


def test_worker_with_the_documented_grants_handles_retries_and_dead_letters(
    listen: StartListen,
) -> None:
    with temporary_roles("worker") as roles:
        worker = roles["worker"]
        with connection.cursor() as cursor:
            cursor.execute(documented_sql("the worker", {"myapp_worker": worker}))
        grant_own_tables(worker, "testapp_listenerevent")  # run_task writes a ListenerEvent
        channels = ["testapp.channels.Task", "testapp.channels.Announcement"]
        process = listen("--channels", *channels, env={"DATABASE_URL": url_as(worker)})
        try:
            process.wait_for_workers(1)
            pgpubsub.notify(Task, key="handled")
            pgpubsub.notify(Task, key="failing", fail=True)
            pgpubsub.notify(Announcement, text="too long for NOTIFY " * 500)  # read by reference

            wait_for(
                lambda: (
                    ListenerEvent.objects.filter(listener="announcement").exists()
                    and task_keys() == ["handled"]
                    and Notification.objects.filter(attempts=MAX_ATTEMPTS, failed_at__isnull=False)
                    .values_list("payload__kwargs__key", flat=True)
                    .first()
                    == "failing"
                ),
                message="an oversized fan-out message, one handled and one dead letter",
            )
        finally:
            process.stop()  # before its role is dropped
        assert "permission denied" not in process.output()


def test_web_app_with_the_documented_grants_publishes_from_triggers_and_notify() -> None:
    with temporary_roles("web") as roles:
        web = roles["web"]
        with connection.cursor() as cursor:
            cursor.execute(documented_sql("the web application", {"myapp_web": web}))
        grant_own_tables(web, "testapp_author")

        with acting_as(web):
            AuthorFactory.create(name="Ann")
            pgpubsub.notify(Task, key="k")

    assert sorted(Notification.objects.values_list("channel", flat=True)) == sorted(
        [AuthorTriggerChannel.listen_safe_name(), Task.listen_safe_name()]
    )


def test_web_app_can_publish_only_through_the_functions_in_the_strict_setup() -> None:
    with temporary_roles("web", "worker", "operator") as roles, functions_restored():
        web = roles["web"]
        names = {f"myapp_{kind}": name for kind, name in roles.items()}
        with connection.cursor() as cursor:
            cursor.execute(documented_sql("the web application", names))
            cursor.execute(documented_sql("publishing only through pgpubsub's functions", names))
        grant_own_tables(web, "testapp_author")
        call_command("migrate", "pgpubsub", verbosity=0)  # must leave the functions as they are

        with acting_as(web):
            AuthorFactory.create(name="Ann")
            pgpubsub.notify(Task, key="k")
            with (
                pytest.raises(ProgrammingError, match="permission denied"),
                connection.cursor() as cursor,
            ):
                cursor.execute(
                    "INSERT INTO pgpubsub_notification (channel, payload) VALUES ('x', '{}')"
                )
        with (
            acting_as(roles["operator"]),
            pytest.raises(ProgrammingError, match="permission denied for function"),
        ):
            pgpubsub.notify(Task, key="from a role not granted EXECUTE")

    assert sorted(Notification.objects.values_list("channel", flat=True)) == sorted(
        [AuthorTriggerChannel.listen_safe_name(), Task.listen_safe_name()]
    )


def test_operator_with_the_documented_grants_reads_the_status() -> None:
    pgpubsub.notify(Task, key="waiting")
    with temporary_roles("operator") as roles:
        operator = roles["operator"]
        with connection.cursor() as cursor:
            cursor.execute(documented_sql("a read-only operator", {"myapp_operator": operator}))
        result = subprocess.run(
            [sys.executable, str(MANAGE_PY), "pgpubsub", "status", "--json"],
            env={**os.environ, **processes.test_database_env(), "DATABASE_URL": url_as(operator)},
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (task,) = [row for row in report["channels"] if row["pg_name"] == Task.listen_safe_name()]
    assert task["new"] == 1
