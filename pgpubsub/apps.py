from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import pre_migrate
from django.utils.module_loading import autodiscover_modules


class PgPubSubConfig(AppConfig):
    name = "pgpubsub"
    verbose_name = "PostgreSQL pub/sub"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from pgpubsub import (
            checks,  # noqa: F401  (registers the system checks)
            installation,
        )

        # Triggers call pgpubsub's SQL functions: have them before any migration runs.
        pre_migrate.connect(installation.install_functions_before_migrating, sender=self)
        installation.make_trigger_migrations_depend_on_pgpubsub()

        # Listener decorators register their triggers and callbacks when imported.
        autodiscover_modules("listeners")

        # Django registers the system check of task backends (which runs PgPubSubBackend.check)
        # when its tasks framework is imported: have it imported when a backend is pgpubsub's.
        if any(
            str(params.get("BACKEND", "")).startswith("pgpubsub.tasks")
            for params in (getattr(settings, "TASKS", None) or {}).values()
        ):
            import pgpubsub.tasks.compat  # noqa: F401
