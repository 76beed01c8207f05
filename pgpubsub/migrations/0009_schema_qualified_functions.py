# Version 2 of the SQL functions that triggers and notify() call: every name qualified by its
# schema, search_path pinned, {} stored when no context is set (pgpubsub.functions). Version 1
# stays for the triggers that call it until their migrations are regenerated. Never edit:
# add a migration.
from django.db import migrations

from pgpubsub import functions


def install_version_2(apps, schema_editor):
    functions.install_functions(schema_editor.connection, versions=(2,))


def drop_version_2(apps, schema_editor):
    functions.drop_functions(schema_editor.connection, version=2)


class Migration(migrations.Migration):
    dependencies = [("pgpubsub", "0008_inflight_batches")]

    operations = [migrations.RunPython(install_version_2, drop_version_2)]
