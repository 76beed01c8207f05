"""``listen`` and ``manage.py pgpubsub`` check the database before they work on it.

A trigger that never reached the database (``makemigrations`` forgotten), an unmigrated
database and a database that is not PostgreSQL are each named, with the command that fixes
them, instead of a listener that is silently never called or a ``relation ... does not
exist`` traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pgtrigger
import pytest
from django.db import connection

from pgpubsub.checks import check_triggers
from pgpubsub.registry import registry
from testapp.channels import AuthorTriggerChannel
from testapp.models import Author
from tests.acceptance.conftest import StartListen
from tests.support import processes
from tests.support.processes import MANAGE_PY

pytestmark = pytest.mark.django_db(transaction=True)

FIX = "python manage.py makemigrations testapp && python manage.py migrate testapp"


@pytest.fixture
def author_trigger() -> Iterator[str]:
    """The trigger of AuthorTriggerChannel's listener, dropped from the database meanwhile."""
    listeners = registry.listeners_for(AuthorTriggerChannel)
    (name,) = {name for listener in listeners for name in listener.triggers or ()}
    ((_model, trigger),) = pgtrigger.registered(f"testapp.Author:{name}")
    trigger.uninstall(Author)
    try:
        yield name
    finally:
        trigger.install(Author)


def missing(trigger: str) -> str:
    return (
        f"Trigger {trigger!r} of model testapp.Author (channel "
        "testapp.channels.AuthorTriggerChannel) is not installed in database 'default'"
    )


def test_listen_refuses_to_start_without_a_trigger_its_listeners_need(
    listen: StartListen, author_trigger: str
) -> None:
    process = listen()

    assert process.wait() == 1
    output = process.output()
    assert " ERROR " in output
    assert f"pgpubsub.preflight: {missing(author_trigger)}" in output
    assert f"Run: {FIX}" in output
    assert "start with --allow-missing-triggers to listen anyway" in output
    assert "Started worker" not in output


def test_listen_with_allow_missing_triggers_logs_the_missing_trigger_and_starts(
    listen: StartListen, author_trigger: str
) -> None:
    process = listen("--worker", "--allow-missing-triggers")

    process.wait_for_output("Listening on")
    assert f"pgpubsub.preflight: {missing(author_trigger)}" in process.output()


def test_check_database_reports_a_missing_trigger_with_the_command_that_installs_it(
    author_trigger: str,
) -> None:
    messages = check_triggers(databases=["default"])

    assert [(message.id, message.msg, message.hint) for message in messages] == [
        (
            "pgpubsub.W002",
            f"{missing(author_trigger)}: its listeners are never called.",
            f"Run: {FIX}",
        )
    ]


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_check_database_is_silent_when_every_trigger_is_installed() -> None:
    assert check_triggers(databases=["default", "other"]) == []


def manage(*args: str, database_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py *args`` against ``database_url`` to its end."""
    return subprocess.run(
        [sys.executable, str(MANAGE_PY), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **os.environ,
            **processes.test_database_env(),
            "DATABASE_URL": database_url,
            "OTHER_DATABASE_URL": database_url,
            **env,
        },
        timeout=180,
        check=False,
    )


@pytest.fixture
def empty_database() -> Iterator[str]:
    """The URL of a new, empty database on the test server; dropped afterwards."""
    name = f"{connection.settings_dict['NAME']}_empty"
    quoted = connection.ops.quote_name(name)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {quoted}")
        cursor.execute(f"CREATE DATABASE {quoted}")
    try:
        yield processes.test_database_url().rsplit("/", 1)[0] + f"/{name}"
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")


@pytest.mark.parametrize("command", [["listen", "--worker"], ["listen"], ["pgpubsub", "status"]])
def test_an_unmigrated_database_is_named_with_the_command_that_migrates_it(
    empty_database: str, command: list[str]
) -> None:
    result = manage(*command, database_url=empty_database)

    assert result.returncode == 1
    assert (
        "pgpubsub's tables are not ready in database 'default' (migrations not applied: "
        "0001_squashed_0006_payload_stores_proper_jsonb" in result.stdout
    )
    assert "run python manage.py migrate pgpubsub" in result.stdout
    assert "does not exist" not in result.stdout
    assert "Traceback" not in result.stdout


def test_migrating_a_new_database_warns_of_nothing_and_leaves_it_ready(
    empty_database: str,
) -> None:
    migrated = manage("migrate", database_url=empty_database)
    checked = manage("check", "--database", "default", database_url=empty_database)
    status = manage("pgpubsub", "status", database_url=empty_database)

    assert migrated.returncode == 0, migrated.stdout
    assert "(pgpubsub." not in migrated.stdout
    assert checked.returncode == 0
    assert "System check identified no issues" in checked.stdout
    assert status.returncode == 0, status.stdout
    assert "testapp.channels.AuthorTriggerChannel" in status.stdout


SQLITE_SETTINGS = """
from testapp.settings import *  # noqa: F403

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": %r}}
"""


@pytest.mark.parametrize("command", [["check"], ["migrate", "pgpubsub"]])
def test_a_sqlite_database_is_a_check_error_naming_its_alias(
    tmp_path: Path, command: list[str]
) -> None:
    (tmp_path / "sqlite_settings.py").write_text(SQLITE_SETTINGS % str(tmp_path / "db.sqlite3"))

    result = manage(
        *command,
        database_url=processes.test_database_url(),
        DJANGO_SETTINGS_MODULE="sqlite_settings",
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(MANAGE_PY.parents[1])]),
    )

    assert result.returncode == 1
    assert (
        "(pgpubsub.E006) Database 'default' is SQLite, and pgpubsub needs PostgreSQL"
        in result.stdout
    )
    assert "syntax error" not in result.stdout
