"""A fresh ``migrate`` works whatever the order of apps and however it is run (issue 12).

A throw-away project on an empty database of its own: ``aardvark`` sorts (and is listed)
before ``pgpubsub``, tracks a model on a lockable channel, and has a data migration that
creates a tracked row; ``beaver`` has no migrations at all (``--run-syncdb``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from pgpubsub.connection import driver_module

SETTINGS = """
import os
SECRET_KEY = "fresh"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["aardvark", "beaver", "django.contrib.contenttypes", "pgtrigger", "pgpubsub"]
DATABASES = {"default": {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": os.environ["FRESH_DATABASE"],
    "USER": os.environ["FRESH_USER"],
    "HOST": os.environ["FRESH_HOST"],
    "PORT": os.environ["FRESH_PORT"],
}}
if os.environ.get("FRESH_WITHOUT_MIGRATIONS"):  # what pytest-django's --nomigrations does
    MIGRATION_MODULES = {app.rsplit(".", 1)[-1]: None for app in INSTALLED_APPS}
"""

APP = {
    "models.py": """
        from django.db import models

        class Note(models.Model):
            title = models.CharField(max_length=100)
    """,
    "channels.py": """
        from dataclasses import dataclass
        from pgpubsub import TriggerChannel
        from {app}.models import Note

        @dataclass
        class NoteChannel(TriggerChannel):
            model = Note
            lock_notifications = True
    """,
    "listeners.py": """
        import pgpubsub
        from {app}.channels import NoteChannel

        @pgpubsub.post_insert_listener(NoteChannel)
        def note_added(old, new, **context):
            pass
    """,
}

DATA_MIGRATION = """
from django.db import migrations

def first_note(apps, schema_editor):
    apps.get_model("aardvark", "Note").objects.create(title="written by a data migration")

class Migration(migrations.Migration):
    dependencies = [("aardvark", "0001_initial")]
    operations = [migrations.RunPython(first_note, migrations.RunPython.noop)]
"""


def write_project(root: Path) -> None:
    (root / "freshsettings.py").write_text(SETTINGS)
    for app in ("aardvark", "beaver"):
        (root / app).mkdir()
        (root / app / "__init__.py").write_text("")
        for name, source in APP.items():
            (root / app / name).write_text(textwrap.dedent(source).format(app=app))


class FreshProject:
    """The project's ``django-admin`` commands, on an empty database of its own."""

    def __init__(self, root: Path, database: str) -> None:
        self.root = root
        self.database = database
        settings = connections["default"].settings_dict
        self.env = {
            **os.environ,
            "PYTHONPATH": str(root),
            "DJANGO_SETTINGS_MODULE": "freshsettings",
            "FRESH_DATABASE": database,
            "FRESH_USER": settings["USER"],
            "FRESH_HOST": settings["HOST"] or "127.0.0.1",
            "FRESH_PORT": str(settings["PORT"] or 5432),
        }

    def run(self, *args: str, **env: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "django", *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"django-admin {' '.join(args)}:\n{result.stderr}"
        return result.stdout

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with fresh_connection(self.database) as raw:
            cursor = raw.cursor()
            cursor.execute(sql)
            return list(cursor.fetchall()) if cursor.description else []


@contextmanager
def fresh_connection(database: str) -> Iterator[Any]:
    """An autocommit connection to ``database`` of the test server, closed at the end."""
    params = dict(connections["default"].get_connection_params())
    params.pop("pool", None)
    params.pop("database", None)
    params["dbname"] = database
    raw = driver_module("default").connect(**params)
    raw.autocommit = True
    try:
        yield raw
    finally:
        raw.close()


@pytest.fixture(scope="module")
def project_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project, with aardvark's migrations made by ``makemigrations`` plus a data one."""
    root = tmp_path_factory.mktemp("fresh")
    write_project(root)
    with empty_database() as database:
        FreshProject(root, database).run("makemigrations", "aardvark")
    (root / "aardvark" / "migrations" / "0002_first_note.py").write_text(DATA_MIGRATION)
    return root


@pytest.fixture
def project(project_source: Path) -> Iterator[FreshProject]:
    with empty_database() as database:
        yield FreshProject(project_source, database)


@contextmanager
def empty_database() -> Iterator[str]:
    """A new, empty database with a unique name (databases are cluster-wide), then dropped."""
    name = f"pgpubsub_fresh_{uuid.uuid4().hex[:10]}"
    with fresh_connection("postgres") as raw:
        raw.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with fresh_connection("postgres") as raw:
            raw.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def stored_notes(project: FreshProject) -> list[str]:
    return [
        title
        for (title,) in project.query(
            "SELECT payload #>> '{new,title}' FROM pgpubsub_notification ORDER BY id"
        )
    ]


def test_makemigrations_makes_trigger_migrations_depend_on_pgpubsub(project_source: Path) -> None:
    initial = (project_source / "aardvark" / "migrations" / "0001_initial.py").read_text()

    assert "('pgpubsub', '0012_task_failed_index')" in initial  # the latest


def test_migrating_only_an_app_sorted_before_pgpubsub_runs_its_data_migration(
    project: FreshProject,
) -> None:
    project.run("migrate", "aardvark")
    project.query("INSERT INTO aardvark_note (title) VALUES ('written later')")

    assert stored_notes(project) == ["written by a data migration", "written later"]


def test_migrating_every_app_of_an_empty_database_runs_the_data_migration(
    project: FreshProject,
) -> None:
    project.run("migrate")

    assert stored_notes(project) == ["written by a data migration"]


def test_tables_made_by_run_syncdb_get_working_triggers(project: FreshProject) -> None:
    project.run("migrate", "--run-syncdb")
    project.query("INSERT INTO beaver_note (title) VALUES ('in an app without migrations')")

    assert "in an app without migrations" in stored_notes(project)


def test_a_database_made_without_any_migration_gets_working_triggers(
    project: FreshProject,
) -> None:
    project.run("migrate", "--run-syncdb", FRESH_WITHOUT_MIGRATIONS="1")
    project.query("INSERT INTO aardvark_note (title) VALUES ('no migrations at all')")

    assert stored_notes(project) == ["no migrations at all"]
