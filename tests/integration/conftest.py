"""Fixtures of the integration tests: isolated global state and extra database connections."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection, connections

from pgpubsub.connection import ListenConnection, driver_module, open_listen_connection
from pgpubsub.registry import registry
from tests.integration.messaging import SENTINEL


@pytest.fixture
def isolated_registry() -> Iterator[None]:
    """Listeners a test registers are forgotten when it ends."""
    with registry.isolated():
        yield


@pytest.fixture
def listen_to() -> Iterator[Callable[..., ListenConnection]]:
    """Open a real LISTEN connection on the given PostgreSQL channel names (and a sentinel)."""
    opened: list[ListenConnection] = []

    def open_on(*names: str) -> ListenConnection:
        listener = open_listen_connection("default")
        opened.append(listener)
        listener.listen([*names, SENTINEL])
        return listener

    yield open_on
    for listener in opened:
        listener.close()


@pytest.fixture
def other_connection() -> Iterator[Any]:
    """A second autocommit connection to the test database (the driver Django uses)."""
    params = dict(connections["default"].get_connection_params())
    params.pop("pool", None)
    raw = driver_module("default").connect(**params)
    raw.autocommit = True
    yield raw
    raw.close()


@pytest.fixture
def send_sentinel(other_connection: Any) -> Callable[[], None]:
    """Commit a sentinel NOTIFY from a connection outside the test's transaction."""

    def send() -> None:
        with other_connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [SENTINEL])

    return send


@pytest.fixture
def clean_notification_context() -> Iterator[None]:
    """A session-scoped notification context does not leak into the next test."""
    yield
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('pgpubsub.notification_context', '', false)")
