"""testapp/embedded_db.py decides: DATABASE_URL, else a server that answers, else embedded.

Starting the embedded server is covered in tests/acceptance/test_embedded_postgres.py.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from testapp import embedded_db


@pytest.fixture
def no_embedded_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def start(*args: object, **kwargs: object) -> None:
        raise AssertionError("an embedded server was started")

    monkeypatch.setattr(embedded_db.EmbeddedPostgres, "start", start)


@pytest.fixture
def listening() -> Iterator[tuple[str, int]]:
    """An address on which something answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()


def test_database_url_is_database_url_when_set_even_without_a_server(
    monkeypatch: pytest.MonkeyPatch, no_embedded_start: None
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://app:secret@db.example:6543/app")
    closed = ("127.0.0.1", embedded_db.free_port())
    session_server = embedded_db.embedded_server()  # the test session's own, if any

    assert embedded_db.database_url(probe=closed) == "postgres://app:secret@db.example:6543/app"
    assert embedded_db.embedded_server() is session_server


def test_database_url_is_the_answering_server_when_database_url_is_unset(
    monkeypatch: pytest.MonkeyPatch, no_embedded_start: None, listening: tuple[str, int]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    host, port = listening
    session_server = embedded_db.embedded_server()

    assert (
        embedded_db.database_url(probe=listening) == f"postgres://postgres@{host}:{port}/postgres"
    )
    assert embedded_db.embedded_server() is session_server


def test_server_answers_only_where_something_listens(listening: tuple[str, int]) -> None:
    assert embedded_db.server_answers(listening)
    assert not embedded_db.server_answers(("127.0.0.1", embedded_db.free_port()))
