# The schema django-pgpubsub 1.3.1 left after its migrations 0001-0006, so that a database
# it migrated skips this migration and continues with 0007. Never edit: add a migration.
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    replaces = [
        ("pgpubsub", "0001_initial"),
        ("pgpubsub", "0002_notification_created_at"),
        ("pgpubsub", "0003_notification_db_version"),
        ("pgpubsub", "0004_notification_pgpubsub_notification_set_db_version"),
        ("pgpubsub", "0005_alter_notification_options"),
        ("pgpubsub", "0006_payload_stores_proper_jsonb"),
    ]

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Notification",
            fields=[
                ("id", models.AutoField(primary_key=True, serialize=False)),
                ("channel", models.CharField(max_length=63)),
                ("payload", models.JSONField()),
                ("created_at", models.DateTimeField(null=True)),
                ("db_version", models.IntegerField(null=True)),
            ],
        ),
    ]
