"""Argument handling of ``manage.py listen`` and ``manage.py pgpubsub`` (nothing is started)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from pgpubsub.options import WorkerOptions


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    """``listen`` configures logging for the process it owns: undo that after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_listen_worker_with_several_processes_is_a_command_error() -> None:
    with pytest.raises(CommandError, match="--worker runs exactly one worker: remove --processes"):
        call_command("listen", "--worker", "--processes", "2")


def test_listen_with_zero_processes_is_a_command_error() -> None:
    with pytest.raises(CommandError, match="must be at least 1"):
        call_command("listen", "--processes", "0")


def test_listen_on_an_unknown_channel_path_names_the_path() -> None:
    with pytest.raises(CommandError, match=r"'testapp\.channels\.PostRead' not found"):
        call_command("listen", "--worker", "--channels", "testapp.channels.PostRead")


def test_listen_excluding_an_unknown_channel_path_names_the_path() -> None:
    with pytest.raises(CommandError, match=r"'shop\.channels\.Orders' not found"):
        call_command("listen", "--worker", "--exclude-channels", "shop.channels.Orders")


def test_listen_with_every_channel_excluded_says_there_is_nothing_to_listen_to() -> None:
    with pytest.raises(CommandError, match="No channel to listen to"):
        call_command(
            "listen",
            "--worker",
            "--no-tasks",  # the example project has tasks (testapp/tasks.py)
            "--exclude-channels",
            "pgpubsub.Channel",
            "pgpubsub.TriggerChannel",
        )


def test_listen_on_a_task_queue_no_backend_has_names_it_and_the_known_ones() -> None:
    with pytest.raises(CommandError, match=r"Task queue 'mails' .* Known: default:default, "):
        call_command("listen", "--worker", "--task-queues", "mails")


def test_listen_with_no_tasks_and_task_queues_is_refused() -> None:
    with pytest.raises(CommandError, match="remove --task-queues"):
        call_command("listen", "--worker", "--no-tasks", "--task-queues", "default")


def test_listen_metrics_port_without_prometheus_client_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed

    with pytest.raises(
        CommandError, match=r"needs prometheus-client.*django-pgpubsub-reliable\[prometheus\]"
    ):
        call_command("listen", "--worker", "--metrics-port", "9100")


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_listen_metrics_port_must_be_a_tcp_port(port: str) -> None:
    with pytest.raises(CommandError, match="metrics-port"):
        call_command("listen", "--worker", "--metrics-port", port)


def test_listen_metrics_ports_of_every_process_must_exist() -> None:
    with pytest.raises(CommandError, match="needs ports up to 65536"):
        call_command("listen", "--processes", "2", "--metrics-port", "65535")


def test_supervised_workers_get_consecutive_metrics_ports() -> None:
    options = WorkerOptions(metrics_port=9100)

    assert [options.for_worker(n).metrics_port for n in range(3)] == [9100, 9101, 9102]
    assert WorkerOptions().for_worker(2).metrics_port is None


def test_pgpubsub_command_needs_a_subcommand() -> None:
    with pytest.raises(CommandError, match="required: SUBCOMMAND"):
        call_command("pgpubsub")


@pytest.mark.parametrize("subcommand", ["failed", "retry"])
def test_pgpubsub_command_on_an_unknown_channel_path_names_the_path(subcommand: str) -> None:
    with pytest.raises(CommandError, match=r"'testapp\.channels\.Nope' not found"):
        call_command("pgpubsub", subcommand, "--channel", "testapp.channels.Nope")
