"""Background tasks of the example project (Django's tasks framework on pgpubsub.tasks)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from django.core.mail import send_mail
from django.db import connection

from pgpubsub.tasks import task_options
from pgpubsub.tasks.compat import TaskContext
from testapp.models import Author

try:
    from django.tasks import task
except ImportError:  # Django < 6.0: the django-tasks backport
    from django_tasks import task  # type: ignore[no-redef,unused-ignore]


@task
def add(a: int, b: int) -> int:
    """Returns the sum: the smallest task."""
    return a + b


@task
def create_author(name: str) -> int:
    """Creates an Author (a database effect) and returns its id."""
    return int(Author.objects.create(name=name).pk)


@task
def record_run(label: str) -> str:
    """Creates an Author named ``label``: tests see when and in which order tasks ran."""
    Author.objects.create(name=label)
    return label


@task
async def async_add(a: int, b: int) -> int:
    """An async task."""
    await asyncio.sleep(0)
    return a + b


@task
@task_options(max_attempts=2)
def always_fails(message: str) -> None:
    """Raises every time: retried once, then FAILED."""
    raise ValueError(message)


@task(takes_context=True)
def fails_first(context: TaskContext, label: str) -> int:
    """Raises on the first attempt, succeeds on the second; returns the attempt number."""
    if context.attempt < 2:
        raise RuntimeError(f"first attempt of {label}")
    Author.objects.create(name=label)
    return int(context.attempt)


@task(takes_context=True)
def slow_once(context: TaskContext, marker_path: str, label: str) -> int:
    """On its first attempt writes its pid to ``marker_path`` and waits to be killed; on the
    next one creates an Author named ``label``."""
    if context.attempt == 1:
        with open(marker_path, "w") as marker:
            marker.write(str(os.getpid()))
        time.sleep(60)
    Author.objects.create(name=label)
    return int(context.attempt)


@task(takes_context=True)
@task_options(time_limit=1, atomic=True)
def stuck_once(context: TaskContext, label: str) -> int:
    """Creates an Author named after ``label`` and its attempt; the first attempt then hangs
    past its time limit (1 s), so its Author must be rolled back."""
    Author.objects.create(name=f"{label}, attempt {context.attempt}")
    if context.attempt == 1:
        time.sleep(60)
    return int(context.attempt)


@task
@task_options(time_limit=1, max_attempts=1)
def always_stuck() -> None:
    """Hangs past its time limit on its only attempt."""
    time.sleep(60)


@task
@task_options(atomic=True)
def atomic_then_fail(name: str) -> None:
    """Creates an Author, then raises: atomic, so the Author is rolled back."""
    Author.objects.create(name=name)
    raise RuntimeError("after the insert")


@task
def outside_then_fail(name: str) -> None:
    """Creates an Author, then raises: not atomic, so the Author stays."""
    Author.objects.create(name=name)
    raise RuntimeError("after the insert")


@task
def in_transaction() -> bool:
    """Whether the task runs inside a transaction."""
    return bool(connection.in_atomic_block)


@task
@task_options(atomic=True)
def atomic_in_transaction() -> bool:
    """Whether the atomic task runs inside a transaction."""
    return bool(connection.in_atomic_block)


@task
def returns_object() -> Any:
    """Returns something JSON cannot hold."""
    return object()


# Django's own example (docs/topics/tasks.txt), unchanged.
@task
def email_users(emails: list[str], subject: str, message: str) -> int:
    return send_mail(subject=subject, message=message, from_email=None, recipient_list=emails)
