"""What listen checks in its database first: pgpubsub migrated, the channels' triggers in.

A trigger listener whose trigger never reached the database (``makemigrations`` forgotten) is
never called, and an unmigrated database fails on the first query. ``listen`` and
``manage.py pgpubsub`` ask here first and say what to run instead; the database system check
(``manage.py check --database default``) reports the same.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import pgtrigger
from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.migrations.executor import MigrationExecutor
from pgtrigger import core as pgtrigger_core

from pgpubsub.channel import BaseChannel, TriggerChannel
from pgpubsub.exceptions import PgPubSubError
from pgpubsub.registry import ChannelRegistry

logger = logging.getLogger(__name__)

#: What pgtrigger reports for a trigger, in words; INSTALLED and UNALLOWED (the router keeps
#: the model out of this database) are no problem.
_PROBLEMS = {
    pgtrigger_core.UNINSTALLED: "not installed",
    pgtrigger_core.OUTDATED: "installed with an outdated definition",
}


class DatabaseNotReady(PgPubSubError):
    """The database lacks pgpubsub's tables or a trigger that a selected channel needs."""


def manage_py(command: str, using: str) -> str:
    """``python manage.py COMMAND``, with ``--database`` when ``using`` is not the default."""
    database = "" if using == DEFAULT_DB_ALIAS else f" --database {using}"
    return f"python manage.py {command}{database}"


@dataclass(frozen=True)
class TriggerProblem:
    """A trigger a channel's listener needs that the database does not have as registered."""

    channel: type[BaseChannel]
    model: type[models.Model]
    trigger: str
    problem: str
    using: str

    @property
    def fix(self) -> str:
        """The command that installs the trigger as the code defines it."""
        if self.problem == "disabled":
            uri = f"{self.model._meta.label}:{self.trigger}"
            return manage_py(f"pgtrigger enable {uri}", self.using)
        app = self.model._meta.app_label
        return f"python manage.py makemigrations {app} && {manage_py(f'migrate {app}', self.using)}"

    def __str__(self) -> str:
        return (
            f"Trigger {self.trigger!r} of model {self.model._meta.label} (channel "
            f"{self.channel.name()}) is {self.problem} in database {self.using!r}: its "
            f"listeners are never called. Run: {self.fix}"
        )


def unapplied_migrations(using: str) -> dict[str, list[str]]:
    """The migrations not applied to database ``using``, by app label, in order."""
    executor = MigrationExecutor(connections[using])
    unapplied: dict[str, list[str]] = {}
    for migration, _backwards in executor.migration_plan(executor.loader.graph.leaf_nodes()):
        unapplied.setdefault(migration.app_label, []).append(migration.name)
    return unapplied


def trigger_problems(
    channels: Iterable[type[BaseChannel]],
    registry: ChannelRegistry,
    using: str,
    skip_apps: Iterable[str] = (),
) -> list[TriggerProblem]:
    """The triggers the listeners of ``channels`` need that database ``using`` lacks.

    ``skip_apps``: apps whose triggers are not looked at (those with unapplied migrations,
    which ``migrate`` is about to install).
    """
    skipped = set(skip_apps)
    problems = []
    for channel in channels:
        if not issubclass(channel, TriggerChannel):
            continue
        model = channel.get_model()
        if model._meta.app_label in skipped:
            continue
        listeners = registry.listeners_for(channel)
        for name in sorted({name for listener in listeners for name in listener.triggers or ()}):
            trigger = _registered_trigger(model, name)
            if trigger is None:
                continue
            status, enabled = trigger.get_installation_status(model, database=using)  # type: ignore[arg-type]
            problem = _PROBLEMS.get(status)
            if problem is None and status == pgtrigger_core.INSTALLED and enabled is False:
                problem = "disabled"
            if problem is not None:
                problems.append(TriggerProblem(channel, model, name, problem, using))
    return problems


def _registered_trigger(model: type[models.Model], name: str) -> pgtrigger.Trigger | None:
    found = pgtrigger.registered(f"{model._meta.label}:{name}") if name else []
    return found[0][1] if found else None


def require_migrated(using: str) -> None:
    """Refuse a database where pgpubsub's migrations are not all applied.

    Raises:
        DatabaseNotReady: naming the migrations missing and the command that applies them.
    """
    pending = unapplied_migrations(using).get("pgpubsub")
    if pending:
        raise DatabaseNotReady(
            f"pgpubsub's tables are not ready in database {using!r} (migrations not applied: "
            f"{', '.join(pending)}): run {manage_py('migrate pgpubsub', using)}"
        )


def require_ready(
    channels: Iterable[type[BaseChannel]],
    registry: ChannelRegistry,
    using: str,
    *,
    allow_missing_triggers: bool = False,
) -> None:
    """Refuse to work on a database that is not migrated or lacks a needed trigger.

    Each trigger problem is logged as an error, naming the trigger, its model and the command
    that fixes it.

    Raises:
        DatabaseNotReady: pgpubsub's migrations are not all applied to ``using``, or (unless
            ``allow_missing_triggers``) a trigger of ``channels`` is missing, outdated or
            disabled there.
    """
    require_migrated(using)
    problems = trigger_problems(channels, registry, using)
    for problem in problems:
        logger.error(
            "%s",
            problem,
            extra={
                "action": "trigger_missing",
                "channel": problem.channel.name(),
                "trigger": problem.trigger,
            },
        )
    if problems and not allow_missing_triggers:
        raise DatabaseNotReady(
            f"{len(problems)} trigger(s) that the selected channels need are not in database "
            f"{using!r} (see the errors above). Install them, or start with "
            "--allow-missing-triggers to listen anyway."
        )
