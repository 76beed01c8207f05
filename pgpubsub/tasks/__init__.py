"""A production backend for Django's tasks framework on pgpubsub's queue and workers.

``TASKS = {"default": {"BACKEND": "pgpubsub.tasks.PgPubSubBackend"}}``: tasks are stored in
the database (in the caller's transaction), run by ``manage.py listen``, retried with backoff,
kept as dead letters when their attempts are exhausted. See the guide "Background tasks".

The backend is imported lazily: this package's models load without Django's tasks framework.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PgPubSubBackend", "task_options"]


def __getattr__(name: str) -> Any:
    if name == "PgPubSubBackend":
        from pgpubsub.tasks.backend import PgPubSubBackend

        return PgPubSubBackend
    if name == "task_options":
        from pgpubsub.tasks.options import task_options

        return task_options
    raise AttributeError(f"module 'pgpubsub.tasks' has no attribute {name!r}")
