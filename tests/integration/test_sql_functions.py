"""pgpubsub's SQL functions: installed where PGTRIGGER_SCHEMA says, writing pgpubsub's tables."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test import override_settings

import pgpubsub
from pgpubsub import functions
from pgpubsub.models import Notification
from testapp.channels import Task

pytestmark = pytest.mark.django_db  # the schema and its functions are rolled back


def test_functions_go_to_pgtrigger_schema_and_notify_calls_them_there() -> None:
    schema = f"pgpubsub_t{uuid.uuid4().hex[:10]}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{schema}"')

    with override_settings(PGTRIGGER_SCHEMA=schema):
        created = functions.install_functions(connection)
        installed_again = functions.install_functions(connection)
        pgpubsub.notify(Task, key="through the other schema")

    assert created == [
        "pgpubsub_send_v2",
        "pgpubsub_publish_v2",
        "pgpubsub_send_v3",
        "pgpubsub_publish_v3",
    ]
    assert installed_again == []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.proname FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s ORDER BY p.proname",
            [schema],
        )
        assert cursor.fetchall() == [
            ("pgpubsub_publish_v2",),
            ("pgpubsub_publish_v3",),
            ("pgpubsub_send_v2",),
            ("pgpubsub_send_v3",),
        ]
    (stored,) = Notification.objects.all()
    assert stored.payload["kwargs"]["key"] == "through the other schema"


def test_functions_run_with_a_pinned_search_path() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.proname, p.proconfig FROM pg_proc AS p "
            "WHERE p.proname ~ '^pgpubsub_(publish|send)_v[23]$' ORDER BY p.proname"
        )
        rows = cursor.fetchall()

    assert rows == [
        ("pgpubsub_publish_v2", ["search_path=pg_catalog, pg_temp"]),
        ("pgpubsub_publish_v3", ["search_path=pg_catalog, pg_temp"]),
        ("pgpubsub_send_v2", ["search_path=pg_catalog, pg_temp"]),
        ("pgpubsub_send_v3", ["search_path=pg_catalog, pg_temp"]),
    ]
