"""What makes a fresh ``migrate`` work whatever the order of apps and however it is run.

Two things, because triggers need both pgpubsub's SQL functions and its tables:

- ``pre_migrate`` installs the versioned SQL functions (:mod:`pgpubsub.functions`) before
  any migration or ``--run-syncdb`` runs, so a trigger never calls a missing function;
- ``makemigrations`` makes each migration that adds a pgpubsub trigger depend on pgpubsub's
  latest migration, so that ``migrate blog`` alone, or an app sorted before ``pgpubsub``
  with a data migration writing a tracked model, finds pgpubsub's tables in place.
"""

from __future__ import annotations

from typing import Any

from django.core.management.commands import makemigrations, migrate
from django.db import connections, router
from pgtrigger import migrations as pgtrigger_migrations

from pgpubsub import functions


def install_functions_before_migrating(using: str, **kwargs: Any) -> None:
    """``pre_migrate`` receiver: install pgpubsub's SQL functions on ``using`` if missing."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    if not router.allow_migrate(using, "pgpubsub", model_name="notification"):
        return
    functions.install_functions(connection)


class _TriggerMigrationsDependOnPgpubsub:
    """Autodetector mixin: an added pgpubsub trigger depends on pgpubsub's tables."""

    def add_operation(
        self,
        app_label: str,
        operation: Any,
        dependencies: list[Any] | None = None,
        beginning: bool = False,
    ) -> None:
        if app_label != "pgpubsub" and _adds_pgpubsub_trigger(operation):
            # A dependency on another app's model becomes one on that app's latest migration.
            dependencies = [
                *(dependencies or []),
                pgtrigger_migrations.OperationDependency(
                    "pgpubsub",
                    "notification",
                    None,
                    pgtrigger_migrations.OPERATION_DEPENDENCY_CREATE,
                ),
            ]
        super().add_operation(app_label, operation, dependencies, beginning)  # type: ignore[misc]


def _adds_pgpubsub_trigger(operation: Any) -> bool:
    if not isinstance(operation, pgtrigger_migrations.AddTrigger):
        return False
    return "pgpubsub_publish_v" in str(getattr(operation.trigger, "sql", ""))


def make_trigger_migrations_depend_on_pgpubsub() -> None:
    """Extend the autodetector of ``makemigrations`` and ``migrate`` (as django-pgtrigger does)."""
    current = getattr(makemigrations, "MigrationAutodetector")  # noqa: B009 (not exported)
    if issubclass(current, _TriggerMigrationsDependOnPgpubsub):
        return
    extended = type("MigrationAutodetector", (_TriggerMigrationsDependOnPgpubsub, current), {})
    # Django 5.2+ checks that both commands use the same autodetector.
    for command in (makemigrations, migrate):
        setattr(command, "MigrationAutodetector", extended)  # noqa: B010 (not exported)
        if hasattr(command.Command, "autodetector"):
            command.Command.autodetector = extended
