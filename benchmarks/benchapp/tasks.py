"""Tasks of the ``tasks`` scenario, for both backends compared (pgpubsub.tasks and
django-tasks-db): the same functions, enqueued on one backend or the other with ``using``."""

from __future__ import annotations

import time

try:
    from django.tasks import task
except ImportError:  # Django < 6.0: the django-tasks backport
    from django_tasks import task  # type: ignore[no-redef,unused-ignore]


@task
def noop() -> None:
    """Does nothing: the cost measured is the backend's."""


@task
def started_at() -> float:
    """Returns when it started (``time.time()``): the latency scenario compares it with the
    enqueuing transaction's commit time."""
    return time.time()
