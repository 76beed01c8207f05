"""The versioned SQL functions that triggers and ``notify()`` call, and their installation.

Trigger SQL frozen into users' migrations calls these functions by name, so a version is
never edited once released: a change is a new version (``_v3``) installed beside the old
ones, which stay for the triggers that still call them.

Version 2 names every object by its schema and runs with a pinned ``search_path``, so a
role that can create objects in a schema earlier in the caller's ``search_path`` cannot
substitute its own function or table. The functions live in the schema django-pgtrigger
uses for its own function (``PGTRIGGER_SCHEMA``, default ``public``): the trigger SQL
names that schema. The tables they write are those of the schema that is current when
pgpubsub is installed (``current_schema()`` at ``migrate`` time), where Django creates
pgpubsub's tables.

They are installed before any migration runs (a ``pre_migrate`` receiver, see
:mod:`pgpubsub.installation`) and by migration ``0009``, whichever comes first; installing them
again changes nothing, so an administrator's ``ALTER FUNCTION ... SECURITY DEFINER`` and
grants stay.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from pgtrigger import features

#: The latest version, installed by migration 0010.
CURRENT_VERSION = 3
#: The function a trigger body calls. Version 3 only adds an ordering key: triggers of
#: channels without ``ordering_key`` keep calling version 2, so their SQL (frozen in the
#: user's migrations) does not change.
PUBLISH = "pgpubsub_publish_v2"
#: The function the trigger body of a channel with an ``ordering_key`` calls.
PUBLISH_ORDERED = "pgpubsub_publish_v3"
#: The function ``notify()`` and ``notify_at()`` call.
SEND = "pgpubsub_send_v3"
#: What a lockable channel's NOTIFY carries when a message was stored for later (delayed):
#: the workers look up when it is due. An immediate message's NOTIFY carries ``''``.
DELAYED_DOORBELL = "later"

_SIGNATURES_V2 = {
    "pgpubsub_send_v2": "text, boolean, text, jsonb[]",
    "pgpubsub_publish_v2": "text, text, boolean, text, text, jsonb[], jsonb[]",
}

# __FUNCTIONS__ and __TABLES__ become quoted schema names, __MIGRATIONS_TABLE__ the name of
# django_migrations as an SQL string literal. Built-in functions and operators
# resolve in pg_catalog through the pinned search_path.
_DEFINITIONS_V2 = {
    "pgpubsub_send_v2": """
-- Sends payloads on a channel. Lockable channels store each payload as a notification
-- and ring the doorbell with an empty NOTIFY (PostgreSQL folds identical ones within a
-- transaction). Fan-out channels NOTIFY each payload, or the id of a stored copy when it
-- is too large for NOTIFY.
CREATE FUNCTION __FUNCTIONS__.pgpubsub_send_v2(
    p_channel text, p_lockable boolean, p_app text, p_payloads jsonb[]
) RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_payload jsonb;
    v_message text;
    v_ref bigint;
    v_version integer;
BEGIN
    IF p_payloads IS NULL OR cardinality(p_payloads) = 0 THEN
        RETURN;
    END IF;
    IF p_lockable THEN
        -- A database made without migrations (pytest-django's --nomigrations) has no
        -- django_migrations, nor the column defaults of migration 0007: every value is given.
        IF to_regclass(__MIGRATIONS_TABLE__) IS NOT NULL THEN
            SELECT max(m.id) INTO v_version
            FROM __TABLES__.django_migrations AS m WHERE m.app = p_app;
        END IF;
        INSERT INTO __TABLES__.pgpubsub_notification
            (channel, payload, created_at, db_version, attempts, available_at, last_error)
        SELECT p_channel, payload, now(), v_version, 0, now(), ''
        FROM unnest(p_payloads) AS payload;
        PERFORM pg_notify(p_channel, '');
        RETURN;
    END IF;
    FOREACH v_payload IN ARRAY p_payloads LOOP
        v_message := jsonb_build_object('p', v_payload)::text;
        IF octet_length(v_message) >= 7900 THEN
            INSERT INTO __TABLES__.pgpubsub_broadcastpayload (channel, payload, created_at)
            VALUES (p_channel, v_payload, now())
            RETURNING id INTO v_ref;
            v_message := jsonb_build_object('r', v_ref)::text;
        END IF;
        PERFORM pg_notify(p_channel, v_message);
    END LOOP;
END
$fn$;
""",
    "pgpubsub_publish_v2": """
-- Called by pgpubsub triggers with the rows of one statement (statement-level triggers)
-- or one row (row-level triggers); adds the session's notification context, {} when none
-- is set. A context that is not valid jsonb (set by hand) is left out with a warning: a
-- write never fails because of it. For a lockable channel the whole statement is stored
-- by one INSERT ... SELECT.
CREATE FUNCTION __FUNCTIONS__.pgpubsub_publish_v2(
    p_channel text, p_trigger text, p_lockable boolean, p_app text, p_model text,
    p_old jsonb[], p_new jsonb[]
) RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_setting text := current_setting('pgpubsub.notification_context', true);
    v_context jsonb := '{}';
    v_base jsonb;
    v_payloads jsonb[];
    v_version integer;
BEGIN
    IF v_setting IS NOT NULL AND v_setting <> '' THEN
        BEGIN
            v_context := v_setting::jsonb;
        EXCEPTION WHEN others THEN
            RAISE WARNING 'pgpubsub: the notification context of this session is not '
                'valid jsonb (%), so it was left out of the message on channel %',
                SQLERRM, p_channel;
        END;
    END IF;
    -- What all rows share, built once: per row only old and new are added.
    v_base := jsonb_build_object(
        'app', p_app, 'model', p_model, 'trigger', p_trigger, 'context', v_context
    );
    IF p_lockable THEN
        IF to_regclass(__MIGRATIONS_TABLE__) IS NOT NULL THEN
            SELECT max(m.id) INTO v_version
            FROM __TABLES__.django_migrations AS m WHERE m.app = p_app;
        END IF;
        INSERT INTO __TABLES__.pgpubsub_notification
            (channel, payload, created_at, db_version, attempts, available_at, last_error)
        SELECT p_channel,
               v_base || jsonb_build_object('old', old_row, 'new', new_row),
               now(), v_version, 0, now(), ''
        FROM unnest(p_old, p_new) AS rows (old_row, new_row);
        IF FOUND THEN
            PERFORM pg_notify(p_channel, '');
        END IF;
        RETURN;
    END IF;
    SELECT array_agg(v_base || jsonb_build_object('old', old_row, 'new', new_row))
    INTO v_payloads
    FROM unnest(p_old, p_new) AS rows (old_row, new_row);
    PERFORM __FUNCTIONS__.pgpubsub_send_v2(p_channel, false, p_app, v_payloads);
END
$fn$;
""",
}


_SIGNATURES_V3 = {
    "pgpubsub_send_v3": "text, boolean, text, jsonb[], text[], timestamp with time zone",
    "pgpubsub_publish_v3": "text, text, boolean, text, text, jsonb[], jsonb[], text",
}

_DEFINITIONS_V3 = {
    "pgpubsub_send_v3": """
-- Version 2, plus an ordering key per payload (p_keys, NULL for none) and a time before which
-- lockable messages are not handled (p_available_at, NULL for now). A delayed message rings
-- the doorbell with 'later', so that workers look up when it is due.
CREATE FUNCTION __FUNCTIONS__.pgpubsub_send_v3(
    p_channel text, p_lockable boolean, p_app text, p_payloads jsonb[], p_keys text[],
    p_available_at timestamptz
) RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_version integer;
BEGIN
    IF p_payloads IS NULL OR cardinality(p_payloads) = 0 THEN
        RETURN;
    END IF;
    IF NOT p_lockable THEN
        PERFORM __FUNCTIONS__.pgpubsub_send_v2(p_channel, false, p_app, p_payloads);
        RETURN;
    END IF;
    IF to_regclass(__MIGRATIONS_TABLE__) IS NOT NULL THEN
        SELECT max(m.id) INTO v_version
        FROM __TABLES__.django_migrations AS m WHERE m.app = p_app;
    END IF;
    INSERT INTO __TABLES__.pgpubsub_notification
        (channel, payload, created_at, db_version, attempts, available_at, last_error,
         ordering_key)
    SELECT p_channel, rows.payload, now(), v_version, 0,
           GREATEST(now(), COALESCE(p_available_at, now())), '', rows.ordering_key
    FROM unnest(p_payloads, p_keys) AS rows (payload, ordering_key)
    WHERE rows.payload IS NOT NULL;
    IF p_available_at IS NOT NULL AND p_available_at > now() THEN
        PERFORM pg_notify(p_channel, 'later');
    ELSE
        PERFORM pg_notify(p_channel, '');
    END IF;
END
$fn$;
""",
    "pgpubsub_publish_v3": """
-- Version 2 for a lockable channel with an ordering key: p_key names the column (in the
-- row's jsonb) whose value is each message's key, read from the new row, or from the old
-- one for a delete. Other channels call version 2.
CREATE FUNCTION __FUNCTIONS__.pgpubsub_publish_v3(
    p_channel text, p_trigger text, p_lockable boolean, p_app text, p_model text,
    p_old jsonb[], p_new jsonb[], p_key text
) RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_setting text := current_setting('pgpubsub.notification_context', true);
    v_context jsonb := '{}';
    v_base jsonb;
    v_version integer;
BEGIN
    IF NOT p_lockable THEN
        PERFORM __FUNCTIONS__.pgpubsub_publish_v2(
            p_channel, p_trigger, p_lockable, p_app, p_model, p_old, p_new
        );
        RETURN;
    END IF;
    IF v_setting IS NOT NULL AND v_setting <> '' THEN
        BEGIN
            v_context := v_setting::jsonb;
        EXCEPTION WHEN others THEN
            RAISE WARNING 'pgpubsub: the notification context of this session is not '
                'valid jsonb (%), so it was left out of the message on channel %',
                SQLERRM, p_channel;
        END;
    END IF;
    v_base := jsonb_build_object(
        'app', p_app, 'model', p_model, 'trigger', p_trigger, 'context', v_context
    );
    IF to_regclass(__MIGRATIONS_TABLE__) IS NOT NULL THEN
        SELECT max(m.id) INTO v_version
        FROM __TABLES__.django_migrations AS m WHERE m.app = p_app;
    END IF;
    INSERT INTO __TABLES__.pgpubsub_notification
        (channel, payload, created_at, db_version, attempts, available_at, last_error,
         ordering_key)
    SELECT p_channel,
           v_base || jsonb_build_object('old', old_row, 'new', new_row),
           now(), v_version, 0, now(), '',
           COALESCE(new_row ->> p_key, old_row ->> p_key)
    FROM unnest(p_old, p_new) AS rows (old_row, new_row);
    IF FOUND THEN
        PERFORM pg_notify(p_channel, '');
    END IF;
END
$fn$;
""",
}


#: Version 1 (unqualified names) is installed by migration 0007 only, for the triggers that
#: still call it until their migrations are regenerated.
_VERSIONS = {
    2: (_SIGNATURES_V2, _DEFINITIONS_V2),
    3: (_SIGNATURES_V3, _DEFINITIONS_V3),
}


def functions_schema() -> str:
    """The schema of pgpubsub's SQL functions: django-pgtrigger's (``PGTRIGGER_SCHEMA``)."""
    return str(features.schema())


def signatures(version: int = CURRENT_VERSION) -> dict[str, str]:
    """Each function of ``version`` with its argument types, for example for ``ALTER FUNCTION``."""
    return dict(_VERSIONS[version][0])


def qualified(name: str) -> str:
    """``name`` of a pgpubsub function qualified by its quoted schema, for SQL text."""
    return '"' + functions_schema().replace('"', '""') + '".' + name


def install_functions(connection: Any, versions: tuple[int, ...] = tuple(_VERSIONS)) -> list[str]:
    """Create each function of ``versions`` that ``connection``'s database lacks.

    A function that exists is left as it is (with its owner, grants and ``SECURITY``
    setting). Returns the names of the functions created.

    Raises:
        ImproperlyConfigured: the connection has no current schema (an empty ``search_path``).
    """
    created = []
    with connection.cursor() as cursor:
        functions, tables = _quoted_schemas(cursor)
        cursor.execute("SELECT quote_literal(%s)", [f"{tables}.django_migrations"])
        (migrations_table,) = cursor.fetchone()
        for version in versions:
            signatures, definitions = _VERSIONS[version]
            for name, definition in definitions.items():
                cursor.execute(
                    "SELECT to_regprocedure(%s) IS NULL",
                    [f"{functions}.{name}({signatures[name]})"],
                )
                if cursor.fetchone()[0]:
                    cursor.execute(
                        definition.replace("__MIGRATIONS_TABLE__", migrations_table)
                        .replace("__FUNCTIONS__", functions)
                        .replace("__TABLES__", tables)
                    )
                    created.append(name)
    return created


def drop_functions(connection: Any, version: int) -> None:
    """Drop the functions of ``version`` (reversing the migration that installed them)."""
    signatures, _ = _VERSIONS[version]
    with connection.cursor() as cursor:
        functions, _ = _quoted_schemas(cursor)
        for name in reversed(list(signatures)):
            cursor.execute(f"DROP FUNCTION IF EXISTS {functions}.{name}({signatures[name]})")


def _quoted_schemas(cursor: Any) -> tuple[str, str]:
    """The schema of the functions and that of pgpubsub's tables, quoted by PostgreSQL."""
    cursor.execute("SELECT quote_ident(%s), quote_ident(current_schema())", [functions_schema()])
    functions, tables = cursor.fetchone()
    if tables is None:
        raise ImproperlyConfigured(
            "The database connection has no current schema (its search_path names no schema "
            "that exists), so pgpubsub cannot tell where its tables are: set search_path, "
            'for example to "$user", public.'
        )
    return str(functions), str(tables)
