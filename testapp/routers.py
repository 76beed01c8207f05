"""The database router of the example project: ledgers live in the "other" database.

pgpubsub's table and SQL functions are migrated into both databases, so that channels work
on each; django-pgtrigger installs a model's triggers where this router allows the model.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Model

OTHER_DATABASE = "other"
_OTHER_MODELS = {"ledger", "ledgerentry"}
#: Apps migrated into both databases.
_SHARED_APPS = {"pgpubsub", "pgtrigger"}


def _in_other(app_label: str, model_name: str | None) -> bool:
    return app_label == "testapp" and (model_name or "").lower() in _OTHER_MODELS


class LedgerRouter:
    """Sends the ledger models to "other" and everything else to "default"."""

    def db_for_read(self, model: type[Model], **hints: Any) -> str | None:
        return OTHER_DATABASE if _in_other(model._meta.app_label, model._meta.model_name) else None

    def db_for_write(self, model: type[Model], **hints: Any) -> str | None:
        return self.db_for_read(model, **hints)

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool:
        if app_label in _SHARED_APPS:
            return True
        return (db == OTHER_DATABASE) == _in_other(app_label, model_name)
