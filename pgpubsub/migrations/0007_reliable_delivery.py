# pgpubsub's storage: retries and dead letters on Notification, oversized fan-out payloads,
# and version 1 of the SQL functions that triggers call. Never edit: add a migration.
import hashlib

import django.utils.timezone
from django.db import migrations, models

DROP_DJANGO_PGPUBSUB_LEFTOVERS = """
DO $$
DECLARE
    leftover record;
BEGIN
    -- django-pgpubsub 1.3 set db_version with a trigger; pgpubsub_send_v1 sets it now.
    FOR leftover IN
        SELECT tgname FROM pg_trigger
        WHERE tgrelid = 'pgpubsub_notification'::regclass
          AND tgname LIKE 'pgtrigger\\_pgpubsub\\_notification\\_set\\_db\\_version\\_%'
    LOOP
        EXECUTE format('DROP TRIGGER %I ON pgpubsub_notification', leftover.tgname);
        EXECUTE format('DROP FUNCTION IF EXISTS %I()', leftover.tgname);
    END LOOP;
END
$$;
-- A foreign key to django_migrations made unapplying a user's migration fail.
ALTER TABLE pgpubsub_notification DROP CONSTRAINT IF EXISTS pgpubsub_notification_db_version_fk;
"""

WIDEN_ID = """
ALTER TABLE pgpubsub_notification ALTER COLUMN id TYPE bigint;
DO $$
DECLARE
    id_sequence text := pg_get_serial_sequence('pgpubsub_notification', 'id');
BEGIN
    IF id_sequence IS NOT NULL THEN
        EXECUTE format('ALTER SEQUENCE %s AS bigint', id_sequence);
    END IF;
END
$$;
"""

# Rows written by triggers generated with django-pgpubsub 1.3 (until the user regenerates
# them) name only channel and payload: the database fills in the rest.
DATABASE_DEFAULTS = """
ALTER TABLE pgpubsub_notification
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN attempts SET DEFAULT 0,
    ALTER COLUMN available_at SET DEFAULT now(),
    ALTER COLUMN last_error SET DEFAULT '';
ALTER TABLE pgpubsub_broadcastpayload ALTER COLUMN created_at SET DEFAULT now();
"""

FUNCTIONS_V1 = """
-- Sends payloads on a channel. Lockable channels store each payload as a notification
-- and ring the doorbell with an empty NOTIFY (PostgreSQL folds identical ones within a
-- transaction). Fan-out channels NOTIFY each payload, or the id of a stored copy when it
-- is too large for NOTIFY.
CREATE OR REPLACE FUNCTION pgpubsub_send_v1(
    p_channel text, p_lockable boolean, p_app text, p_payloads jsonb[]
) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_payload jsonb;
    v_message text;
    v_ref bigint;
BEGIN
    IF p_payloads IS NULL OR cardinality(p_payloads) = 0 THEN
        RETURN;
    END IF;
    IF p_lockable THEN
        INSERT INTO pgpubsub_notification (channel, payload, created_at, db_version)
        SELECT p_channel, payload, now(),
               (SELECT max(m.id) FROM django_migrations AS m WHERE m.app = p_app)
        FROM unnest(p_payloads) AS payload;
        PERFORM pg_notify(p_channel, '');
        RETURN;
    END IF;
    FOREACH v_payload IN ARRAY p_payloads LOOP
        v_message := jsonb_build_object('p', v_payload)::text;
        IF octet_length(v_message) >= 7900 THEN
            INSERT INTO pgpubsub_broadcastpayload (channel, payload, created_at)
            VALUES (p_channel, v_payload, now())
            RETURNING id INTO v_ref;
            v_message := jsonb_build_object('r', v_ref)::text;
        END IF;
        PERFORM pg_notify(p_channel, v_message);
    END LOOP;
END
$fn$;

-- Called by pgpubsub triggers with the rows of one statement (statement-level triggers)
-- or one row (row-level triggers); adds the notification context of the session. For a
-- lockable channel the whole statement is stored by one INSERT ... SELECT.
CREATE OR REPLACE FUNCTION pgpubsub_publish_v1(
    p_channel text, p_trigger text, p_lockable boolean, p_app text, p_model text,
    p_old jsonb[], p_new jsonb[]
) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_context jsonb := NULLIF(current_setting('pgpubsub.notification_context', true), '')::jsonb;
    -- What all rows share, built once: per row only old and new are added.
    v_base jsonb := jsonb_build_object(
        'app', p_app, 'model', p_model, 'trigger', p_trigger, 'context', v_context
    );
    v_payloads jsonb[];
BEGIN
    IF p_lockable THEN
        INSERT INTO pgpubsub_notification (channel, payload, created_at, db_version)
        SELECT p_channel,
               v_base || jsonb_build_object('old', old_row, 'new', new_row),
               now(),
               (SELECT max(m.id) FROM django_migrations AS m WHERE m.app = p_app)
        FROM unnest(p_old, p_new) AS rows (old_row, new_row);
        IF FOUND THEN
            PERFORM pg_notify(p_channel, '');
        END IF;
        RETURN;
    END IF;
    SELECT array_agg(v_base || jsonb_build_object('old', old_row, 'new', new_row))
    INTO v_payloads
    FROM unnest(p_old, p_new) AS rows (old_row, new_row);
    PERFORM pgpubsub_send_v1(p_channel, false, p_app, v_payloads);
END
$fn$;
"""

DROP_FUNCTIONS_V1 = """
DROP FUNCTION IF EXISTS pgpubsub_publish_v1(text, text, boolean, text, text, jsonb[], jsonb[]);
DROP FUNCTION IF EXISTS pgpubsub_send_v1(text, boolean, text, jsonb[]);
"""


def adopt_django_pgpubsub_notify_rows(apps, schema_editor):
    """Rows stored by django-pgpubsub 1.3's notify() name the channel by its dotted path and
    hold the payload as a JSON string: store them as pgpubsub does, so they get processed."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "UPDATE pgpubsub_notification SET payload = (payload #>> '{}')::jsonb "
            "WHERE jsonb_typeof(payload) = 'string'"
        )
        cursor.execute("SELECT DISTINCT channel FROM pgpubsub_notification WHERE channel LIKE '%.%'")
        for (dotted_path,) in cursor.fetchall():
            pg_name = "pgpubsub_" + hashlib.sha1(dotted_path.encode()).hexdigest()[:5]
            cursor.execute(
                "UPDATE pgpubsub_notification SET channel = %s WHERE channel = %s",
                [pg_name, dotted_path],
            )


class Migration(migrations.Migration):
    dependencies = [("pgpubsub", "0001_squashed_0006_payload_stores_proper_jsonb")]

    operations = [
        migrations.RunSQL(DROP_DJANGO_PGPUBSUB_LEFTOVERS, migrations.RunSQL.noop),
        migrations.RunPython(adopt_django_pgpubsub_notify_rows, migrations.RunPython.noop),
        migrations.RunSQL(
            WIDEN_ID,
            migrations.RunSQL.noop,
            state_operations=[
                migrations.AlterField(
                    model_name="notification",
                    name="id",
                    field=models.BigAutoField(primary_key=True, serialize=False),
                ),
            ],
        ),
        migrations.AlterField(
            model_name="notification",
            name="created_at",
            field=models.DateTimeField(default=django.utils.timezone.now, null=True),
        ),
        migrations.AddField(
            model_name="notification",
            name="attempts",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="notification",
            name="available_at",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AddField(
            model_name="notification",
            name="last_attempt_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="notification",
            name="last_error",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.AddField(
            model_name="notification",
            name="failed_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="notification",
            index=models.Index(
                condition=models.Q(failed_at__isnull=True),
                fields=["channel", "id"],
                name="pgpubsub_notification_queue",
            ),
        ),
        migrations.CreateModel(
            name="BroadcastPayload",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("channel", models.CharField(max_length=63)),
                ("payload", models.JSONField()),
                (
                    "created_at",
                    models.DateTimeField(db_index=True, default=django.utils.timezone.now),
                ),
            ],
        ),
        migrations.RunSQL(DATABASE_DEFAULTS, migrations.RunSQL.noop),
        migrations.RunSQL(FUNCTIONS_V1, DROP_FUNCTIONS_V1),
    ]
