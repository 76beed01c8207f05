"""Shared fixtures: the registry and settings are global state, so tests get them clean."""

from __future__ import annotations

import pytest


@pytest.fixture
def stored_notifications(db):  # type: ignore[no-untyped-def]
    """The Notification manager, with an empty table at the start of the test."""
    from pgpubsub.models import Notification

    Notification.objects.all().delete()
    return Notification.objects
