"""Hijacking through search_path: another role's look-alike objects are never used.

The attack of issue 13: a role with CREATE on the database makes a schema named after the
application's role (first in the default search_path, as "$user"), puts look-alikes of
pgpubsub's functions, of ``to_jsonb`` and of ``pgpubsub_notification`` in it, and waits for
the application to write a tracked model.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection

import pgpubsub
from pgpubsub.models import Notification
from testapp.channels import AuthorTriggerChannel, Task
from tests.factories import AuthorFactory
from tests.support.roles import acting_as, documented_sql, temporary_roles

pytestmark = pytest.mark.django_db(transaction=True)

_STEAL = """INSERT INTO "{schema}".stolen VALUES ('{what}')"""

ATTACK = """
CREATE SCHEMA "{schema}";
GRANT USAGE ON SCHEMA "{schema}" TO PUBLIC;
CREATE TABLE "{schema}".stolen (what text);
GRANT INSERT ON "{schema}".stolen TO PUBLIC;
CREATE TABLE "{schema}".pgpubsub_notification (
    id bigserial, channel text, payload jsonb, created_at timestamptz, db_version integer
);
CREATE TABLE "{schema}".django_migrations (id integer, app text);
GRANT ALL ON "{schema}".pgpubsub_notification, "{schema}".django_migrations TO PUBLIC;
CREATE FUNCTION "{schema}".pgpubsub_publish_v1(
    text, text, boolean, text, text, jsonb[], jsonb[]
) RETURNS void LANGUAGE sql AS $$ {steal_publish_v1} $$;
CREATE FUNCTION "{schema}".pgpubsub_publish_v2(
    text, text, boolean, text, text, jsonb[], jsonb[]
) RETURNS void LANGUAGE sql AS $$ {steal_publish_v2} $$;
CREATE FUNCTION "{schema}".pgpubsub_send_v2(text, boolean, text, jsonb[])
RETURNS void LANGUAGE sql AS $$ {steal_send_v2} $$;
CREATE FUNCTION "{schema}".pgpubsub_publish_v3(
    text, text, boolean, text, text, jsonb[], jsonb[], text
) RETURNS void LANGUAGE sql AS $$ {steal_publish_v3} $$;
CREATE FUNCTION "{schema}".pgpubsub_send_v3(text, boolean, text, jsonb[], text[], timestamptz)
RETURNS void LANGUAGE sql AS $$ {steal_send_v3} $$;
CREATE FUNCTION "{schema}".to_jsonb(public.testapp_author)
RETURNS jsonb LANGUAGE sql AS $$ {steal_to_jsonb}; SELECT '{{}}'::jsonb $$;
CREATE FUNCTION "{schema}".unnest(jsonb[])
RETURNS SETOF jsonb LANGUAGE sql AS $$ {steal_unnest}; SELECT '{{}}'::jsonb $$;
"""


def attack_sql(schema: str) -> str:
    steals = {
        f"steal_{what}": _STEAL.format(schema=schema, what=what)
        for what in (
            "publish_v1",
            "publish_v2",
            "send_v2",
            "publish_v3",
            "send_v3",
            "to_jsonb",
            "unnest",
        )
    }
    return ATTACK.format(schema=schema, **steals)


@pytest.fixture
def hijacked_app_role() -> Iterator[str]:
    """An application role with the documented grants, and an attacker who set a trap."""
    with temporary_roles("web", "attacker") as roles:
        app, attacker = roles["web"], roles["attacker"]
        with connection.cursor() as cursor:
            cursor.execute(documented_sql("the web application", {"myapp_web": app}))
            # The application's own tables.
            cursor.execute(f'GRANT SELECT, INSERT ON testapp_author TO "{app}"')
            cursor.execute(f'GRANT USAGE ON SEQUENCE testapp_author_id_seq TO "{app}"')
            database = connection.settings_dict["NAME"]
            cursor.execute(f'GRANT CREATE ON DATABASE "{database}" TO "{attacker}"')
        with acting_as(attacker), connection.cursor() as cursor:
            cursor.execute(attack_sql(schema=app))
        yield app
        with connection.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA "{app}" CASCADE')


def stolen(schema: str) -> list[str]:
    """What the attacker's look-alikes recorded: each one that ran."""
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT what FROM "{schema}".stolen')
        return [what for (what,) in cursor.fetchall()]


def test_the_trap_is_in_the_app_roles_search_path(hijacked_app_role: str) -> None:
    # Without qualified names, this is what a trigger would have called.
    with acting_as(hijacked_app_role), connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        assert cursor.fetchone() == (hijacked_app_role,)
        cursor.execute(
            "SELECT pgpubsub_publish_v2('c', 't', true, 'testapp', 'Author', NULL, NULL)"
        )

    assert stolen(hijacked_app_role) == ["publish_v2"]


def test_orm_write_of_a_tracked_model_stores_its_message_and_runs_nothing_of_the_attackers(
    hijacked_app_role: str,
) -> None:
    with acting_as(hijacked_app_role):
        author = AuthorFactory.create(name="Ann")

    (stored,) = Notification.objects.all()
    assert stored.channel == AuthorTriggerChannel.listen_safe_name()
    assert stored.payload["new"]["id"] == author.pk
    assert stored.payload["new"]["name"] == "Ann"
    assert stolen(hijacked_app_role) == []


def test_notify_stores_its_message_and_runs_nothing_of_the_attackers(
    hijacked_app_role: str,
) -> None:
    with acting_as(hijacked_app_role):
        pgpubsub.notify(Task, key="k")

    (stored,) = Notification.objects.all()
    assert stored.channel == Task.listen_safe_name()
    assert stored.payload["kwargs"]["key"] == "k"
    assert stolen(hijacked_app_role) == []
