# Per-key ordering, kept handled messages, replays and delayed messages: the columns, the
# indexes that keep their claims index-driven, and version 3 of the SQL functions
# (pgpubsub.functions). Never edit: add a migration.
from django.db import migrations, models

from pgpubsub import functions


def install_version_3(apps, schema_editor):
    functions.install_functions(schema_editor.connection, versions=(3,))


def drop_version_3(apps, schema_editor):
    functions.drop_functions(schema_editor.connection, version=3)


class Migration(migrations.Migration):
    dependencies = [("pgpubsub", "0009_schema_qualified_functions")]

    operations = [
        migrations.AddField(
            model_name="notification",
            name="ordering_key",
            field=models.TextField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="notification",
            name="handled_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="notification",
            name="handled_by",
            field=models.TextField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="notification",
            name="replay_of",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        # The queue index leaves out handled rows too, so that kept ones cost claims nothing.
        migrations.AddIndex(
            model_name="notification",
            index=models.Index(
                condition=models.Q(failed_at__isnull=True, handled_at__isnull=True),
                fields=["channel", "id"],
                name="pgpubsub_queue",
            ),
        ),
        migrations.RemoveIndex(model_name="notification", name="pgpubsub_notification_queue"),
        migrations.AddIndex(
            model_name="notification",
            index=models.Index(
                condition=models.Q(
                    failed_at__isnull=True, handled_at__isnull=True, ordering_key__isnull=False
                ),
                fields=["channel", "ordering_key", "id"],
                name="pgpubsub_queue_by_key",
            ),
        ),
        migrations.AddIndex(
            model_name="notification",
            index=models.Index(
                condition=models.Q(
                    ("failed_at__isnull", True),
                    ("handled_at__isnull", True),
                    ("available_at__gt", models.F("created_at")),
                ),
                fields=["channel", "available_at"],
                name="pgpubsub_queue_later",
            ),
        ),
        migrations.AddIndex(
            model_name="notification",
            index=models.Index(
                condition=models.Q(handled_at__isnull=False),
                fields=["handled_at"],
                name="pgpubsub_handled",
            ),
        ),
        migrations.RunPython(install_version_3, drop_version_3),
    ]
