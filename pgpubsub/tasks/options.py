"""The options of a tasks backend (``TASKS[alias]["OPTIONS"]``) and of a task
(:func:`task_options`), with the rules they are checked against."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pgpubsub.conf import PgPubSubSettings, Rule

_F = TypeVar("_F", bound=Callable[..., Any])

#: The attribute :func:`task_options` sets on a task's function.
_ATTRIBUTE = "_pgpubsub_task_options"


def _option(rule: Rule, doc: str, default: Any = None) -> Any:
    return field(default=default, metadata={"rule": rule, "doc": doc})


@dataclass(frozen=True)
class BackendOptions:
    """``OPTIONS`` of a ``pgpubsub.tasks.PgPubSubBackend``; each field is the option in upper
    case. Unset retry options take the ``PGPUBSUB_*`` setting of the same name."""

    database: str = _option(Rule(str), "Database alias the tasks are stored in.", "default")
    max_attempts: int | None = _option(
        Rule(int, minimum=1, optional=True),
        "Attempts after which a failing task is FAILED (default: PGPUBSUB_MAX_ATTEMPTS).",
    )
    retry_backoff: float | None = _option(
        Rule(float, minimum=0, optional=True),
        "Seconds before the first retry, doubled for each next one "
        "(default: PGPUBSUB_RETRY_BACKOFF).",
    )
    retry_backoff_max: float | None = _option(
        Rule(float, minimum=0, optional=True),
        "Longest wait between two retries (default: PGPUBSUB_RETRY_BACKOFF_MAX).",
    )
    atomic: bool = _option(
        Rule(bool),
        "Run each task inside a transaction that also records its result (exactly-once "
        "database effects); False: run it outside any transaction.",
        False,
    )
    result_retention: float | None = _option(
        Rule(float, minimum=0, optional=True),
        "Seconds a SUCCESSFUL task's result is kept (None: kept until deleted).",
        86400.0,
    )
    time_limit: float | None = _option(
        Rule(float, minimum=0, exclusive=True, optional=True),
        "Seconds a task may run; past it, its worker is replaced and the task charged a failed "
        "attempt (None: no limit; a task's task_options(time_limit=...) overrides it).",
        None,
    )
    failed_retention: float | None = _option(
        Rule(float, minimum=0, optional=True),
        "Seconds a FAILED task (a dead letter) is kept (None: until retried or deleted).",
        None,
    )

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> tuple[BackendOptions, list[str]]:
        """The options given, and a description of each problem (unknown name, bad value)."""
        known = {f.name.upper(): f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        problems = []
        for name, value in options.items():
            declared = known.get(name)
            if declared is None:
                problems.append(f"unknown option {name!r} (known: {', '.join(sorted(known))})")
                continue
            rule: Rule = declared.metadata["rule"]
            problem = rule.problem(value)
            if problem is not None:
                problems.append(f"{name} must be {rule.allowed()}, but {problem}")
                continue
            values[declared.name] = value
        return cls(**values), problems


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a task gets, and how long it waits before each retry."""

    max_attempts: int
    backoff: float
    backoff_max: float

    def delay(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed attempts: doubling, capped."""
        return float(min(self.backoff * (2 ** max(attempts - 1, 0)), self.backoff_max))


@dataclass(frozen=True)
class TaskOptions:
    """What :func:`task_options` set on one task (None: the backend's option)."""

    max_attempts: int | None = None
    atomic: bool | None = None
    time_limit: float | None = None


def task_options(
    *,
    max_attempts: int | None = None,
    atomic: bool | None = None,
    time_limit: float | None = None,
) -> Callable[[_F], _F]:
    """Per-task options of :class:`~pgpubsub.tasks.PgPubSubBackend`, put under ``@task``.

    Arguments:
        max_attempts: attempts before the task is FAILED (default: the backend's).
        atomic: True runs the task in the transaction that records its result (its database
            effects happen exactly once); False runs it outside any transaction.
        time_limit: seconds the task may run before its worker is replaced and the task
            charged a failed attempt (default: the backend's ``TIME_LIMIT``).

    Raises:
        TypeError: a value of the wrong type or range.

    Example::

        @task
        @task_options(atomic=True, max_attempts=10, time_limit=30)
        def credit(account_id: int, cents: int) -> None: ...
    """
    if max_attempts is not None and (
        isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1
    ):
        raise TypeError(
            f"task_options(max_attempts=...) must be an integer of at least 1, not {max_attempts!r}"
        )
    if atomic is not None and not isinstance(atomic, bool):
        raise TypeError(f"task_options(atomic=...) must be True or False, not {atomic!r}")
    if time_limit is not None and (
        isinstance(time_limit, bool) or not isinstance(time_limit, (int, float)) or time_limit <= 0
    ):
        raise TypeError(
            f"task_options(time_limit=...) must be a number of seconds greater than 0, not "
            f"{time_limit!r}"
        )

    def decorate(func: _F) -> _F:
        options = TaskOptions(max_attempts=max_attempts, atomic=atomic, time_limit=time_limit)
        setattr(func, _ATTRIBUTE, options)
        return func

    return decorate


def options_of(func: Callable[..., Any]) -> TaskOptions:
    """The :func:`task_options` of a task's function (all None when it has none)."""
    found = getattr(func, _ATTRIBUTE, None)
    return found if isinstance(found, TaskOptions) else TaskOptions()


def retry_policy(
    backend: BackendOptions, task: TaskOptions, settings: PgPubSubSettings
) -> RetryPolicy:
    """The retry policy of a task: its own options, else its backend's, else the settings."""
    return RetryPolicy(
        max_attempts=task.max_attempts or backend.max_attempts or settings.max_attempts,
        backoff=settings.retry_backoff if backend.retry_backoff is None else backend.retry_backoff,
        backoff_max=(
            settings.retry_backoff_max
            if backend.retry_backoff_max is None
            else backend.retry_backoff_max
        ),
    )
