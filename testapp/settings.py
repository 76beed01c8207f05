"""Settings of the pgpubsub example project (also used by the test suite).

The database comes from DATABASE_URL; without it, the server on 127.0.0.1:5432; without one,
an embedded PostgreSQL that lives as long as this process (testapp/embedded_db.py). The
second one ("other", for the multi-database example) from OTHER_DATABASE_URL.
"""

from __future__ import annotations

import datetime
import os
from urllib.parse import unquote, urlsplit

import django

from testapp import embedded_db

SECRET_KEY = "pgpubsub-example-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "testapp.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.admin",
    "pgtrigger",
    "pgpubsub",
    "testapp",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "static/"


def database_from_url(url: str) -> dict[str, object]:
    """A DATABASES entry for a postgres:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL must be a postgres:// URL, got {url!r}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or "postgres"),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or 5432),
    }


# pytest-django imports these settings before it loads any conftest.py, so the embedded
# server (if one is needed) is started here, for the test session as for manage.py.
DATABASES = {"default": database_from_url(embedded_db.database_url())}

# A second database, "other", on the same server: testapp.routers sends the ledger models there.
# OTHER_DATABASE_URL, default: the default database's name with "_other" appended.
DATABASES["other"] = (
    database_from_url(os.environ["OTHER_DATABASE_URL"])
    if os.environ.get("OTHER_DATABASE_URL")
    else {**DATABASES["default"], "NAME": f"{DATABASES['default']['NAME']}_other"}
)
DATABASE_ROUTERS = ["testapp.routers.LedgerRouter"]

# DATABASE_POOL=1: Django's connection pool (Django 5.1+ with psycopg 3 and psycopg-pool) on
# both databases. CI runs the whole suite once this way: listening must not depend on it.
if os.environ.get("DATABASE_POOL") == "1":
    for database in DATABASES.values():
        database["OPTIONS"] = {"pool": {"min_size": 1, "max_size": 8, "timeout": 10}}

# Short intervals so the example (and the tests) react quickly; the defaults suit production.
PGPUBSUB_POLL_INTERVAL = float(os.environ.get("PGPUBSUB_POLL_INTERVAL", "1.0"))
PGPUBSUB_MAX_ATTEMPTS = int(os.environ.get("PGPUBSUB_MAX_ATTEMPTS", "3"))
PGPUBSUB_BATCH_SIZE = int(os.environ.get("PGPUBSUB_BATCH_SIZE", "100"))
PGPUBSUB_RETRY_BACKOFF = float(os.environ.get("PGPUBSUB_RETRY_BACKOFF", "0.2"))
PGPUBSUB_SHUTDOWN_TIMEOUT = float(os.environ.get("PGPUBSUB_SHUTDOWN_TIMEOUT", "10"))
PGPUBSUB_RECONNECT_TIMEOUT = float(os.environ.get("PGPUBSUB_RECONNECT_TIMEOUT", "120"))
PGPUBSUB_PROGRESS_INTERVAL = float(os.environ.get("PGPUBSUB_PROGRESS_INTERVAL", "5.0"))
PGPUBSUB_MESSAGE_TIME_LIMIT = (
    float(os.environ["PGPUBSUB_MESSAGE_TIME_LIMIT"])
    if os.environ.get("PGPUBSUB_MESSAGE_TIME_LIMIT")
    else None
)
# Seconds; unset (the default, None): handled messages are deleted.
if os.environ.get("PGPUBSUB_KEEP_HANDLED"):
    PGPUBSUB_KEEP_HANDLED = datetime.timedelta(seconds=float(os.environ["PGPUBSUB_KEEP_HANDLED"]))

# Django's tasks framework on pgpubsub (pgpubsub.tasks; testapp/tasks.py): Django 6.0+ has it,
# older versions use the django-tasks backport, whose app registers the system checks.
TASKS = {
    "default": {
        "BACKEND": "pgpubsub.tasks.PgPubSubBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {"RETRY_BACKOFF": 0.2},
    }
}
try:
    import django.tasks
except ImportError:
    INSTALLED_APPS.append("django_tasks")
# Mail sent by tasks (testapp.tasks.email_users) stays in memory. Django 6.1 configures mail
# with MAILERS and deprecates EMAIL_BACKEND (a warning, which the test suite treats as an error).
_MEMORY_MAIL = "django.core.mail.backends.locmem.EmailBackend"
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": _MEMORY_MAIL}}
else:
    EMAIL_BACKEND = _MEMORY_MAIL
