"""Shared fixtures: the registry and settings are global state, so tests get them clean.

The database: testapp/settings.py picks it (testapp/embedded_db.py) when pytest-django
imports the settings, which happens before this file is loaded. Without DATABASE_URL and a
server on 127.0.0.1:5432 that starts an embedded PostgreSQL; the hooks below name it in the
header and stop it when the session ends, after pytest-django has dropped the test databases.
"""

from __future__ import annotations

import pytest

from testapp import embedded_db


def pytest_report_header(config: pytest.Config) -> str | None:
    server = embedded_db.embedded_server()
    if server is None:
        return None
    return (
        f"database: embedded PostgreSQL {server.major_version} at {server.url} "
        f"(DATABASE_URL not set, nothing on 127.0.0.1:5432), stopped after the session"
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    embedded_db.stop()


@pytest.fixture
def stored_notifications(db):  # type: ignore[no-untyped-def]
    """The Notification manager, with an empty table at the start of the test."""
    from pgpubsub.models import Notification

    Notification.objects.all().delete()
    return Notification.objects
