"""Prometheus metrics of a worker process: ``listen --metrics-port``.

Optional: needs prometheus-client
(``pip install 'django-pgpubsub-reliable[prometheus]'``); nothing else in pgpubsub imports it.
Counters and histograms are fed by pgpubsub's signals (:mod:`pgpubsub.signals`) and, for the
tasks of ``pgpubsub.tasks``, by Django's task signals, in the worker process that handled the
message or ran the task; the backlog gauges are read from the database when the endpoint is
scraped (the queries of ``manage.py pgpubsub status``, without the count of kept task results).

Each worker process serves its own endpoint: with ``--processes N`` worker ``i`` listens on
``port + i``. Counters restart at zero with their worker, which Prometheus' ``rate()`` and
``increase()`` handle.

Example (a worker started by hand rather than by ``listen``)::

    from pgpubsub.metrics import serve_metrics

    serve_metrics(9100)  # http://<host>:9100/metrics
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections

from pgpubsub import DISTRIBUTION
from pgpubsub.channel import BaseChannel
from pgpubsub.signals import notification_failed, notification_processed
from pgpubsub.tasks.work import pgpubsub_backends

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client import start_http_server as _start_http_server
    from prometheus_client.core import GaugeMetricFamily, Metric
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImproperlyConfigured(
        f"pgpubsub's metrics need prometheus-client: pip install '{DISTRIBUTION}[prometheus]'"
    ) from exc

logger = logging.getLogger(__name__)

#: Callbacks: from a millisecond to a minute.
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: Time from due to claimed: instant when workers keep up, minutes or hours in a backlog.
_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


class WorkerMetrics:
    """The counters and histograms of this process, fed by pgpubsub's signals.

    Every attempt at a message ends in exactly one of the three counters: processed, retried
    (failed, another attempt is scheduled) or failed (failed for good: a stored message after
    its last attempt, or a fan-out message, which is never retried). Tasks of
    ``pgpubsub.tasks`` are counted when an attempt starts and when the task finishes for good
    (Django's ``task_started`` and ``task_finished``, by status ``successful`` or ``failed``).

    Args:
        registry: where the metrics are registered (default: prometheus-client's global one,
            which the HTTP server of :func:`serve_metrics` exposes).
        using: the database alias the backlog gauges are read from.
    """

    def __init__(
        self, registry: CollectorRegistry = REGISTRY, using: str = DEFAULT_DB_ALIAS
    ) -> None:
        labels = ["channel"]
        self.processed = Counter(
            "pgpubsub_messages_processed",
            "Messages whose callbacks ran and committed.",
            labels,
            registry=registry,
        )
        self.retried = Counter(
            "pgpubsub_messages_retried",
            "Failed attempts at stored messages that are scheduled for another attempt.",
            labels,
            registry=registry,
        )
        self.failed = Counter(
            "pgpubsub_messages_failed",
            "Messages that failed for good: stored ones after their last attempt "
            "(PGPUBSUB_MAX_ATTEMPTS), fan-out ones at once.",
            labels,
            registry=registry,
        )
        self.callback_duration = Histogram(
            "pgpubsub_callback_duration_seconds",
            "Seconds the callbacks of one message took, successful or not.",
            labels,
            registry=registry,
            buckets=_DURATION_BUCKETS,
        )
        self.claim_latency = Histogram(
            "pgpubsub_claim_latency_seconds",
            "Seconds between a stored message becoming due and its claim by a worker.",
            labels,
            registry=registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.tasks_started = Counter(
            "pgpubsub_tasks_started",
            "Attempts at tasks of pgpubsub.tasks backends that started (retries included).",
            ["backend", "queue"],
            registry=registry,
        )
        self.tasks_finished = Counter(
            "pgpubsub_tasks_finished",
            "Tasks of pgpubsub.tasks backends that finished for good, by status (successful, "
            "or failed after their last attempt).",
            ["backend", "queue", "status"],
            registry=registry,
        )
        #: Django's task signals connected to, with their sender (none without a backend).
        self._task_signals: list[tuple[Any, type]] = []
        registry.register(BacklogCollector(using))

    def connect(self) -> None:
        """Start counting: connect the receivers to pgpubsub's signals, and to Django's task
        signals when ``TASKS`` has a ``pgpubsub.tasks`` backend."""
        notification_processed.connect(self._on_processed, weak=False, dispatch_uid=id(self))
        notification_failed.connect(self._on_failed, weak=False, dispatch_uid=id(self))
        if not pgpubsub_backends():
            return  # Django's tasks framework may not even be installed
        from pgpubsub.tasks.backend import PgPubSubBackend
        from pgpubsub.tasks.compat import task_finished, task_started

        self._task_signals = [(task_started, PgPubSubBackend), (task_finished, PgPubSubBackend)]
        task_started.connect(
            self._on_task_started, sender=PgPubSubBackend, weak=False, dispatch_uid=id(self)
        )
        task_finished.connect(
            self._on_task_finished, sender=PgPubSubBackend, weak=False, dispatch_uid=id(self)
        )

    def disconnect(self) -> None:
        """Stop counting."""
        notification_processed.disconnect(dispatch_uid=id(self))
        notification_failed.disconnect(dispatch_uid=id(self))
        for signal, sender in self._task_signals:
            signal.disconnect(sender=sender, dispatch_uid=id(self))
        self._task_signals = []

    def _observe(self, channel: str, duration: float, claim_latency: float | None) -> None:
        self.callback_duration.labels(channel).observe(duration)
        if claim_latency is not None:
            self.claim_latency.labels(channel).observe(claim_latency)

    def _on_processed(
        self,
        sender: type[BaseChannel],
        duration: float,
        claim_latency: float | None,
        **kwargs: Any,
    ) -> None:
        channel = sender.name()
        self.processed.labels(channel).inc()
        self._observe(channel, duration, claim_latency)

    def _on_failed(
        self,
        sender: type[BaseChannel],
        duration: float,
        claim_latency: float | None,
        will_retry: bool,
        **kwargs: Any,
    ) -> None:
        channel = sender.name()
        (self.retried if will_retry else self.failed).labels(channel).inc()
        self._observe(channel, duration, claim_latency)

    def _on_task_started(self, sender: type, task_result: Any, **kwargs: Any) -> None:
        self.tasks_started.labels(task_result.backend, task_result.task.queue_name).inc()

    def _on_task_finished(self, sender: type, task_result: Any, **kwargs: Any) -> None:
        from pgpubsub.tasks.models import FINISHED_STATES  # a model module: apps must be ready

        state = FINISHED_STATES[str(task_result.status.value)]
        labels = (task_result.backend, task_result.task.queue_name, state.value)
        self.tasks_finished.labels(*labels).inc()


class BacklogCollector:
    """Gauges of the stored notifications, read from the database at each scrape.

    ``pgpubsub_backlog{channel, status}`` (status ``new``, ``retrying`` or ``failed``, see
    :class:`pgpubsub.models.State`),
    ``pgpubsub_backlog_oldest_seconds{channel}``, ``pgpubsub_workers_connected`` and
    ``pgpubsub_notify_queue_usage_ratio``: the numbers of ``manage.py pgpubsub status``, for
    the channels that store their messages; with a ``pgpubsub.tasks`` backend,
    ``pgpubsub_tasks{backend, queue, status}`` (status ``due``, ``scheduled``, ``running`` or
    ``failed``, see :class:`pgpubsub.tasks.models.TaskState`; kept results are not counted)
    and ``pgpubsub_tasks_oldest_due_seconds{backend, queue}``. Every worker reports the same
    values; aggregate them with ``max``. When the database cannot be
    read the gauges are left out of that scrape (and a warning is logged).
    """

    def __init__(self, using: str = DEFAULT_DB_ALIAS) -> None:
        self.using = using

    def describe(self) -> Iterable[Metric]:
        # Registering calls describe(): without it, collect() would query the database then.
        return self._families()

    def collect(self) -> Iterable[Metric]:
        from pgpubsub.status import collect_status  # needs the models: apps must be ready

        connection = connections[self.using]
        opened_here = connection.connection is None
        try:
            report = collect_status(self.using, task_results=False)
        except Exception:
            logger.warning("Reading the backlog for the metrics failed", exc_info=True)
            return []
        finally:
            # The HTTP server scrapes in a new thread each time: a connection opened for it
            # must not outlive the thread.
            if opened_here:
                connection.close()
        backlog, oldest, workers, usage, tasks, oldest_due = self._families()
        for status in report.channels:
            if status.lockable is False:
                continue  # fan-out messages are never stored
            for state, count in status.counts().items():
                backlog.add_metric([status.channel, state], count)
            if status.oldest_waiting_seconds is not None:
                oldest.add_metric([status.channel], status.oldest_waiting_seconds)
        for queue in report.tasks or []:
            for state, count in queue.counts().items():
                tasks.add_metric([queue.backend, queue.queue, state], count)
            if queue.oldest_due_seconds is not None:
                oldest_due.add_metric([queue.backend, queue.queue], queue.oldest_due_seconds)
        workers.add_metric([], report.workers_connected)
        usage.add_metric([], report.notify_queue_usage)
        return [backlog, oldest, workers, usage, tasks, oldest_due]

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "pgpubsub_backlog",
                "Stored notifications by channel and status (new, retrying, failed, handled).",
                labels=["channel", "status"],
            ),
            GaugeMetricFamily(
                "pgpubsub_backlog_oldest_seconds",
                "Age of the oldest stored notification of a channel that is not failed.",
                labels=["channel"],
            ),
            GaugeMetricFamily(
                "pgpubsub_workers_connected",
                "Worker processes connected to the database (with or without LISTEN).",
            ),
            GaugeMetricFamily(
                "pgpubsub_notify_queue_usage_ratio",
                "Fraction of PostgreSQL's NOTIFY queue in use (pg_notification_queue_usage()).",
            ),
            GaugeMetricFamily(
                "pgpubsub_tasks",
                "Stored tasks of pgpubsub.tasks backends by queue and status (due, scheduled, "
                "running, failed).",
                labels=["backend", "queue", "status"],
            ),
            GaugeMetricFamily(
                "pgpubsub_tasks_oldest_due_seconds",
                "Seconds the task due longest in a queue has waited since it became due.",
                labels=["backend", "queue"],
            ),
        ]


def serve_metrics(
    port: int, *, address: str = "0.0.0.0", using: str = DEFAULT_DB_ALIAS
) -> WorkerMetrics:
    """Count this process's messages and serve them on ``http://address:port/metrics``.

    The server runs in a daemon thread; it also exposes prometheus-client's process and
    Python metrics. Raises ``OSError`` when the port cannot be bound.
    """
    _start_http_server(port, addr=address)  # first: nothing is registered if it fails
    metrics = WorkerMetrics(using=using)
    metrics.connect()
    return metrics
