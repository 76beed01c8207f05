"""Django settings of the benchmark project: its own small app and its own database.

The server comes from DATABASE_URL (default postgres://postgres@127.0.0.1:5432/); the
database is always ``PGPUBSUB_BENCH_DB`` (default ``pgpubsub_bench``), which ``run.py`` drops
and recreates, so a benchmark never touches the database that DATABASE_URL names.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
from urllib.parse import unquote, urlsplit

SECRET_KEY = "pgpubsub-benchmarks-not-secret"
DEBUG = False  # DEBUG=True keeps every query in memory and would skew the RSS figures
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["pgtrigger", "pgpubsub", "benchapp"]

# The `tasks` scenario: pgpubsub.tasks ("default") beside django-tasks-db ("db"), the ORM-based
# reference backend, when it is installed (pip install 'django-pgpubsub-reliable[bench]').
TASKS: dict[str, dict[str, object]] = {
    "default": {"BACKEND": "pgpubsub.tasks.PgPubSubBackend"},
}
if importlib.util.find_spec("django_tasks_db") is not None:
    TASKS["db"] = {"BACKEND": "django_tasks_db.DatabaseBackend"}
    INSTALLED_APPS.append("django_tasks_db")
if importlib.util.find_spec("django.tasks") is None:
    INSTALLED_APPS.append("django_tasks")

BENCH_DATABASE_NAME = os.environ.get("PGPUBSUB_BENCH_DB", "pgpubsub_bench")


def server_settings(url: str) -> dict[str, str]:
    """Connection settings of the server in a postgres:// URL (its database name ignored)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL must be a postgres:// URL, got {url!r}")
    return {
        "USER": unquote(parts.username or "postgres"),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or 5432),
    }


def conn_max_age(text: str) -> int | None:
    """``CONN_MAX_AGE`` from its command-line spelling: seconds, or ``none`` (persistent)."""
    return None if text.lower() == "none" else int(text)


DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": BENCH_DATABASE_NAME,
        # Django's default, 0, closes the connection whenever close_old_connections() runs;
        # `run.py --conn-max-age none` measures persistent connections instead.
        "CONN_MAX_AGE": conn_max_age(os.environ.get("PGPUBSUB_BENCH_CONN_MAX_AGE", "0")),
        **server_settings(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/")),
    }
}

# pgpubsub runs with its documented defaults (batch size 100, poll interval 5 s): the
# figures describe what a project gets out of the box.
# Except for the scenario keep_handled, whose workers keep what they handle when it is set.
if os.environ.get("PGPUBSUB_BENCH_KEEP_HANDLED"):
    PGPUBSUB_KEEP_HANDLED = datetime.timedelta(
        seconds=float(os.environ["PGPUBSUB_BENCH_KEEP_HANDLED"])
    )
