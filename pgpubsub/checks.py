"""System checks for pgpubsub's configuration.

Ids: ``E001`` pgtrigger missing; ``E002``/``E003`` ``PGPUBSUB_LISTENER_FILTER`` unusable;
``E004`` a setting outside its range; ``E005`` a setting of the wrong type; ``W001`` a
``PGPUBSUB_*`` setting pgpubsub does not know.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, register
from django.core.checks import Warning as CheckWarning
from django.utils.module_loading import import_string

from pgpubsub.conf import setting_problems, unknown_settings


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    if not apps.is_installed("pgtrigger"):
        errors.append(
            Error(
                "pgpubsub needs django-pgtrigger to install its triggers.",
                hint="Add 'pgtrigger' to INSTALLED_APPS.",
                id="pgpubsub.E001",
            )
        )
    problems = setting_problems()
    errors.extend(
        Error(
            str(problem),
            hint=problem.hint,
            id="pgpubsub.E005" if problem.wrong_type else "pgpubsub.E004",
        )
        for problem in problems
    )
    if not any(problem.setting == "PGPUBSUB_LISTENER_FILTER" for problem in problems):
        errors.extend(
            _check_listener_filter(getattr(django_settings, "PGPUBSUB_LISTENER_FILTER", None))
        )
    for name, closest in unknown_settings():
        errors.append(
            CheckWarning(
                f"{name} is not a pgpubsub setting: pgpubsub ignores it.",
                hint=f"Did you mean {closest}?"
                if closest
                else "See the settings reference (docs/reference/settings.md) for the names.",
                id="pgpubsub.W001",
            )
        )
    return errors


def _check_listener_filter(path: str | None) -> list[CheckMessage]:
    if not path:
        return []
    try:
        provider = import_string(path)
    except ImportError as exc:
        return [
            Error(
                f"PGPUBSUB_LISTENER_FILTER {path!r} cannot be imported: {exc}",
                hint="Give the dotted path of a class with a get_filter() method.",
                id="pgpubsub.E002",
            )
        ]
    if not hasattr(provider, "get_filter"):
        return [
            Error(
                f"PGPUBSUB_LISTENER_FILTER {path!r} has no get_filter() method.",
                hint="Implement pgpubsub.ListenerFilterProvider.",
                id="pgpubsub.E003",
            )
        ]
    return []
