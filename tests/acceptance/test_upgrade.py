"""Upgrading a database that django-pgpubsub 1.3.1 migrated.

The old schema is rebuilt by hand-written SQL (django-pgpubsub itself is not installed):
its six migration records, its ``pgpubsub_notification`` table with the foreign key and
the ``set_db_version`` trigger, and notifications it stored. ``migrate`` must then carry
the database forward, and the stored notifications must be processed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from django.db import connection

from tests.support import processes
from tests.support.processes import MANAGE_PY

REPOSITORY = MANAGE_PY.parents[1]

OLD_MIGRATIONS = [
    "0001_initial",
    "0002_notification_created_at",
    "0003_notification_db_version",
    "0004_notification_pgpubsub_notification_set_db_version",
    "0005_alter_notification_options",
    "0006_payload_stores_proper_jsonb",
]

OLD_SCHEMA = """
CREATE TABLE django_migrations (
    id serial PRIMARY KEY,
    app varchar(255) NOT NULL,
    name varchar(255) NOT NULL,
    applied timestamptz NOT NULL
);
CREATE TABLE pgpubsub_notification (
    id serial PRIMARY KEY,
    channel varchar(63) NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NULL,
    db_version integer NULL
);
ALTER TABLE pgpubsub_notification ADD CONSTRAINT pgpubsub_notification_db_version_fk
    FOREIGN KEY (db_version) REFERENCES django_migrations (id);
CREATE FUNCTION pgtrigger_pgpubsub_notification_set_db_version_4f9e1() RETURNS trigger AS $$
BEGIN
    NEW.db_version := (SELECT max(id) FROM django_migrations WHERE app = NEW.payload ->> 'app');
    NEW.created_at := now();
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER pgtrigger_pgpubsub_notification_set_db_version_4f9e1
    BEFORE INSERT ON pgpubsub_notification
    FOR EACH ROW EXECUTE FUNCTION pgtrigger_pgpubsub_notification_set_db_version_4f9e1();
"""

AUTHOR_CHANNEL = "pgpubsub_c1bf1"  # testapp.channels.AuthorTriggerChannel
POST_READS_CHANNEL = "pgpubsub_12d12"  # testapp.channels.PostReads


def _server_params() -> dict[str, str]:
    settings = connection.settings_dict
    return {
        "host": settings["HOST"],
        "port": str(settings["PORT"]),
        "user": settings["USER"],
        "password": settings["PASSWORD"],
    }


def _url(params: dict[str, str], name: str) -> str:
    password = f":{params['password']}" if params["password"] else ""
    return f"postgres://{params['user']}{password}@{params['host']}:{params['port']}/{name}"


@pytest.fixture
def old_database(db: None) -> Iterator[tuple[str, psycopg2.extensions.connection]]:
    """A scratch database as django-pgpubsub 1.3.1 left it; dropped afterwards."""
    params = _server_params()
    name = f"pgpubsub_upgrade_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(dbname="postgres", **params)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    conn = psycopg2.connect(dbname=name, **params)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(OLD_SCHEMA)
            for migration in OLD_MIGRATIONS:
                cursor.execute(
                    "INSERT INTO django_migrations (app, name, applied) VALUES (%s, %s, now())",
                    ["pgpubsub", migration],
                )
        yield name, conn
    finally:
        conn.close()
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _manage(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(MANAGE_PY), *args],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _store_old_notification(
    conn: psycopg2.extensions.connection, channel: str, payload: dict[str, object]
) -> None:
    with conn.cursor() as cursor:
        # As django-pgpubsub's triggers did: channel and payload only, the rest by trigger.
        cursor.execute(
            "INSERT INTO pgpubsub_notification (channel, payload) VALUES (%s, %s)",
            [channel, json.dumps(payload)],
        )


def _scalar(conn: psycopg2.extensions.connection, sql: str) -> object:
    with conn.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


def test_database_migrated_by_django_pgpubsub_migrates_forward_and_processes_its_messages(
    old_database: tuple[str, psycopg2.extensions.connection],
) -> None:
    name, conn = old_database
    url = _url(_server_params(), name)
    authors = [(1, "Ada"), (2, "Brian O'Neil")]
    for pk, author_name in authors:
        _store_old_notification(
            conn,
            AUTHOR_CHANNEL,
            {
                "app": "testapp",
                "model": "Author",
                "old": None,
                "new": {"id": pk, "name": author_name, "bio": "", "created_at": None},
            },
        )
    # django-pgpubsub 1.3's notify() stored the dotted path and a JSON string payload.
    with conn.cursor() as cursor:
        cursor.execute(
            "INSERT INTO pgpubsub_notification (channel, payload) VALUES (%s, %s)",
            ["testapp.channels.PostReads", json.dumps(json.dumps({"kwargs": {"post_id": 1}}))],
        )
    # The old trigger stamped them, as it did in production.
    assert _scalar(conn, "SELECT count(*) FROM pgpubsub_notification WHERE created_at IS NULL") == 0

    _manage(url, "migrate", "--no-input")

    # The stored notifications survived, and the old machinery is gone.
    assert _scalar(conn, "SELECT count(*) FROM pgpubsub_notification") == 3
    assert (
        _scalar(conn, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%set_db_version%'") == 0
    )
    assert (
        _scalar(
            conn,
            "SELECT count(*) FROM pg_constraint "
            "WHERE conname = 'pgpubsub_notification_db_version_fk'",
        )
        == 0
    )
    assert (
        _scalar(
            conn,
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = 'pgpubsub_notification' AND column_name = 'id'",
        )
        == "bigint"
    )
    assert (
        _scalar(
            conn,
            "SELECT count(*) FROM django_migrations "
            "WHERE app = 'pgpubsub' AND name = '0007_reliable_delivery'",
        )
        == 1
    )

    # The authors the old notifications describe exist (written with triggers off, as the
    # rows were written before the upgrade).
    with conn.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        for pk, author_name in authors:
            cursor.execute(
                "INSERT INTO testapp_author (id, name, bio, created_at) VALUES (%s, %s, '', now())",
                [pk, author_name],
            )
        cursor.execute("SET session_replication_role = origin")

    result = _manage(
        url,
        "shell",
        "-c",
        "import pgpubsub; print('processed', pgpubsub.process_stored_notifications())",
    )
    assert "processed 3" in result.stdout
    assert _scalar(conn, "SELECT count(*) FROM pgpubsub_notification") == 0
    with conn.cursor() as cursor:
        cursor.execute("SELECT author_id, title, read_count FROM testapp_post ORDER BY author_id")
        assert cursor.fetchall() == [(1, "Welcome, Ada!", 1), (2, "Welcome, Brian O'Neil!", 0)]


def test_old_style_trigger_insert_still_stores_after_the_upgrade(
    old_database: tuple[str, psycopg2.extensions.connection],
) -> None:
    """Until the user regenerates trigger migrations, old triggers insert (channel, payload)."""
    name, conn = old_database
    _manage(_url(_server_params(), name), "migrate", "--no-input")
    _store_old_notification(conn, POST_READS_CHANNEL, {"kwargs": {"post_id": 7}})
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT attempts, failed_at, last_error, created_at IS NOT NULL, "
            "available_at <= now() FROM pgpubsub_notification"
        )
        assert cursor.fetchall() == [(0, None, "", True, True)]


# --- The steps of docs/guides/upgrading.md, as a django-pgpubsub 1.3.1 user takes them -------

#: What code written for django-pgpubsub 1.3.1 imports (its package's public names).
CODE_WRITTEN_FOR_1_3 = """
from pgpubsub import (
    Channel, TriggerChannel, set_notification_context, listener, pre_save_listener,
    post_save_listener, pre_insert_listener, post_insert_listener, pre_update_listener,
    post_update_listener, pre_delete_listener, post_delete_listener, trigger_listener,
    ListenerFilterProvider, notify, process_stored_notifications,
)
from pgpubsub.channel import BaseChannel, ChannelNotFound, locate_channel
from pgpubsub.channel import set_notification_context as set_context_from_channel
from pgpubsub.listen import listen, listen_to_channels, process_notifications
from pgpubsub.listeners import ListenerFilterProvider as FilterFromListeners
from pgpubsub.models import Notification
from pgpubsub.notify import notify as notify_from_notify, process_stored_notifications as psn
from pgpubsub.triggers import Notify

assert set_context_from_channel is set_notification_context
assert callable(Notification.from_channel) and callable(Channel.deserialize)
print("imports of 1.3 code: ok")
"""


def test_step_1_code_written_for_1_3_runs_unchanged_after_the_requirement_changes() -> None:
    result = _manage(processes.test_database_url(), "shell", "-c", CODE_WRITTEN_FOR_1_3.strip())

    assert "imports of 1.3 code: ok" in result.stdout


# Step 2, `migrate` with the stored messages kept: the tests above.

#: A test suite as django-pgpubsub 1.3.1 users wrote them, copying its own tests' helpers.
SUITE_WRITTEN_FOR_1_3 = {
    "conftest.py": """
import pytest
from pgpubsub.listen import listen_to_channels


@pytest.fixture
def pg_connection():
    return listen_to_channels()
""",
    "test_written_for_1_3.py": """
from dataclasses import dataclass
from typing import Tuple
from unittest.mock import patch

import pytest
from pgpubsub.channel import Channel
from pgpubsub.listen import listen, process_notifications
from pgpubsub.models import Notification
from testapp.channels import AuthorTriggerChannel
from testapp.models import Author, Post


@pytest.mark.django_db(transaction=True)
def test_first_post(pg_connection):
    Author.objects.create(name="Ann")
    assert 1 == len(pg_connection.notifies)
    assert 1 == Notification.from_channel(channel=AuthorTriggerChannel).count()
    process_notifications(pg_connection)
    assert 1 == Post.objects.count()
    assert 0 == Notification.objects.count()


@pytest.mark.django_db(transaction=True)
def test_recover(pg_connection):
    Author.objects.create(name="Bob")
    pg_connection.notifies = []
    with patch("pgpubsub.listen.POLL", False):
        listen(recover=True)
    assert 1 == Post.objects.count()


def test_serialize_round_trip():
    @dataclass
    class Words(Channel):
        words: Tuple[str]

    assert {"words": ("a", "b")} == Words.deserialize(Words(words=("a", "b")).serialize())
""",
}


def test_step_3_a_test_suite_written_for_1_3_passes_through_the_adapters(tmp_path: Path) -> None:
    suite = tmp_path
    for name, text in SUITE_WRITTEN_FOR_1_3.items():
        (suite / name).write_text(text.lstrip())
    (suite / "pytest.ini").write_text(
        f"[pytest]\nDJANGO_SETTINGS_MODULE = testapp.settings\npythonpath = {REPOSITORY}\n"
    )
    # Its own database name: pytest-django creates test_<name> (and test_<name>_other), and
    # drops them when the run ends.
    env = {k: v for k, v in os.environ.items() if k != "OTHER_DATABASE_URL"}
    env["DATABASE_URL"] = _url(_server_params(), f"pgpubsub_upgrade_suite_{uuid.uuid4().hex[:8]}")

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", "."],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    # Each adapter says what replaces it.
    assert "listen_to_channels() is deprecated: in tests, call" in result.stdout
    assert "process_notifications() is deprecated" in result.stdout
    assert "POLL is deprecated" in result.stdout
