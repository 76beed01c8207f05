# In-flight records (pgpubsub.inflight): charging an attempt to a message that kills its worker.

import django.utils.timezone
import pgpubsub.models
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('pgpubsub', '0007_reliable_delivery'),
    ]

    operations = [
        migrations.CreateModel(
            name='InFlightBatch',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('notification_ids', pgpubsub.models.BigIntegerArrayField()),
                ('running_id', models.BigIntegerField(blank=True, null=True)),
                ('worker', models.TextField()),
                ('started_at', models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                'verbose_name': 'in-flight batch',
                'verbose_name_plural': 'in-flight batches',
                'db_table': 'pgpubsub_inflight',
            },
        ),
    ]
