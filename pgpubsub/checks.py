"""System checks for pgpubsub's configuration.

Ids: ``E001`` pgtrigger missing; ``E002``/``E003`` ``PGPUBSUB_LISTENER_FILTER`` unusable;
``E004`` a setting outside its range; ``E005`` a setting of the wrong type; ``E006`` a
database pgpubsub would be migrated into that is not PostgreSQL; ``E007`` a listener that
cannot take the arguments of its channel; ``W001`` a ``PGPUBSUB_*``
setting pgpubsub does not know. Database checks (``manage.py check --database ALIAS``):
``W002`` a trigger a listener needs is missing, outdated or disabled.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Tags, register
from django.core.checks import Warning as CheckWarning
from django.db import connections, router
from django.utils.module_loading import import_string

from pgpubsub.conf import get_settings, setting_problems, unknown_settings
from pgpubsub.models import Notification
from pgpubsub.preflight import trigger_problems, unapplied_migrations
from pgpubsub.registry import registry


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


def _pgpubsub_databases(aliases: Any = None) -> list[str]:
    """The aliases (of ``aliases``, or all) that pgpubsub's tables may be migrated into."""
    return [
        alias
        for alias in (aliases if aliases is not None else connections)
        if router.allow_migrate_model(alias, Notification)
    ]


@register()
def check_databases(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every database pgpubsub may be migrated into must be PostgreSQL."""
    return [
        Error(
            f"Database {alias!r} is {connections[alias].display_name}, and pgpubsub needs "
            "PostgreSQL: its migrations and triggers would fail there.",
            hint=f"Set DATABASES[{alias!r}]['ENGINE'] to 'django.db.backends.postgresql', or "
            "route pgpubsub's models away from it (a router's allow_migrate).",
            id="pgpubsub.E006",
        )
        for alias in _pgpubsub_databases()
        if connections[alias].vendor != "postgresql"
    ]


@register()
def check_listeners(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every registered listener can be called with the arguments its channel sends."""
    if setting_problems():
        return []  # E004/E005 first: PGPUBSUB_PASS_CONTEXT_TO_LISTENERS may be unusable
    pass_context = get_settings().pass_context_to_listeners
    messages: list[CheckMessage] = []
    for channel in registry.channels():
        expected = ", ".join(channel.callback_parameters(pass_context))
        for listener in registry.listeners_for(channel):
            problem = listener.signature_problem(pass_context)
            if problem is None:
                continue
            messages.append(
                Error(
                    f"Listener {listener.label} of channel {channel.name()} cannot be called "
                    f"with the channel's arguments ({expected}): {problem}.",
                    hint=f"Give {listener.callback.__name__}() the keyword parameters "
                    f"{expected} (or **kwargs); each call would fail and use up the message's "
                    "attempts.",
                    id="pgpubsub.E007",
                )
            )
    return messages


@register(Tags.database)
def check_triggers(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """The triggers that registered listeners need, compared with those in each database.

    Apps with unapplied migrations are left out: ``migrate`` (which runs database checks
    before it migrates) is about to install their triggers.
    """
    messages: list[CheckMessage] = []
    for alias in _pgpubsub_databases(databases or ()):
        if connections[alias].vendor != "postgresql":
            continue  # E006
        unapplied = unapplied_migrations(alias)
        for problem in trigger_problems(registry.channels(), registry, alias, skip_apps=unapplied):
            messages.append(
                CheckWarning(
                    f"Trigger {problem.trigger!r} of model {problem.model._meta.label} (channel "
                    f"{problem.channel.name()}) is {problem.problem} in database {alias!r}: its "
                    "listeners are never called.",
                    hint=f"Run: {problem.fix}",
                    id="pgpubsub.W002",
                )
            )
    return messages
