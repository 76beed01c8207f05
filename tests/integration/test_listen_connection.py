"""The LISTEN connection, with whichever driver Django uses (psycopg2 or psycopg 3).

An idle worker waits on the connection's socket: no CPU, no query. What arrived is read
client-side, so the server never sees a statement after the LISTENs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection, connections

from pgpubsub.connection import (
    WORKER_APPLICATION_NAME,
    ListenConnection,
    Message,
    close_django_connections,
    driver_module,
    open_listen_connection,
)
from tests.integration.messaging import SENTINEL, receive
from tests.support.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

CHANNEL = "pgpubsub_test_listen_connection"


def listen_backend_activity() -> tuple[int, str]:
    """The pid and last statement of this process's LISTEN connection, as the server sees it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, query FROM pg_stat_activity WHERE application_name = %s",
            [f"{WORKER_APPLICATION_NAME} {os.getpid()}"],
        )
        rows = cursor.fetchall()
    assert len(rows) == 1, rows
    return rows[0]


@pytest.fixture
def send(other_connection: Any) -> Callable[[str, str], None]:
    def notify(channel: str, payload: str) -> None:
        with other_connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [channel, payload])

    return notify


@pytest.fixture
def listener(listen_to: Callable[..., ListenConnection]) -> ListenConnection:
    return listen_to(CHANNEL)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    os.close(read_end)
    os.close(write_end)


def test_messages_arrive_with_their_channel_and_exact_text(
    listener: ListenConnection, send: Callable[[str, str], None]
) -> None:
    texts = ["first", "ünïcödé ✓ 漢字 🎉", "it's 'quoted' \\ and \n on two lines", ""]
    for text in texts:
        send(CHANNEL, text)

    received = receive(listener, lambda got: len(got) >= len(texts))

    assert [(message.channel, message.payload) for message in received] == [
        (CHANNEL, text) for text in texts
    ]


def test_reading_what_arrived_sends_no_query_to_the_server(
    listener: ListenConnection, send: Callable[[str, str], None]
) -> None:
    pid, last_statement = listen_backend_activity()
    assert last_statement == f'LISTEN "{SENTINEL}"'

    for round_number in range(3):
        send(CHANNEL, f"round {round_number}")
        receive(listener, lambda got: len(got) == 1)

    # A driver that polled with a query (`SELECT 1`, or even an empty one) would show here.
    assert listen_backend_activity() == (pid, last_statement)


def test_an_idle_wait_blocks_on_the_socket_without_using_cpu(
    listener: ListenConnection,
) -> None:
    cpu_before, wall_before = time.process_time(), time.monotonic()

    assert listener.wait(1.0) == []

    assert time.monotonic() - wall_before >= 0.9
    assert time.process_time() - cpu_before < 0.1  # a busy loop would use the whole second


def test_a_wake_up_descriptor_ends_the_wait_early(
    listener: ListenConnection, pipe: tuple[int, int]
) -> None:
    read_end, write_end = pipe
    os.write(write_end, b"x")
    received: list[list[Message]] = []
    waiting = threading.Thread(
        target=lambda: received.append(listener.wait(3600.0, wake_fds=[read_end])), daemon=True
    )

    waiting.start()

    # An hour-long wait that ends: the descriptor ended it.
    wait_for(lambda: not waiting.is_alive(), message="the wake-up to end the wait")
    assert received == [[]]


def test_a_lost_server_connection_raises_the_drivers_error(
    listener: ListenConnection,
) -> None:
    # The worker catches these to reconnect (tests/acceptance/test_connection_loss.py).
    pid, _ = listen_backend_activity()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    driver = driver_module("default")

    with pytest.raises((driver.OperationalError, driver.InterfaceError)):
        for _ in range(10):  # the termination notice may take a moment to arrive
            listener.wait(1.0)


pooled = pytest.mark.skipif(
    "pool" not in connections.settings["default"].get("OPTIONS", {}),
    reason="needs Django's connection pool: DATABASE_POOL=1 (CI runs the suite so once)",
)


@pooled
def test_the_listen_connection_is_never_taken_from_djangos_pool() -> None:
    connection.ensure_connection()
    pool = connection.pool
    requests_before = pool.get_stats()["requests_num"]

    listener = open_listen_connection("default")
    try:
        listener.listen([CHANNEL])
        pid, _ = listen_backend_activity()
    finally:
        listener.close()

    assert pool.get_stats()["requests_num"] == requests_before
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid


@pooled
def test_closing_before_forking_closes_djangos_pool() -> None:
    connection.ensure_connection()
    pool = connection.pool

    close_django_connections()

    assert pool.closed
    with connection.cursor() as cursor:  # the next use opens a new pool
        cursor.execute("SELECT 1")
    assert connection.pool is not pool
