"""``listen --metrics-port``: each worker serves Prometheus metrics that follow its messages."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import pgpubsub
from testapp import tasks
from testapp.channels import Task
from tests.acceptance.conftest import MAX_ATTEMPTS, StartListen
from tests.support.processes import wait_for

TASK = "testapp.channels.Task"

#: Scraped samples by (name, sorted labels).
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> Samples | None:
    """The samples served on ``port``; None while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.django_db(transaction=True)
def test_worker_metrics_count_processed_retried_and_failed_messages(
    listen: StartListen,
) -> None:
    port = free_port()
    process = listen("--worker", "--channels", TASK, "--metrics-port", str(port))
    process.wait_for_workers(1)
    assert f"Serving metrics on http://0.0.0.0:{port}/metrics" in process.output()
    before = scrape(port)
    assert before is not None
    assert value(before, "pgpubsub_messages_processed_total", channel=TASK) == 0

    for key in ("a", "b", "c"):
        pgpubsub.notify(Task, key=key)
    pgpubsub.notify(Task, key="bad", fail=True)

    def dead_letter_counted() -> Samples | None:
        samples = scrape(port)
        if samples and value(samples, "pgpubsub_messages_failed_total", channel=TASK) == 1:
            return samples
        return None

    samples = wait_for(dead_letter_counted, message="the dead letter in the metrics")
    attempts = 3 + MAX_ATTEMPTS
    assert value(samples, "pgpubsub_messages_processed_total", channel=TASK) == 3
    assert value(samples, "pgpubsub_messages_retried_total", channel=TASK) == MAX_ATTEMPTS - 1
    assert value(samples, "pgpubsub_callback_duration_seconds_count", channel=TASK) == attempts
    assert value(samples, "pgpubsub_claim_latency_seconds_count", channel=TASK) == attempts
    assert value(samples, "pgpubsub_backlog", channel=TASK, status="failed") == 1
    assert value(samples, "pgpubsub_backlog", channel=TASK, status="new") == 0
    assert value(samples, "pgpubsub_workers_connected") >= 1
    assert ("pgpubsub_notify_queue_usage_ratio", ()) in samples


@pytest.mark.django_db(transaction=True)
def test_supervised_workers_serve_metrics_on_consecutive_ports(listen: StartListen) -> None:
    port = free_port()
    while not all(_port_is_free(p) for p in (port, port + 1)):
        port = free_port()
    process = listen("--processes", "2", "--channels", TASK, "--metrics-port", str(port))
    process.wait_for_workers(2)

    for key in range(10):
        pgpubsub.notify(Task, key=f"task {key}")

    def processed_by_both() -> bool:
        total = 0.0
        for worker_port in (port, port + 1):
            samples = scrape(worker_port)
            assert samples is not None, f"nothing serves metrics on port {worker_port}"
            total += value(samples, "pgpubsub_messages_processed_total", channel=TASK)
        return total == 10

    wait_for(processed_by_both, message="10 messages counted over both workers' metrics")


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.django_db(transaction=True)
def test_worker_exits_with_an_error_when_its_metrics_port_is_taken(listen: StartListen) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        process = listen(
            "--worker",
            "--channels",
            TASK,
            "--metrics-port",
            str(port),
            "--metrics-address",
            "127.0.0.1",
        )

        assert process.wait() == 1
    assert f"Cannot serve metrics on 127.0.0.1:{port}" in process.output()


@pytest.mark.django_db(transaction=True)
def test_worker_metrics_follow_the_tasks_it_runs(listen: StartListen) -> None:
    port = free_port()
    process = listen("--worker", "--channels", TASK, "--metrics-port", str(port))
    process.wait_for_workers(1)
    tasks.add.enqueue(1, 2)
    tasks.always_fails.using(queue_name="emails").enqueue("boom")  # two attempts, then FAILED

    def dead_task_counted() -> Samples | None:
        samples = scrape(port)
        finished = {"backend": "default", "queue": "emails", "status": "failed"}
        if samples and value(samples, "pgpubsub_tasks_finished_total", **finished) == 1:
            return samples
        return None

    samples = wait_for(dead_task_counted, message="the dead task in the metrics")
    default = {"backend": "default", "queue": "default"}
    emails = {"backend": "default", "queue": "emails"}
    assert value(samples, "pgpubsub_tasks_finished_total", **default, status="successful") == 1
    assert value(samples, "pgpubsub_tasks_started_total", **default) == 1
    assert value(samples, "pgpubsub_tasks_started_total", **emails) == 2
    assert value(samples, "pgpubsub_tasks", **emails, status="failed") == 1
    assert value(samples, "pgpubsub_tasks", **emails, status="due") == 0
    assert ("pgpubsub_tasks", tuple(sorted({**default, "status": "successful"}.items()))) not in (
        samples
    )
