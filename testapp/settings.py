"""Settings of the pgpubsub example project (also used by the test suite).

The database comes from DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

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


DATABASES = {
    "default": database_from_url(
        os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    )
}

# Short intervals so the example (and the tests) react quickly; the defaults suit production.
PGPUBSUB_POLL_INTERVAL = float(os.environ.get("PGPUBSUB_POLL_INTERVAL", "1.0"))
PGPUBSUB_MAX_ATTEMPTS = int(os.environ.get("PGPUBSUB_MAX_ATTEMPTS", "3"))
PGPUBSUB_RETRY_BACKOFF = float(os.environ.get("PGPUBSUB_RETRY_BACKOFF", "0.2"))
PGPUBSUB_SHUTDOWN_TIMEOUT = float(os.environ.get("PGPUBSUB_SHUTDOWN_TIMEOUT", "10"))
PGPUBSUB_RECONNECT_TIMEOUT = float(os.environ.get("PGPUBSUB_RECONNECT_TIMEOUT", "120"))
