"""Acceptance tests run real ``manage.py listen`` processes against the test database.

Every test commits its writes (``transaction=True``) so that the processes see them, and the
``listen`` fixture stops every process it started before the database is flushed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from tests.support.processes import ListenProcess, listen_process

#: Short intervals, so that retries, polls and shutdowns take well under a second.
POLL_INTERVAL = 0.5
RETRY_BACKOFF = 0.1
MAX_ATTEMPTS = 3
SHUTDOWN_TIMEOUT = 5.0
FAST_ENV = {
    "PGPUBSUB_POLL_INTERVAL": str(POLL_INTERVAL),
    "PGPUBSUB_RETRY_BACKOFF": str(RETRY_BACKOFF),
    "PGPUBSUB_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    "PGPUBSUB_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
    "PGPUBSUB_RECONNECT_TIMEOUT": "30",
}

StartListen = Callable[..., ListenProcess]


def task_keys() -> list[str]:
    """The keys of the Task messages that listeners handled, sorted (repeats included)."""
    from testapp.models import ListenerEvent

    events = ListenerEvent.objects.filter(listener="task")
    return sorted(events.values_list("object_key", flat=True))


@pytest.fixture
def listen(transactional_db: None) -> Iterator[StartListen]:
    """Start ``manage.py listen *args`` (fast settings, plus ``env``); stopped at teardown."""
    with ExitStack() as stack:

        def start(*args: str, env: dict[str, str] | None = None) -> ListenProcess:
            return stack.enter_context(listen_process(*args, env={**FAST_ENV, **(env or {})}))

        yield start
