# A partial index on the dead-letter tasks: `pgpubsub status`, the metrics' gauges (at every
# scrape), `pgpubsub failed` and the admin count and list FAILED tasks, which otherwise means
# reading every kept result of pgpubsub_task. Dead letters are few, so the index is small.
# Never edit: add a migration.
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("pgpubsub", "0011_tasks"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="storedtask",
            index=models.Index(
                condition=models.Q(("status", "FAILED")),
                fields=["backend", "queue_name"],
                name="pgpubsub_task_failed",
            ),
        ),
    ]
