"""The one place that imports Django's tasks framework: ``django.tasks`` (Django 6.0+), else
the ``django-tasks`` backport (Django 4.2 and 5.2: ``pip install
'django-pgpubsub-reliable[tasks]'``). Both have the same API; only one exception's name differs.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

try:
    from django.tasks import (
        DEFAULT_TASK_QUEUE_NAME,
        Task,
        TaskContext,
        TaskResult,
        TaskResultStatus,
        task_backends,
    )
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TaskError
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started

    #: Where Task and TaskResult come from (docs and error messages).
    FRAMEWORK = "django.tasks"
except ImportError:
    try:
        # What the backport's app does when it is in INSTALLED_APPS: register the system check
        # of the task backends, and reset them when a test overrides TASKS.
        import django_tasks.checks
        import django_tasks.signals  # noqa: F401
        from django_tasks import (  # type: ignore[no-redef,assignment,attr-defined,unused-ignore]
            DEFAULT_TASK_QUEUE_NAME,
            TaskContext,
            TaskResult,
            TaskResultStatus,
            task_backends,
        )
        from django_tasks.backends.base import (  # type: ignore[no-redef,assignment,unused-ignore]
            BaseTaskBackend,
        )
        from django_tasks.base import (  # type: ignore[no-redef,assignment,unused-ignore]
            Task,
            TaskError,
        )
        from django_tasks.exceptions import (  # type: ignore[no-redef,assignment,unused-ignore]
            InvalidTaskError as InvalidTask,
        )
        from django_tasks.exceptions import (  # type: ignore[no-redef,assignment,unused-ignore]
            TaskResultDoesNotExist,
        )
        from django_tasks.signals import (  # type: ignore[no-redef,assignment,unused-ignore]
            task_enqueued,
            task_finished,
            task_started,
        )

        FRAMEWORK = "django_tasks"
    except ImportError:
        raise ImproperlyConfigured(
            "pgpubsub.tasks needs Django's tasks framework: Django 6.0 or later has it "
            "(django.tasks); on Django 4.2 and 5.2 install the backport with "
            "pip install 'django-pgpubsub-reliable[tasks]' (package django-tasks)."
        ) from None

__all__ = [
    "DEFAULT_TASK_QUEUE_NAME",
    "FRAMEWORK",
    "BaseTaskBackend",
    "InvalidTask",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
