"""``manage.py listen``: run the listeners of the project's channels."""

from __future__ import annotations

import argparse
import importlib.util
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from pgpubsub import DISTRIBUTION
from pgpubsub.conf import get_settings
from pgpubsub.exceptions import ChannelNotFound, ListenOptionsError, SettingsError
from pgpubsub.management.commands._help import HelpFormatter
from pgpubsub.options import LogOptions, WorkerOptions, select_channels
from pgpubsub.preflight import DatabaseNotReady, require_ready
from pgpubsub.registry import registry
from pgpubsub.shutdown import block_signals, restore_signals
from pgpubsub.supervisor import Supervisor, configure_logging
from pgpubsub.tasks.work import NoTaskWork, task_work
from pgpubsub.worker import create_worker

_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be a TCP port, 1 to 65535")
    return value


class Command(BaseCommand):
    help = (
        "Listen on pgpubsub channels and run their listeners. By default a supervising "
        "process runs the workers and restarts any that dies."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.formatter_class = HelpFormatter
        parser.add_argument(
            "--channels",
            nargs="+",
            default=[],
            metavar="DOTTED_PATH",
            help="Channels to listen to, as full dotted paths (blog.channels.PostReads), "
            "separated by spaces. Default: every channel that has listeners.",
        )
        parser.add_argument(
            "--exclude-channels",
            nargs="+",
            default=[],
            metavar="DOTTED_PATH",
            help="Channels not to listen to, so that a slow channel can get its own pool of "
            "processes.",
        )
        parser.add_argument(
            "--task-queues",
            nargs="+",
            default=None,
            metavar="QUEUE",
            help="Queues of Django's tasks framework to run tasks from (TASKS backends "
            "pgpubsub.tasks.PgPubSubBackend whose DATABASE is --database), as names or "
            "ALIAS:NAME, separated by spaces. Default: every queue of those backends. "
            "--channels does not change it.",
        )
        parser.add_argument(
            "--no-tasks",
            action="store_true",
            help="Run no tasks of Django's tasks framework, only the channels' listeners.",
        )
        parser.add_argument(
            "--processes",
            type=_positive_int,
            default=None,
            metavar="N",
            help="Number of worker processes, at least 1. Default: 1. On a channel with "
            "lock_notifications = True each message is handled by exactly one of them; on "
            "other channels every process handles every message.",
        )
        parser.add_argument(
            "--recover",
            action="store_true",
            help="At start, count the stored notifications of the selected lockable channels "
            "and log progress every PGPUBSUB_PROGRESS_INTERVAL seconds while processing them. "
            "With one worker and a terminal on stderr, a progress bar too. Without --recover, "
            "workers process the stored backlog at start anyway, without the counting and "
            "progress logs.",
        )
        parser.add_argument(
            "--loglevel",
            # Any case, as django-pgpubsub 1.3 accepted (deploy scripts say DEBUG).
            type=str.lower,
            choices=_LOG_LEVELS,
            default="info",
            help="Log level of the processes listen runs, in any case (DEBUG too, as "
            "django-pgpubsub 1.3 accepted). -v 2 (or more) selects debug when --loglevel is "
            "left at info. Default: info.",
        )
        parser.add_argument(
            "--logformat",
            default=None,
            metavar="FORMAT",
            help="Log format in Python logging's %%-style syntax, "
            "e.g. '%%(asctime)s %%(message)s'.",
        )
        parser.add_argument(
            "--worker",
            action="store_true",
            help="Run a single worker in this process, without a supervisor (for systemd, "
            "Kubernetes and the like). Cannot be combined with --processes greater than 1.",
        )
        parser.add_argument(
            "--no-restart-on-failure",
            action="store_true",
            help="Do not replace a worker process that exits or crashes.",
        )
        parser.add_argument(
            "--max-messages",
            type=_positive_int,
            default=None,
            metavar="N",
            help="Retire a worker once it has taken N messages (handled or failed; a task's "
            "attempt counts as one): it finishes its batch, exits 0 and is replaced by a "
            "fresh process. Against listeners that leak.",
        )
        parser.add_argument(
            "--max-memory",
            type=_positive_int,
            default=None,
            metavar="MB",
            help="Retire a worker once its resident memory reaches MB megabytes, checked after "
            "each batch: it finishes its batch, exits 0 and is replaced by a fresh process.",
        )
        parser.add_argument(
            "--worker-start-method",
            choices=("spawn", "fork"),
            default="spawn",
            help="How worker processes are started: spawn, or fork (faster, but not safe if the "
            "process has started threads). Default: spawn.",
        )
        parser.add_argument(
            "--poll-only",
            action="store_true",
            help="Do not LISTEN: process stored notifications every PGPUBSUB_POLL_INTERVAL "
            "seconds, through the normal Django connection (plus an autocommit connection for "
            "in-flight records). For connections through pgbouncer in transaction pooling "
            "mode. Only channels with lock_notifications = True can be served this way.",
        )
        parser.add_argument(
            "--allow-missing-triggers",
            action="store_true",
            help="Start even if a trigger that a selected channel's listeners need is not "
            "installed in the database. Each missing trigger is logged as an error either way; "
            "without this option listen refuses to start.",
        )
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            metavar="ALIAS",
            help="Database alias to listen on, claim stored notifications from and run the "
            "batch transactions in. Default: default.",
        )
        parser.add_argument(
            "--metrics-port",
            type=_port,
            default=None,
            metavar="PORT",
            help="Serve Prometheus metrics at http://ADDRESS:PORT/metrics from each worker "
            "process: worker i of --processes N on PORT + i. Needs prometheus-client "
            f"(pip install '{DISTRIBUTION}[prometheus]').",
        )
        parser.add_argument(
            "--metrics-address",
            default="0.0.0.0",
            metavar="ADDRESS",
            help="Address the metrics servers bind to. Default: 0.0.0.0, every interface.",
        )

        parser.add_argument(
            "--ready-file",
            default=None,
            metavar="PATH",
            help="Append one JSON object per line to PATH when the supervisor starts a worker "
            "and when a worker listens (after each connect and reconnect), for scripts and "
            "tests that wait until listen is ready.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # A stop signal from now on waits for the worker's or the supervisor's handler (which
        # lets it in) rather than killing the command halfway through its start (exit 143).
        mask = block_signals(() if options["worker"] else (signal.SIGHUP,))
        try:
            self._run(options)
        finally:
            restore_signals(mask)  # for callers that go on (call_command in a test)

    def _run(self, options: dict[str, Any]) -> None:
        try:
            settings = get_settings()
        except SettingsError as exc:  # reached with --skip-checks only
            raise CommandError(str(exc)) from None
        if options["worker"] and (options["processes"] or 1) > 1:
            raise CommandError("--worker runs exactly one worker: remove --processes.")
        _check_metrics_port(options["metrics_port"], options["processes"] or 1)
        log = LogOptions(level=options["loglevel"], format=options["logformat"])
        if options["verbosity"] > 1 and options["loglevel"] == "info":
            log = LogOptions(level="debug", format=options["logformat"])
        worker_options = WorkerOptions(
            channels=tuple(options["channels"]),
            exclude_channels=tuple(options["exclude_channels"]),
            recover=options["recover"],
            using=options["database"],
            poll_only=options["poll_only"],
            metrics_port=options["metrics_port"],
            metrics_address=options["metrics_address"],
            # One bar per terminal line: several workers would draw over each other.
            progress_bar=(options["processes"] or 1) == 1,
            ready_file=options["ready_file"],
            run_tasks=not options["no_tasks"],
            task_queues=None if options["task_queues"] is None else tuple(options["task_queues"]),
            max_messages=options["max_messages"],
            max_memory=options["max_memory"],
        )
        if options["no_tasks"] and options["task_queues"]:
            raise CommandError("--no-tasks runs no task queue: remove --task-queues.")
        try:
            tasks = (
                task_work(
                    using=worker_options.using,
                    queues=worker_options.task_queues,
                    settings=settings,
                    worker_id="listen",
                )
                if worker_options.run_tasks
                else NoTaskWork()
            )
            selected = select_channels(worker_options, registry, runs_tasks=tasks.serves_any())
        except (ChannelNotFound, ListenOptionsError) as exc:
            raise CommandError(str(exc)) from None
        configure_logging(log)
        try:
            require_ready(
                selected,
                registry,
                worker_options.using,
                allow_missing_triggers=options["allow_missing_triggers"],
            )
        except DatabaseNotReady as exc:
            raise CommandError(str(exc)) from None
        if options["worker"]:
            code = create_worker(worker_options, settings).run()
        else:
            code = Supervisor(
                worker_options,
                processes=options["processes"] or 1,
                start_method=options["worker_start_method"],
                restart_on_failure=not options["no_restart_on_failure"],
                log=log,
                settings=settings,
            ).run()
        if code:
            raise SystemExit(code)


def _check_metrics_port(port: int | None, processes: int) -> None:
    if port is None:
        return
    if importlib.util.find_spec("prometheus_client") is None:
        raise CommandError(
            "--metrics-port needs prometheus-client, which is not installed: "
            f"pip install '{DISTRIBUTION}[prometheus]' (or pip install prometheus-client)."
        )
    if port + processes - 1 > 65535:
        raise CommandError(
            f"--metrics-port {port} with {processes} processes needs ports up to "
            f"{port + processes - 1}: choose a port of at most {65536 - processes}."
        )
