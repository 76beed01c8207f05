"""``manage.py pgpubsub``: inspect and act on stored notifications.

Subcommands: ``status`` counts them, ``failed`` lists dead letters, ``retry`` puts them back
in the queue, ``replay`` queues new copies of handled or dead-letter messages
(:mod:`pgpubsub.replay`).
"""

from __future__ import annotations

import argparse
import datetime
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS
from django.utils import dateparse, timezone

from pgpubsub.channel import locate_channel
from pgpubsub.exceptions import ChannelNotFound, ReplayError
from pgpubsub.management.commands._help import HelpFormatter
from pgpubsub.models import Notification
from pgpubsub.preflight import DatabaseNotReady, require_migrated
from pgpubsub.queue import retry_failed
from pgpubsub.registry import registry
from pgpubsub.replay import ReplayResult, replay
from pgpubsub.status import StatusReport, TaskQueueStatus, collect_status
from pgpubsub.tasks.models import StoredTask
from pgpubsub.tasks.store import retry_failed as retry_failed_tasks
from pgpubsub.tasks.work import pgpubsub_backends

_ERROR_PREVIEW = 120
_CHANNEL_HELP = (
    "A channel's dotted path, or its PostgreSQL name as stored (pgpubsub_7ee40); may be repeated."
)


def _pg_channel_names(paths: list[str]) -> list[str]:
    """Accept channels as dotted paths (or as the PostgreSQL names stored in the table)."""
    names = []
    for path in paths:
        if path.startswith("pgpubsub_") and "." not in path:
            names.append(path)
            continue
        try:
            names.append(locate_channel(path).listen_safe_name())
        except ChannelNotFound as exc:
            raise CommandError(str(exc)) from None
    return names


def _moment(text: str) -> datetime.datetime:
    """An ISO 8601 date or date and time (``--since``, ``--until``); without a time zone, in
    the project's ``TIME_ZONE``; a date alone means its midnight."""
    try:
        moment = dateparse.parse_datetime(text)
        if moment is None and (day := dateparse.parse_date(text)) is not None:
            moment = datetime.datetime.combine(day, datetime.time())
    except ValueError:
        moment = None
    if moment is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date or time: write e.g. 2026-12-01, "
            "2026-12-01T14:30 or 2026-12-01T14:30:00+00:00"
        )
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


class Command(BaseCommand):
    help = "Inspect and retry pgpubsub's stored notifications."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.formatter_class = HelpFormatter
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            metavar="ALIAS",
            help="Database alias (default: default). Comes before the subcommand.",
        )
        subcommands = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
        failed = subcommands.add_parser(
            "failed", help="List notifications that exhausted their attempts."
        )
        failed.add_argument(
            "--channel", action="append", default=[], metavar="DOTTED_PATH", help=_CHANNEL_HELP
        )
        failed.add_argument(
            "--limit", type=int, default=100, metavar="N", help="At most this many rows (100)."
        )
        retry = subcommands.add_parser(
            "retry", help="Put failed notifications back in the queue (all, or filtered)."
        )
        retry.add_argument(
            "--channel", action="append", default=[], metavar="DOTTED_PATH", help=_CHANNEL_HELP
        )
        retry.add_argument(
            "--id",
            action="append",
            type=int,
            default=[],
            dest="ids",
            metavar="ID",
            help="A failed notification's id; may be repeated.",
        )
        retry.add_argument(
            "--task",
            action="append",
            type=int,
            default=[],
            dest="task_ids",
            metavar="ID",
            help="A FAILED task's id (pgpubsub.tasks): retry it instead of notifications; may "
            "be repeated.",
        )
        retry.add_argument(
            "--tasks",
            action="store_true",
            help="Retry every FAILED task (pgpubsub.tasks) instead of notifications.",
        )
        replay_parser = subcommands.add_parser(
            "replay",
            help="Queue new copies of a channel's handled (kept) or dead-letter messages; each "
            "copy names its original (replay_of).",
        )
        replay_parser.add_argument(
            "--channel", required=True, metavar="DOTTED_PATH", help="The channel's dotted path."
        )
        replay_parser.add_argument(
            "--since",
            type=_moment,
            metavar="ISO",
            help="Only messages handled (or failed) at or after this ISO 8601 time.",
        )
        replay_parser.add_argument(
            "--until",
            type=_moment,
            metavar="ISO",
            help="Only messages handled (or failed) before this ISO 8601 time.",
        )
        replay_parser.add_argument(
            "--id",
            action="append",
            type=int,
            default=[],
            dest="ids",
            metavar="ID",
            help="Only this message; may be repeated.",
        )
        replay_parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be queued; queue nothing."
        )
        status = subcommands.add_parser(
            "status",
            help="Per channel: new, retrying, failed and kept handled notifications, the oldest "
            "waiting one's age and the listeners; per task queue (pgpubsub.tasks): due, "
            "scheduled, running, failed and successful tasks and the oldest due one's age; the "
            "workers connected; NOTIFY queue usage.",
        )
        status.add_argument("--json", action="store_true", help="Print JSON for machines.")
        status.add_argument(
            "--check",
            action="store_true",
            help="Exit with status 1 when a threshold below is exceeded (for health checks).",
        )
        status.add_argument(
            "--max-age",
            type=float,
            default=None,
            metavar="SECONDS",
            help="Seconds the oldest waiting notification, or due task, may wait.",
        )
        status.add_argument(
            "--max-failed",
            type=int,
            default=None,
            metavar="N",
            help="Failed notifications allowed per channel, failed tasks per task queue.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"]
        subcommand = options["subcommand"]
        channels = (
            _pg_channel_names(options["channel"]) if subcommand in ("failed", "retry") else []
        )
        try:
            require_migrated(using)
        except DatabaseNotReady as exc:
            raise CommandError(str(exc)) from None
        if subcommand == "failed":
            self._failed(using, channels, options["limit"])
        elif subcommand == "retry" and (options["tasks"] or options["task_ids"]):
            self._retry_tasks(using, options)
        elif subcommand == "retry":
            self._retry(using, channels, options["ids"])
        elif subcommand == "replay":
            self._replay(using, options)
        else:
            self._status(using, options)

    def _failed(self, using: str, channels: list[str], limit: int) -> None:
        queryset = Notification.objects.using(using).failed().order_by("id")
        if channels:
            queryset = queryset.filter(channel__in=channels)
        total = queryset.count()
        if not total:
            self.stdout.write("No failed notifications.")
        else:
            self._list_failed_notifications(queryset, total, limit)
        if not channels and pgpubsub_backends():
            self._failed_tasks(using, limit)

    def _list_failed_notifications(self, queryset: Any, total: int, limit: int) -> None:
        self.stdout.write(f"{'id':>10}  {'attempts':>8}  {'channel':<40}  last error")
        for row in queryset[:limit]:
            self.stdout.write(
                f"{row.pk:>10}  {row.attempts:>8}  {registry.label(row.channel):<40}  "
                f"{row.error_summary(_ERROR_PREVIEW)}"
            )
        if total > limit:
            self.stdout.write(f"... and {total - limit} more (use --limit).")

    def _failed_tasks(self, using: str, limit: int) -> None:
        """The FAILED tasks of pgpubsub.tasks, after the notifications (when there are any)."""
        queryset = StoredTask.objects.using(using).failed().order_by("id")
        total = queryset.count()
        if not total:
            return
        self.stdout.write("\nFailed tasks (retry with: pgpubsub retry --task ID, or --tasks):")
        self.stdout.write(f"{'id':>10}  {'attempts':>8}  {'task':<40}  last error")
        for row in queryset[:limit]:
            self.stdout.write(
                f"{row.pk:>10}  {row.attempts:>8}  {row.task_path:<40}  "
                f"{row.error_summary(_ERROR_PREVIEW)}"
            )
        if total > limit:
            self.stdout.write(f"... and {total - limit} more (use --limit).")

    def _retry_tasks(self, using: str, options: dict[str, Any]) -> None:
        if options["ids"] or options.get("channel"):
            raise CommandError("--task and --tasks retry tasks: remove --id and --channel.")
        count = retry_failed_tasks(using=using, ids=options["task_ids"] or None)
        self.stdout.write(f"Re-queued {count} failed task(s).")

    def _retry(self, using: str, channels: list[str], ids: list[int]) -> None:
        count = retry_failed(using=using, channels=channels or None, ids=ids or None)
        self.stdout.write(f"Re-queued {count} failed notification(s).")

    def _replay(self, using: str, options: dict[str, Any]) -> None:
        try:
            channel = locate_channel(options["channel"])
            result = replay(
                channel,
                since=options["since"],
                until=options["until"],
                ids=options["ids"],
                dry_run=options["dry_run"],
                using=using,
            )
        except (ChannelNotFound, ReplayError) as exc:
            raise CommandError(str(exc)) from None
        for problem in result.undecodable:
            self.stderr.write(str(problem))
        self.stdout.write(_replay_summary(channel.name(), result, dry_run=options["dry_run"]))
        if result.undecodable:
            raise CommandError(
                f"{len(result.undecodable)} of {result.matched} matching message(s) could not "
                "be replayed (see above): their payloads no longer fit the channel's fields."
            )

    def _status(self, using: str, options: dict[str, Any]) -> None:
        report = collect_status(using)
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:
            self._print_status(report)
        if options["check"]:
            problems = report.problems(max_age=options["max_age"], max_failed=options["max_failed"])
            for problem in problems:
                self.stderr.write(f"CHECK FAILED: {problem}")
            if problems:
                raise SystemExit(1)

    def _print_status(self, report: StatusReport) -> None:
        header = (
            f"{'channel':<45} {'new':>8} {'retrying':>8} {'failed':>7} {'handled':>8} {'oldest':>9}"
        )
        self.stdout.write(header)
        for status in report.channels:
            age = status.oldest_waiting_seconds
            oldest = f"{age:.0f} s" if age is not None else "-"
            self.stdout.write(
                f"{status.channel:<45} {status.new:>8} {status.retrying:>8} "
                f"{status.failed:>7} {status.handled:>8} {oldest:>9}"
            )
            for listener in status.listeners:
                self.stdout.write(f"    listener: {listener}")
        if report.tasks is not None:
            self._print_task_status(report.tasks)
        self.stdout.write(f"Workers connected: {report.workers_connected}")
        self.stdout.write(f"NOTIFY queue usage: {report.notify_queue_usage:.1%}")

    def _print_task_status(self, queues: list[TaskQueueStatus]) -> None:
        self.stdout.write(
            f"{'task queue':<30} {'due':>8} {'scheduled':>9} {'running':>8} {'failed':>7} "
            f"{'successful':>10} {'oldest due':>10}"
        )
        for queue in queues:
            age = queue.oldest_due_seconds
            oldest = f"{age:.0f} s" if age is not None else "-"
            successful = "-" if queue.successful is None else queue.successful
            self.stdout.write(
                f"{queue.label:<30} {queue.due:>8} {queue.scheduled:>9} {queue.running:>8} "
                f"{queue.failed:>7} {successful:>10} {oldest:>10}"
            )


def _replay_summary(channel: str, result: ReplayResult, *, dry_run: bool) -> str:
    matched = f"{result.matched} matching message{'s' if result.matched != 1 else ''} of {channel}"
    if dry_run:
        return f"Would queue {_copies(len(result.replayable))} of {matched} (dry run)."
    return f"Queued {_copies(len(result.queued))} of {matched}."


def _copies(count: int) -> str:
    return f"{count} {'copy' if count == 1 else 'copies'}"
