"""Typed access to pgpubsub's settings, and the one declaration of each of them.

Every ``PGPUBSUB_*`` setting is declared once, as a field of :class:`PgPubSubSettings`: its
name, type, default, allowed range and meaning. :func:`get_settings` returns the values in
force; :func:`setting_problems` and :func:`unknown_settings` are what the system checks
(``pgpubsub.checks``) report.

Values are not converted: ``PGPUBSUB_POLL_INTERVAL = "5"`` (a string, typically read from an
environment variable) is an error that says to write ``float(os.environ[...])``, as Django
itself expects typed settings. Integers are accepted where a number of seconds is expected;
a duration (``PGPUBSUB_KEEP_HANDLED``) is a ``timedelta``, or a number of seconds.

Example::

    PGPUBSUB_POLL_INTERVAL = float(os.environ.get("PUBSUB_POLL", "5"))
"""

from __future__ import annotations

import datetime
import difflib
import math
from dataclasses import dataclass, field, fields
from typing import Any

from django.conf import settings as django_settings

from pgpubsub.exceptions import SettingsError

PREFIX = "PGPUBSUB_"


_KIND_WORDS = {int: "an integer", datetime.timedelta: "a timedelta or a number of seconds"}


@dataclass(frozen=True)
class Rule:
    """The type and range a setting accepts.

    ``kind`` is ``bool``, ``int``, ``float`` (seconds: integers accepted too), ``timedelta``
    (a duration: a number of seconds accepted too) or ``str``; ``minimum`` is the smallest
    allowed number (of seconds, for a duration), excluded when ``exclusive``.
    """

    kind: type
    minimum: float | None = None
    exclusive: bool = False
    optional: bool = False

    def allowed(self) -> str:
        """The allowed values in words, e.g. ``"a number greater than 0"``."""
        if self.kind is bool:
            text = "True or False"
        elif self.kind is str:
            text = "a dotted path (a string)"
        else:
            text = _KIND_WORDS.get(self.kind, "a number")
            if self.minimum is not None:
                relation = "greater than" if self.exclusive else "of at least"
                text += f" {relation} {self.minimum:g}"
        return f"{text}, or None" if self.optional else text

    def type_name(self) -> str:
        """The type as the settings reference shows it, e.g. ``"float"``."""
        return f"{self.kind.__name__} or None" if self.optional else self.kind.__name__

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed, or None when it is."""
        if value is None:
            return None if self.optional else "it is None"
        if not self.accepts_type(value):
            return f"it is {value!r}, a {type(value).__name__}"
        if self.kind in (int, float, datetime.timedelta):
            number = _seconds(value)
            if not math.isfinite(number):
                return f"it is {value!r}"
            if self.minimum is not None and (
                number < self.minimum or (self.exclusive and number == self.minimum)
            ):
                return f"it is {value!r}"
        return None

    def accepts_type(self, value: Any) -> bool:
        """Whether ``value`` (not None) has the setting's type."""
        if self.kind is bool:
            return isinstance(value, bool)
        if isinstance(value, bool):  # True is an int to Python, not to a person
            return False
        if self.kind is float:
            return isinstance(value, (int, float))
        if self.kind is datetime.timedelta:
            return isinstance(value, (int, float, datetime.timedelta))
        return isinstance(value, self.kind)


def _seconds(value: float | datetime.timedelta) -> float:
    return value.total_seconds() if isinstance(value, datetime.timedelta) else float(value)


def _setting(default: Any, rule: Rule, doc: str) -> Any:
    return field(default=default, metadata={"rule": rule, "doc": doc})


_SECONDS_ABOVE_ZERO = Rule(float, minimum=0, exclusive=True)
_SECONDS = Rule(float, minimum=0)


@dataclass(frozen=True)
class PgPubSubSettings:
    """The settings pgpubsub reads, with their types, ranges and defaults.

    Each field is the setting ``PGPUBSUB_<FIELD NAME IN UPPER CASE>``; its metadata holds the
    :class:`Rule` it is checked against and a one-line description.
    """

    tx_bound_notification_context: bool = _setting(
        False,
        Rule(bool),
        "set_notification_context() sets the context for the current transaction only.",
    )
    pass_context_to_listeners: bool = _setting(
        False, Rule(bool), "Callbacks receive the payload context as a `context` argument."
    )
    listener_filter: str | None = _setting(
        None,
        Rule(str, optional=True),
        "Dotted path of a ListenerFilterProvider whose Q restricts the stored notifications taken.",
    )
    poll_interval: float = _setting(
        5.0, _SECONDS_ABOVE_ZERO, "Seconds between two scans of the stored notifications."
    )
    batch_size: int = _setting(
        100, Rule(int, minimum=1), "Stored notifications claimed and processed in one transaction."
    )
    max_attempts: int = _setting(
        5, Rule(int, minimum=1), "Attempts after which a failing stored notification is failed."
    )
    retry_backoff: float = _setting(
        2.0, _SECONDS, "Seconds before the first retry; each further retry waits twice as long."
    )
    retry_backoff_max: float = _setting(
        3600.0, _SECONDS, "Longest wait between two retries, in seconds."
    )
    shutdown_timeout: float = _setting(
        30.0, _SECONDS_ABOVE_ZERO, "Seconds a worker may take to finish its message after SIGTERM."
    )
    reconnect_timeout: float = _setting(
        600.0, _SECONDS_ABOVE_ZERO, "Seconds a worker keeps reconnecting before it exits."
    )
    broadcast_retention: float = _setting(
        3600.0, _SECONDS_ABOVE_ZERO, "Seconds an oversized fan-out payload is kept."
    )
    progress_interval: float = _setting(
        5.0, _SECONDS, "Seconds between two progress lines of `listen --recover` (0: every batch)."
    )
    message_time_limit: float | None = _setting(
        None,
        Rule(float, minimum=0, exclusive=True, optional=True),
        "Seconds the callbacks of one message may run before their worker process is "
        "replaced and, for a stored message, the message charged a failed attempt (None: no "
        "limit). A channel's `message_time_limit` overrides it.",
    )
    # (A field() with metadata like the others: ruff does not know timedelta is immutable.)
    keep_handled: datetime.timedelta | None = _setting(  # noqa: RUF009
        None,
        Rule(datetime.timedelta, minimum=0, exclusive=True, optional=True),
        "How long handled stored messages are kept (None: deleted when handled).",
    )


@dataclass(frozen=True)
class SettingProblem:
    """A setting whose value has the wrong type or lies outside its range."""

    setting: str
    reason: str
    allowed: str
    wrong_type: bool

    def __str__(self) -> str:
        return f"{self.setting} must be {self.allowed}, but {self.reason}."

    @property
    def hint(self) -> str:
        """What to do about it."""
        if self.wrong_type and self.allowed.startswith(("a number", "an integer")):
            kind = "int" if self.allowed.startswith("an integer") else "float"
            return (
                f"Settings are not converted: write a number, e.g. {self.setting} = "
                f"{kind}(os.environ['...']) when the value comes from the environment."
            )
        if self.wrong_type and self.allowed.startswith("a timedelta"):
            return (
                f"Write a duration, e.g. {self.setting} = datetime.timedelta(days=7), "
                "or None to delete handled messages at once."
            )
        return f"Set {self.setting} to {self.allowed}, or remove it to use the default."


def setting_names() -> list[str]:
    """Every setting pgpubsub reads, e.g. ``"PGPUBSUB_POLL_INTERVAL"``."""
    return [PREFIX + item.name.upper() for item in fields(PgPubSubSettings)]


def rule_of(name: str) -> Rule:
    """The :class:`Rule` of the setting ``name`` (``"PGPUBSUB_POLL_INTERVAL"``)."""
    for item in fields(PgPubSubSettings):
        if PREFIX + item.name.upper() == name:
            rule: Rule = item.metadata["rule"]
            return rule
    raise KeyError(name)


def _configured() -> dict[str, Any]:
    defaults = PgPubSubSettings()
    return {
        item.name: getattr(
            django_settings, PREFIX + item.name.upper(), getattr(defaults, item.name)
        )
        for item in fields(PgPubSubSettings)
    }


def setting_problems() -> list[SettingProblem]:
    """The configured settings whose type or value is not allowed, in declaration order."""
    return _problems(_configured())


def _problems(values: dict[str, Any]) -> list[SettingProblem]:
    problems = []
    for item in fields(PgPubSubSettings):
        rule: Rule = item.metadata["rule"]
        reason = rule.problem(values[item.name])
        if reason is not None:
            problems.append(
                SettingProblem(
                    setting=PREFIX + item.name.upper(),
                    reason=reason,
                    allowed=rule.allowed(),
                    # None where None is not allowed is a wrong type too.
                    wrong_type=values[item.name] is None
                    or not rule.accepts_type(values[item.name]),
                )
            )
    return problems


def unknown_settings() -> list[tuple[str, str | None]]:
    """``PGPUBSUB_*`` settings pgpubsub does not know, each with the closest known name."""
    known = {item.name: PREFIX + item.name.upper() for item in fields(PgPubSubSettings)}
    unknown = sorted(
        name
        for name in dir(django_settings)
        if name.startswith(PREFIX) and name not in known.values()
    )
    found = []
    for name in unknown:
        # Compared without the prefix that all share, which would make every name look close.
        match = difflib.get_close_matches(name[len(PREFIX) :].lower(), list(known), n=1)
        found.append((name, known[match[0]] if match else None))
    return found


def get_settings() -> PgPubSubSettings:
    """Return pgpubsub's settings as they are configured now.

    Read on every call (a handful of ``getattr``), so ``override_settings`` in tests works.

    Raises:
        SettingsError: a setting has the wrong type or lies outside its range (``manage.py
            check`` reports the same, as ``pgpubsub.E004``/``E005``).
    """
    values = _configured()
    problems = _problems(values)
    if problems:
        raise SettingsError(f"{problems[0]} {problems[0].hint}")
    for item in fields(PgPubSubSettings):
        kind, value = item.metadata["rule"].kind, values[item.name]
        if kind is float and value is not None:
            values[item.name] = float(value)
        elif kind is datetime.timedelta and isinstance(value, (int, float)):
            values[item.name] = datetime.timedelta(seconds=value)
    return PgPubSubSettings(**values)
