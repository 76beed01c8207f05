"""``manage.py pgpubsub``: inspect and act on stored notifications.

Subcommands: ``failed`` lists dead letters, ``retry`` puts them back in the queue.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from pgpubsub.channel import locate_channel
from pgpubsub.exceptions import ChannelNotFound
from pgpubsub.management.commands._help import HelpFormatter
from pgpubsub.models import Notification
from pgpubsub.preflight import DatabaseNotReady, require_migrated
from pgpubsub.queue import retry_failed
from pgpubsub.registry import registry
from pgpubsub.status import StatusReport, collect_status

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
        status = subcommands.add_parser(
            "status",
            help="Per channel: new, retrying, failed and kept handled notifications, the oldest "
            "waiting one's age and the listeners; the workers connected; NOTIFY queue usage.",
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
            help="Seconds the oldest waiting notification may wait.",
        )
        status.add_argument(
            "--max-failed",
            type=int,
            default=None,
            metavar="N",
            help="Failed notifications allowed per channel.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"]
        channels = _pg_channel_names(options.get("channel") or [])
        try:
            require_migrated(using)
        except DatabaseNotReady as exc:
            raise CommandError(str(exc)) from None
        if options["subcommand"] == "failed":
            self._failed(using, channels, options["limit"])
        elif options["subcommand"] == "retry":
            self._retry(using, channels, options["ids"])
        else:
            self._status(using, options)

    def _failed(self, using: str, channels: list[str], limit: int) -> None:
        queryset = Notification.objects.using(using).failed().order_by("id")
        if channels:
            queryset = queryset.filter(channel__in=channels)
        total = queryset.count()
        if not total:
            self.stdout.write("No failed notifications.")
            return
        self.stdout.write(f"{'id':>10}  {'attempts':>8}  {'channel':<40}  last error")
        for row in queryset[:limit]:
            self.stdout.write(
                f"{row.pk:>10}  {row.attempts:>8}  {registry.label(row.channel):<40}  "
                f"{row.error_summary(_ERROR_PREVIEW)}"
            )
        if total > limit:
            self.stdout.write(f"... and {total - limit} more (use --limit).")

    def _retry(self, using: str, channels: list[str], ids: list[int]) -> None:
        count = retry_failed(using=using, channels=channels or None, ids=ids or None)
        self.stdout.write(f"Re-queued {count} failed notification(s).")

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
        self.stdout.write(f"Workers connected: {report.workers_connected}")
        self.stdout.write(f"NOTIFY queue usage: {report.notify_queue_usage:.1%}")
