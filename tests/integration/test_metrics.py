"""``pgpubsub.metrics``: counters fed by the signals, backlog gauges read at collection."""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest
from django.test import override_settings
from django.utils import timezone
from prometheus_client import CollectorRegistry

import pgpubsub
from pgpubsub.metrics import WorkerMetrics
from pgpubsub.models import Notification
from pgpubsub.stored import StoredProcessor
from testapp.channels import PostReads, Task

pytestmark = pytest.mark.django_db

TASK = "testapp.channels.Task"


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    """A registry of its own with connected WorkerMetrics, disconnected after the test."""
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.connect()
    yield registry
    metrics.disconnect()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


@override_settings(PGPUBSUB_MAX_ATTEMPTS=2)
def test_each_attempt_ends_in_one_counter_and_is_timed(registry: CollectorRegistry) -> None:
    pgpubsub.notify(Task, key="good")
    pgpubsub.notify(Task, key="bad", fail=True)

    StoredProcessor().process_batch(Task)
    Notification.objects.update(available_at=timezone.now() - datetime.timedelta(seconds=1))
    StoredProcessor().process_batch(Task)

    assert sample(registry, "pgpubsub_messages_processed_total", channel=TASK) == 1
    assert sample(registry, "pgpubsub_messages_retried_total", channel=TASK) == 1
    assert sample(registry, "pgpubsub_messages_failed_total", channel=TASK) == 1
    assert sample(registry, "pgpubsub_callback_duration_seconds_count", channel=TASK) == 3
    assert sample(registry, "pgpubsub_claim_latency_seconds_count", channel=TASK) == 3


def test_backlog_gauges_count_stored_notifications_by_status(
    registry: CollectorRegistry,
) -> None:
    Notification.objects.all().delete()
    pgpubsub.notify(PostReads, post_id=1)
    pgpubsub.notify(PostReads, post_id=2)
    Notification.objects.filter(pk=Notification.objects.latest("id").pk).update(
        failed_at=timezone.now(), attempts=3
    )

    reads = "testapp.channels.PostReads"
    assert sample(registry, "pgpubsub_backlog", channel=reads, status="new") == 1
    assert sample(registry, "pgpubsub_backlog", channel=reads, status="failed") == 1
    assert sample(registry, "pgpubsub_backlog", channel=TASK, status="new") == 0
    oldest = sample(registry, "pgpubsub_backlog_oldest_seconds", channel=reads)
    assert oldest is not None and oldest >= 0
    assert sample(registry, "pgpubsub_backlog_oldest_seconds", channel=TASK) is None
    # Fan-out channels store nothing: no gauges for them.
    announcement = "testapp.channels.Announcement"
    assert sample(registry, "pgpubsub_backlog", channel=announcement, status="new") is None
    assert sample(registry, "pgpubsub_notify_queue_usage_ratio") is not None


def test_kept_handled_messages_are_a_status_of_their_own_and_never_the_oldest_waiting(
    registry: CollectorRegistry,
) -> None:
    Notification.objects.all().delete()
    Notification.objects.create(
        channel=Task.listen_safe_name(),
        payload={"kwargs": {"key": "kept"}},
        created_at=timezone.now() - datetime.timedelta(days=3),
        handled_at=timezone.now(),
        handled_by="a worker",
    )

    assert sample(registry, "pgpubsub_backlog", channel=TASK, status="handled") == 1
    assert sample(registry, "pgpubsub_backlog", channel=TASK, status="new") == 0
    assert sample(registry, "pgpubsub_backlog_oldest_seconds", channel=TASK) is None


def test_disconnected_metrics_stop_counting(registry: CollectorRegistry) -> None:
    other = CollectorRegistry()
    metrics = WorkerMetrics(other)
    metrics.connect()
    metrics.disconnect()
    pgpubsub.notify(Task, key="counted once")

    pgpubsub.process_stored_notifications([Task])

    assert sample(registry, "pgpubsub_messages_processed_total", channel=TASK) == 1
    assert sample(other, "pgpubsub_messages_processed_total", channel=TASK) is None
