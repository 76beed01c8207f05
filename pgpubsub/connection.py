"""The LISTEN connection: a dedicated autocommit connection behind one small interface.

The driver is the one Django uses for the database (psycopg2 or psycopg 3). Waiting blocks
on the socket, so an idle worker uses no CPU and sends no queries. A :class:`ListenSession`
keeps such a connection open: it reconnects with backoff, and gives up after
``PGPUBSUB_RECONNECT_TIMEOUT`` seconds without the database.
"""

from __future__ import annotations

import logging
import os
import select
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from django.db import InterfaceError, OperationalError, connections

from pgpubsub.clock import SYSTEM_CLOCK, Clock
from pgpubsub.exceptions import DatabaseUnavailable

logger = logging.getLogger(__name__)

WORKER_APPLICATION_NAME = "pgpubsub worker"


@dataclass(frozen=True)
class Message:
    """A NOTIFY received: the PostgreSQL channel name and its payload text."""

    channel: str
    payload: str


class ListenConnection(Protocol):
    """What a worker needs of its own connection (the two drivers, and fakes in tests)."""

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


def backend_pid(wrapper: Any) -> int | None:
    """The server process of Django connection ``wrapper`` (a ``connections[alias]`` of some
    thread), read from the driver without a query; None when it is not connected."""
    raw = getattr(wrapper, "connection", None)
    if raw is None:
        return None
    info = getattr(raw, "info", None)  # psycopg 3
    pid = info.backend_pid if info is not None else raw.get_backend_pid()
    return int(pid) if pid else None


def driver_module(using: str) -> Any:
    """The DB-API module (psycopg2 or psycopg) Django uses for database ``using``."""
    return getattr(connections[using], "Database")  # noqa: B009 (absent from the stubs)


def open_listen_connection(using: str, application_name: str | None = None) -> ListenConnection:
    """Open a new autocommit connection to database ``using``, never a pooled one.

    Besides LISTEN, the worker writes its in-flight records (:mod:`pgpubsub.inflight`) on it.
    ``application_name`` (default ``pgpubsub worker <pid>``) names it in ``pg_stat_activity``.
    """
    params = dict(connections[using].get_connection_params())
    params.pop("pool", None)
    # Lets `manage.py pgpubsub status` count the workers connected to the database, and
    # claimants tell a worker that lost its batch's connection from one that died.
    params["application_name"] = application_name or f"{WORKER_APPLICATION_NAME} {os.getpid()}"
    driver = driver_module(using)
    raw = driver.connect(**params)
    if driver.__name__ == "psycopg":
        return _Psycopg3Listener(raw)
    return _Psycopg2Listener(raw)


#: Opens a new connection for a worker (``open_listen_connection``, or ``PollingOnly`` over it).
ConnectionFactory = Callable[[], ListenConnection]


def connection_errors(using: str) -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the connection to database ``using`` is gone"."""
    driver = driver_module(using)
    return (OperationalError, InterfaceError, driver.OperationalError, driver.InterfaceError)


#: PostgreSQL's SQLSTATE for a statement cancelled by statement_timeout or pg_cancel_backend.
_QUERY_CANCELED = "57014"


def what_failed(exc: BaseException) -> str:
    """What a database error that ended a connection's session means, in words.

    Both drivers raise a cancelled statement as an ``OperationalError``, like a lost
    connection, and Django keeps the driver's error as the cause.
    """
    for error in (exc, exc.__cause__):
        code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if code == _QUERY_CANCELED:
            return (
                "A query was cancelled (it ran longer than statement_timeout, or "
                "pg_cancel_backend() was called); the connections are reopened"
            )
    return "Lost the database connection"


class ListenSession:
    """A connection LISTENing on ``channels``, reopened with backoff whenever it is lost.

    :meth:`run` hands each new connection to a ``serve`` function; when that raises one of
    ``errors`` (the connection, or Django's, was lost), the session closes the connection,
    waits (0.5 s, doubling up to 10 s; a wake-up on ``wake_fds`` cuts the wait short) and
    opens another. After ``reconnect_timeout`` seconds without a working connection it
    raises :class:`~pgpubsub.exceptions.DatabaseUnavailable`.

    Example::

        session = ListenSession(lambda: open_listen_connection("default"), ["orders"],
                                reconnect_timeout=600, errors=connection_errors("default"))
        session.run(lambda connection: print(connection.wait(5.0)))
    """

    BACKOFF_START = 0.5
    BACKOFF_MAX = 10.0

    def __init__(
        self,
        connect: ConnectionFactory,
        channels: Sequence[str],
        *,
        reconnect_timeout: float,
        errors: tuple[type[BaseException], ...],
        clock: Clock = SYSTEM_CLOCK,
        should_stop: Callable[[], bool] = lambda: False,
        wake_fds: Sequence[int] = (),
        on_disconnect: Callable[[], None] = lambda: None,
    ) -> None:
        self._connect = connect
        self._channels = list(channels)
        self._reconnect_timeout = reconnect_timeout
        self._errors = errors
        self._clock = clock
        self._should_stop = should_stop
        self._wake_fds = wake_fds
        self._on_disconnect = on_disconnect
        self._connection: ListenConnection | None = None
        self._outage_started: float | None = None
        self._backoff = self.BACKOFF_START

    def run(self, serve: Callable[[ListenConnection], None]) -> None:
        """Serve connections until ``should_stop`` is true when ``serve`` returns or fails.

        Raises:
            DatabaseUnavailable: no connection worked for ``reconnect_timeout`` seconds.
        """
        try:
            while not self._should_stop():
                try:
                    connection = self._open()
                    serve(connection)
                except self._errors as exc:
                    self._close()
                    if self._should_stop():
                        break
                    self._wait_after(exc)
        finally:
            self._close()

    def _open(self) -> ListenConnection:
        self._connection = self._connect()
        self._connection.listen(self._channels)
        if self._outage_started is not None:
            logger.info(
                "Reconnected after %.1f s without the database",
                self._clock.monotonic() - self._outage_started,
                extra={"action": "reconnected"},
            )
        self._outage_started, self._backoff = None, self.BACKOFF_START
        return self._connection

    def _wait_after(self, exc: BaseException) -> None:
        now = self._clock.monotonic()
        if self._outage_started is None:
            self._outage_started = now
        if now - self._outage_started > self._reconnect_timeout:
            logger.error(
                "No database for %.0f s (PGPUBSUB_RECONNECT_TIMEOUT): giving up",
                now - self._outage_started,
                extra={"action": "gave_up"},
            )
            raise DatabaseUnavailable(
                f"No database for {now - self._outage_started:.0f} s, longer than "
                f"PGPUBSUB_RECONNECT_TIMEOUT ({self._reconnect_timeout:g} s); last error: {exc}"
            )
        logger.warning(
            "%s (%s); reconnecting in %.1f s",
            what_failed(exc),
            str(exc).strip() or type(exc).__name__,
            self._backoff,
            extra={"action": "reconnecting"},
        )
        self._clock.wait(self._backoff, self._wake_fds)
        self._backoff = min(self._backoff * 2, self.BACKOFF_MAX)

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:
                logger.debug("Closing the LISTEN connection failed", exc_info=True)
        self._on_disconnect()
