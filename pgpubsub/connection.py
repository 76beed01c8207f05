"""The LISTEN connection: a dedicated autocommit connection behind one small interface.

The driver is the one Django uses for the database (psycopg2 or psycopg 3). Waiting blocks
on the socket, so an idle worker uses no CPU and sends no queries.
"""

from __future__ import annotations

import os
import select
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from django.db import connections

WORKER_APPLICATION_NAME = "pgpubsub worker"


@dataclass(frozen=True)
class Message:
    """A NOTIFY received: the PostgreSQL channel name and its payload text."""

    channel: str
    payload: str


class ListenConnection(Protocol):
    def listen(self, channels: Iterable[str]) -> None: ...

    def wait(self, timeout: float, wake_fds: Sequence[int] = ()) -> list[Message]: ...

    def ping(self) -> None: ...

    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one statement, committed at once; return its rows (none for a write)."""
        ...

    def close(self) -> None: ...


def _listen_statement(name: str, sql_module: Any) -> Any:
    return sql_module.SQL("LISTEN {}").format(sql_module.Identifier(name))


class _Psycopg2Listener:
    def __init__(self, raw: Any) -> None:
        self._raw = raw
        raw.autocommit = True

    def listen(self, channels: Iterable[str]) -> None:
        from psycopg2 import sql

        with self._raw.cursor() as cursor:
            for name in channels:
                cursor.execute(_listen_statement(name, sql))

    def _drain(self) -> list[Message]:
        received = [Message(n.channel, n.payload) for n in self._raw.notifies]
        self._raw.notifies.clear()
        return received

    def wait(self, timeout: float, wake_fds: Sequence[int] = ()) -> list[Message]:
        self._raw.poll()
        if not self._raw.notifies:
            readable, _, _ = select.select([self._raw, *wake_fds], [], [], max(timeout, 0))
            if self._raw in readable:
                self._raw.poll()
        return self._drain()

    def ping(self) -> None:
        with self._raw.cursor() as cursor:
            cursor.execute("SELECT 1")

    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._raw.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def close(self) -> None:
        self._raw.close()


class _Psycopg3Listener:
    def __init__(self, raw: Any) -> None:
        self._raw = raw
        raw.autocommit = True
        self._pending: list[Message] = []
        raw.add_notify_handler(lambda n: self._pending.append(Message(n.channel, n.payload)))

    def listen(self, channels: Iterable[str]) -> None:
        from psycopg import sql

        for name in channels:
            self._raw.execute(_listen_statement(name, sql))

    def wait(self, timeout: float, wake_fds: Sequence[int] = ()) -> list[Message]:
        if not self._pending:
            readable, _, _ = select.select([self._raw.fileno(), *wake_fds], [], [], max(timeout, 0))
            if self._raw.fileno() in readable:
                self._read_arrived()
        received, self._pending = self._pending, []
        return received

    def _read_arrived(self) -> None:
        """Read what the server sent, client-side only: no query, no round trip."""
        pgconn = self._raw.pgconn
        pgconn.consume_input()  # raises OperationalError when the server has gone
        encoding = self._raw.info.encoding
        while notification := pgconn.notifies():
            self._pending.append(
                Message(notification.relname.decode(encoding), notification.extra.decode(encoding))
            )

    def ping(self) -> None:
        self._raw.execute("SELECT 1")

    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        cursor = self._raw.execute(sql, params)
        return cursor.fetchall() if cursor.description else []

    def close(self) -> None:
        self._raw.close()


class PollingOnly:
    """Stands in for a LISTEN connection when notifications cannot be received.

    ``wait`` only sleeps until the timeout (or a wake-up), so the worker polls. Statements
    (the worker's in-flight records) go through ``connection``, on which nothing LISTENs.
    """

    def __init__(self, connection: ListenConnection) -> None:
        self._connection = connection

    def listen(self, channels: Iterable[str]) -> None:
        pass

    def wait(self, timeout: float, wake_fds: Sequence[int] = ()) -> list[Message]:
        select.select(list(wake_fds), [], [], max(timeout, 0))
        return []

    def ping(self) -> None:
        self._connection.ping()

    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._connection.execute(sql, params)

    def close(self) -> None:
        self._connection.close()


def close_django_connections() -> None:
    """Close Django's connections and, on Django 5.1+, its connection pools.

    Before forking workers: a child must not inherit a pool's open sockets (nor a pool whose
    threads did not survive the fork). Each process opens its own when it first needs one.
    """
    for wrapper in connections.all(initialized_only=True):
        wrapper.close()
        close_pool = getattr(wrapper, "close_pool", None)  # Django 5.1+, PostgreSQL
        if close_pool is not None:
            close_pool()


def driver_module(using: str) -> Any:
    """The DB-API module (psycopg2 or psycopg) Django uses for database ``using``."""
    return getattr(connections[using], "Database")  # noqa: B009 (absent from the stubs)


def open_listen_connection(using: str) -> ListenConnection:
    """Open a new autocommit connection to database ``using``, never a pooled one.

    Besides LISTEN, the worker writes its in-flight records (:mod:`pgpubsub.inflight`) on it.
    """
    params = dict(connections[using].get_connection_params())
    params.pop("pool", None)
    # Lets `manage.py pgpubsub status` count the workers connected to the database.
    params["application_name"] = f"{WORKER_APPLICATION_NAME} {os.getpid()}"
    driver = driver_module(using)
    raw = driver.connect(**params)
    if driver.__name__ == "psycopg":
        return _Psycopg3Listener(raw)
    return _Psycopg2Listener(raw)
