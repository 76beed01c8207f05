"""The django-pgtrigger triggers that publish a model's changes to a trigger channel.

The SQL a trigger freezes into the user's migration is one call into a versioned function
(``pgpubsub_publish_v2``, see :mod:`pgpubsub.functions`), so later releases can change how
messages are stored without asking users to regenerate their migrations. Every name in it
is qualified by its schema, so objects another role creates in a schema earlier in the
``search_path`` are never called instead.
"""

from __future__ import annotations

import re
from typing import Any

import pgtrigger
from django.db import models

from pgpubsub import functions
from pgpubsub.channel import TriggerChannel, validate_pg_identifier
from pgpubsub.exceptions import ChannelDefinitionError

#: Transition-table names used by statement-level triggers.
NEW_TABLE = "pgpubsub_new"
OLD_TABLE = "pgpubsub_old"

_SQL_LITERAL_SAFE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_SUFFIXES = {
    ("BEFORE", "INSERT"): "bi",
    ("BEFORE", "UPDATE"): "bu",
    ("BEFORE", "DELETE"): "bd",
    ("AFTER", "INSERT"): "ai",
    ("AFTER", "UPDATE"): "au",
    ("AFTER", "DELETE"): "ad",
}


_WHEN = {"BEFORE": pgtrigger.Before, "AFTER": pgtrigger.After}
_OPERATIONS = {"INSERT": pgtrigger.Insert, "UPDATE": pgtrigger.Update, "DELETE": pgtrigger.Delete}


def _identifier(name: str) -> str:
    """Quote ``name`` as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _row_json(model: type[models.Model], row: str, depth: int = 0) -> str:
    """SQL for the jsonb of ``row`` (a row of ``model``'s table) with its ancestors' columns.

    A multi-table child's own table lacks its inherited fields: they are read from each
    parent table by the link's value. Django writes parent rows first and deletes them
    last, so they hold the stored values when a child's trigger runs.
    """
    own = f"pg_catalog.to_jsonb({row})"
    parents = []
    for position, (parent, link) in enumerate(model._meta.parents.items()):
        if link is None:
            continue
        alias = f"pgpubsub_parent_{depth}_{position}"
        parent_pk = parent._meta.pk
        assert parent_pk is not None
        parents.append(
            f"COALESCE((SELECT {_row_json(parent, alias, depth + 1)} "
            f"FROM {_identifier(parent._meta.db_table)} AS {alias} "
            f"WHERE {alias}.{_identifier(parent_pk.column)} = {row}.{_identifier(str(link.column))}"
            "), '{}'::jsonb)"
        )
    # The child's own columns are merged last, so they win over an ancestor's.
    return " || ".join([*parents, own])


def _literal(value: str) -> str:
    """Quote a validated identifier-like value as an SQL string literal."""
    if not _SQL_LITERAL_SAFE.match(value):
        raise ChannelDefinitionError(f"{value!r} cannot be used in trigger SQL")
    return f"'{value}'"


class Notify(pgtrigger.Trigger):
    """Publishes each changed row of the model to ``channel``.

    Row-level by default. An AFTER INSERT or AFTER DELETE trigger may be statement-level:
    it then reads the whole statement's rows from a transition table, so a bulk insert is
    stored with one INSERT and rings the doorbell once.
    """

    def __init__(
        self,
        *,
        channel: type[TriggerChannel],
        name: str,
        when: pgtrigger.When,
        operation: pgtrigger.Operation,
        level: pgtrigger.Level = pgtrigger.Row,
        condition: pgtrigger.Condition | None = None,
    ) -> None:
        self.channel = channel
        referencing = None
        if level == pgtrigger.Statement:
            referencing = _transition_table(when, operation)
        super().__init__(
            name=name,
            when=when,
            operation=operation,
            level=level,
            condition=condition,
            referencing=referencing,
        )

    def get_func(self, model: type[models.Model]) -> str:  # type: ignore[override]
        channel = _literal(validate_pg_identifier(self.channel.listen_safe_name()))
        lockable = "true" if self.channel.lock_notifications else "false"
        app = _literal(model._meta.app_label)
        model_name = _literal(model.__name__)
        trigger = _literal(self.name or "")
        if self.level == pgtrigger.Statement:
            row = _row_json(model, "r")
            if self.referencing and self.referencing.new:
                old_rows, new_rows = "NULL", f"ARRAY(SELECT {row} FROM {NEW_TABLE} AS r)"
            else:
                old_rows, new_rows = f"ARRAY(SELECT {row} FROM {OLD_TABLE} AS r)", "NULL"
            returning = "RETURN NULL;"
        else:
            old_rows = f"ARRAY[{_row_json(model, 'OLD')}]"
            new_rows = f"ARRAY[{_row_json(model, 'NEW')}]"
            returning = "IF TG_OP = 'DELETE' THEN RETURN OLD; END IF; RETURN NEW;"
        arguments = f"{channel}, {trigger}, {lockable}, {app}, {model_name}, {old_rows}, {new_rows}"
        column = self.channel.ordering_column()
        if column is None:
            publish = functions.qualified(functions.PUBLISH)
        else:
            publish = functions.qualified(functions.PUBLISH_ORDERED)
            arguments += f", {_literal(column)}"
        return f"PERFORM {publish}({arguments}); {returning}"


def _transition_table(
    when: pgtrigger.When, operation: pgtrigger.Operation
) -> pgtrigger.Referencing:
    if str(when) == "AFTER" and str(operation) == "INSERT":
        return pgtrigger.Referencing(new=NEW_TABLE)
    if str(when) == "AFTER" and str(operation) == "DELETE":
        return pgtrigger.Referencing(old=OLD_TABLE)
    raise ChannelDefinitionError(
        "Only AFTER INSERT and AFTER DELETE pgpubsub triggers can be statement-level."
    )


def trigger_name(channel: type[TriggerChannel], when: str, operation: str) -> str:
    """The name of the built-in trigger of ``channel`` for one timing and operation."""
    return f"{channel.listen_safe_name()}_{_SUFFIXES[(when, operation)]}"


def builtin_trigger(channel: type[TriggerChannel], when: str, operation: str) -> Notify:
    """The trigger that the ``pre_*``/``post_*`` listener decorators install.

    AFTER INSERT and AFTER DELETE are statement-level (one stored batch per statement);
    the others are row-level, since BEFORE triggers and UPDATE need each row's OLD and NEW.
    """
    statement = when == "AFTER" and operation in ("INSERT", "DELETE")
    return Notify(
        channel=channel,
        name=trigger_name(channel, when, operation),
        when=_WHEN[when],
        operation=_OPERATIONS[operation],
        level=pgtrigger.Statement if statement else pgtrigger.Row,
    )


def notify_trigger_from(channel: type[TriggerChannel], trigger: Any) -> Notify:
    """Adapt a user-supplied pgtrigger trigger to publish to ``channel``.

    A :class:`Notify` is used as it is; any other ``pgtrigger.Trigger`` lends its name,
    timing, operation and condition to a row-level :class:`Notify`.
    """
    if isinstance(trigger, Notify):
        return trigger
    if not isinstance(trigger, pgtrigger.Trigger) or trigger.name is None:
        raise ChannelDefinitionError(
            f"trigger_listener({channel.name()}, trigger=...) needs a named pgtrigger.Trigger, "
            f"got {trigger!r}."
        )
    return Notify(
        channel=channel,
        name=trigger.name,
        when=trigger.when or pgtrigger.After,
        operation=trigger.operation or pgtrigger.Insert,
        condition=trigger.condition,
    )
