"""A statement cancelled by statement_timeout is logged as such, not as a lost connection."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection

from pgpubsub.connection import what_failed


def cancelled_by_statement_timeout() -> OperationalError:
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 10")
        try:
            cursor.execute("SELECT pg_sleep(5)")
        except OperationalError as exc:
            return exc
        finally:
            cursor.execute("RESET statement_timeout")
    raise AssertionError("pg_sleep(5) was not cancelled after 10 ms")


@pytest.mark.django_db(transaction=True)
def test_a_statement_timeout_is_called_a_cancelled_query() -> None:
    words = what_failed(cancelled_by_statement_timeout())
    assert words.startswith("A query was cancelled (it ran longer than statement_timeout")


@pytest.mark.django_db(transaction=True)
def test_a_closed_connection_is_called_a_lost_connection() -> None:
    connection.ensure_connection()
    connection.connection.close()  # what a cut connection looks like to Django
    with pytest.raises(Exception) as raised, connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert what_failed(raised.value) == "Lost the database connection"
    connection.close()
