from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class PgPubSubConfig(AppConfig):
    name = "pgpubsub"
    verbose_name = "PostgreSQL pub/sub"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from pgpubsub import checks  # noqa: F401  (registers the system checks)

        # Listener decorators register their triggers and callbacks when imported.
        autodiscover_modules("listeners")
