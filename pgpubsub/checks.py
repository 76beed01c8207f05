"""System checks for pgpubsub's configuration."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.checks import CheckMessage, Error, register
from django.utils.module_loading import import_string

from pgpubsub.conf import get_settings


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    settings = get_settings()
    if not apps.is_installed("pgtrigger"):
        errors.append(
            Error(
                "pgpubsub needs django-pgtrigger to install its triggers.",
                hint="Add 'pgtrigger' to INSTALLED_APPS.",
                id="pgpubsub.E001",
            )
        )
    if settings.listener_filter:
        try:
            provider = import_string(settings.listener_filter)
        except ImportError as exc:
            errors.append(
                Error(
                    f"PGPUBSUB_LISTENER_FILTER {settings.listener_filter!r} cannot be imported: "
                    f"{exc}",
                    hint="Give the dotted path of a class with a get_filter() method.",
                    id="pgpubsub.E002",
                )
            )
        else:
            if not hasattr(provider, "get_filter"):
                errors.append(
                    Error(
                        f"PGPUBSUB_LISTENER_FILTER {settings.listener_filter!r} has no "
                        "get_filter() method.",
                        hint="Implement pgpubsub.ListenerFilterProvider.",
                        id="pgpubsub.E003",
                    )
                )
    for name in ("poll_interval", "batch_size", "max_attempts", "shutdown_timeout"):
        if getattr(settings, name) <= 0:
            errors.append(
                Error(
                    f"PGPUBSUB_{name.upper()} must be greater than zero.",
                    id="pgpubsub.E004",
                )
            )
    return errors
