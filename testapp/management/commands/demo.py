"""``manage.py demo``: watch pgpubsub deliver exactly once, then recover a backlog.

The demo migrates the database, starts ``manage.py listen --processes 2`` on its two
channels, writes authors (each must get exactly one first post from ``create_first_post``)
and post reads (each counted exactly once by ``count_read``), and prints progress until the
effects match. It then stops the workers, writes more while nothing listens, and starts
``listen --recover --processes 2`` to drain the stored backlog.

Without ``DATABASE_URL``, on the server at 127.0.0.1:5432, it uses a database of its own,
``pgpubsub_demo`` (created if missing), rather than ``postgres``.
"""

from __future__ import annotations

import os
import re
import signal
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import OperationalError, connection, transaction
from django.db.models import Count, Q

import pgpubsub
from pgpubsub import testing
from pgpubsub.conf import get_settings
from pgpubsub.models import Notification, NotificationQuerySet
from testapp import embedded_db
from testapp.channels import AuthorTriggerChannel, PostReads
from testapp.models import Author, ListenerEvent, Post

MANAGE_PY = Path(__file__).resolve().parents[2] / "manage.py"
NAME_PREFIX = "demo-"
PROCESSES = 2
#: The database the demo uses on the local server when DATABASE_URL does not name one.
DEMO_DATABASE = "pgpubsub_demo"
READY_TIMEOUT = 30.0
SETTLE_TIMEOUT = 20.0
TICK = 0.25
# Worker log lines worth showing as they happen. ("Recovering N ..." is left out: each worker
# counts the backlog when it starts, so two workers print two overlapping counts.)
SHOWN_LOG_LINES = (
    "Started worker",
    "Recovery finished",
    "received",
    "stopped",
    "ERROR",
    "WARNING",
)
#: The channels the demo is about; its ``listen`` serves these only.
DEMO_CHANNEL_CLASSES = (AuthorTriggerChannel, PostReads)


class DemoFailed(Exception):
    """The demo could not go on; the message says why."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class ListenProcess(testing.ListenProcess):
    """A ``manage.py listen`` subprocess (:class:`pgpubsub.testing.ListenProcess`), and the
    part of its log already shown."""

    _shown: int = 0
    _partial: str = ""

    @classmethod
    def start_demo(cls, *args: str) -> ListenProcess:
        return cls.start(
            MANAGE_PY,
            *args,
            "--logformat",
            "%(levelname)s %(processName)s: %(message)s",
            log_dir=tempfile.gettempdir(),
            # Ctrl-C reaches the demo only; the demo then stops listen with one SIGTERM.
            new_session=True,
        )

    def new_lines(self) -> list[str]:
        """Complete log lines written since the previous call."""
        text = self.output()
        chunk, self._shown = text[self._shown :], len(text)
        *lines, self._partial = (self._partial + chunk).split("\n")
        return lines

    def wait_ready_echoing(self, workers: int, timeout: float, echo: Callable[[str], None]) -> None:
        """Wait until ``workers`` workers listen (their readiness events); echo interesting
        log lines meanwhile."""
        try:
            self.wait_ready(workers, timeout, on_tick=lambda: self.echo_new_lines(echo))
        except testing.ListenFailed as exc:
            raise DemoFailed(f"`listen {' '.join(self.args)}`: {exc}\n{self.output()}") from None
        self.echo_new_lines(echo)

    def echo_new_lines(self, echo: Callable[[str], None]) -> None:
        for line in self.new_lines():
            if any(marker in line for marker in SHOWN_LOG_LINES):
                echo(f"  listen | {line}")

    def remove_log(self) -> None:
        with suppress(OSError):
            self.log_path.unlink()
        with suppress(OSError):
            self.ready_path.unlink()


@dataclass
class Expectations:
    """What the listeners must have done, exactly once."""

    authors: int = 0
    reads: dict[int, int] = field(default_factory=dict)
    #: Messages written so far: one per author, one per read.
    messages: int = 0


@dataclass(frozen=True)
class Snapshot:
    """The listeners' effects as the database shows them now."""

    authors: int
    with_one_post: int
    with_extra_posts: int
    reads_counted: int
    reads_expected: int
    reads_wrong_posts: int
    backlog: int
    failed: int

    @property
    def settled(self) -> bool:
        return self.backlog == 0 and (
            self.with_one_post + self.with_extra_posts == self.authors
            and self.reads_counted >= self.reads_expected
        )

    @property
    def exactly_once(self) -> bool:
        return (
            self.with_one_post == self.authors
            and self.with_extra_posts == 0
            and self.reads_wrong_posts == 0
            and self.reads_counted == self.reads_expected
            and self.backlog == 0
            and self.failed == 0
        )

    def progress(self) -> str:
        return (
            f"authors written {self.authors:>4} | first posts {self.with_one_post:>4}/"
            f"{self.authors:<4} | reads counted {self.reads_counted:>3}/{self.reads_expected:<3} "
            f"| stored backlog {self.backlog:>4}"
        )


DEMO_CHANNELS = tuple(channel.listen_safe_name() for channel in DEMO_CHANNEL_CLASSES)


def _database_name(text: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", text):
        raise ValueError(text)
    return text


def _stored() -> NotificationQuerySet:
    return Notification.objects.filter(channel__in=DEMO_CHANNELS)


def snapshot(expected: Expectations) -> Snapshot:
    authors = Author.objects.filter(name__startswith=NAME_PREFIX).annotate(posts_n=Count("posts"))
    counts = authors.aggregate(
        total=Count("pk"),
        one=Count("pk", filter=Q(posts_n=1)),
        extra=Count("pk", filter=Q(posts_n__gt=1)),
    )
    read_counts = dict(Post.objects.filter(pk__in=expected.reads).values_list("pk", "read_count"))
    return Snapshot(
        authors=counts["total"],
        with_one_post=counts["one"],
        with_extra_posts=counts["extra"],
        reads_counted=sum(read_counts.values()),
        reads_expected=sum(expected.reads.values()),
        reads_wrong_posts=sum(1 for pk, n in expected.reads.items() if read_counts.get(pk, 0) != n),
        backlog=_stored().pending().count(),
        failed=_stored().failed().count(),
    )


class Command(BaseCommand):
    help = (
        "Run the pgpubsub demo: two competing workers, exactly-once effects, and recovery "
        "of messages written while no worker runs. Uses DATABASE_URL."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--database-name",
            type=_database_name,
            default=DEMO_DATABASE,
            metavar="NAME",
            help="Database the demo creates (if missing) and uses on the server at "
            f"127.0.0.1:5432 when DATABASE_URL is not set (default: {DEMO_DATABASE}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # SIGTERM unwinds like Ctrl-C, so the finally block below still stops `listen`.
        signal.signal(signal.SIGTERM, _interrupt)
        self.started = time.monotonic()
        self.expected = Expectations()
        self.use_own_database(options["database_name"])
        self.check_database()
        self.say(f"Migrating database {connection.settings_dict['NAME']!r}...")
        call_command("migrate", verbosity=0)
        self.clear_old_demo_data()
        listen: ListenProcess | None = None
        verdicts: list[bool] = []
        try:
            self.heading("1. Two workers compete for the same messages")
            listen = self.start_listen("--processes", str(PROCESSES))
            verdicts.append(self.phase_live())

            self.heading("2. Messages written while no worker runs are stored, then recovered")
            self.stop_listen(listen, self.expected.messages)
            first_phase = self.expected.messages
            self.write_while_nobody_listens()
            listen = self.start_listen("--recover", "--processes", str(PROCESSES))
            verdicts.append(self.verify())
            self.stop_listen(listen, self.expected.messages - first_phase)
        except DemoFailed as exc:
            raise CommandError(str(exc)) from None
        except KeyboardInterrupt:
            raise CommandError("Interrupted: stopped the listen processes.") from None
        finally:
            if listen is not None:
                if listen.process.poll() is None:
                    listen.stop(self.stop_timeout())
                listen.remove_log()
        self.heading("Result")
        if not all(verdicts):
            raise CommandError("exactly once: no (see the phases above)")
        self.say("exactly once: yes - in both phases every message took effect exactly once.")

    # --- steps -----------------------------------------------------------------------

    def use_own_database(self, name: str) -> None:
        """On the local server's default database, move to database ``name`` (created if
        missing), so that the demo's tables stay out of ``postgres``.

        DATABASE_URL, when set (by the user, or for an embedded server), is used as it is.
        """
        if os.environ.get("DATABASE_URL"):
            return
        db = connection.settings_dict
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
                if cursor.fetchone() is None:
                    cursor.execute(f"CREATE DATABASE {connection.ops.quote_name(name)}")
                    self.say(f"Created database {name!r} for the demo.")
        except OperationalError:
            return  # check_database() explains
        connection.close()
        # With Django's connection pool (DATABASE_POOL=1) a closed connection goes back to a
        # pool of the old database: drop the pool so the next one connects to ``name``.
        if getattr(connection, "pool", None) is not None:
            connection.close_pool()
        db["NAME"] = name
        # The `listen` subprocesses read it (testapp/settings.py).
        os.environ["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{name}"

    def check_database(self) -> None:
        db = connection.settings_dict
        try:
            connection.ensure_connection()
        except OperationalError as exc:
            reason = (str(exc).strip().splitlines() or ["no reason given"])[0]
            raise CommandError(
                f"Cannot connect to PostgreSQL database {db['NAME']!r} at "
                f"{db['HOST']}:{db['PORT']} as {db['USER']!r}: {reason}\n"
                "The demo connects to DATABASE_URL if it is set, else to "
                "postgres://postgres@127.0.0.1:5432/postgres if a server answers there, else "
                "to an embedded PostgreSQL it starts itself (testapp/embedded_db.py).\n"
                "Point DATABASE_URL at a running server and existing database:\n"
                "  DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/DBNAME make demo\n"
                "or unset DATABASE_URL and free 127.0.0.1:5432 to use the embedded server.\n"
                "If the server runs but the database does not exist, create it:\n"
                f"  createdb -h {db['HOST']} -p {db['PORT']} -U {db['USER']} {db['NAME']}"
            ) from None
        server = embedded_db.embedded_server()
        self.say(
            f"pgpubsub {pgpubsub.__version__} demo on database {db['NAME']!r} at "
            f"{db['HOST']}:{db['PORT']}"
            + (
                f" (an embedded PostgreSQL {server.major_version}, removed when the demo ends)"
                if server
                else ""
            )
        )

    def clear_old_demo_data(self) -> None:
        authors = Author.objects.filter(name__startswith=NAME_PREFIX)
        post_keys = [str(pk) for pk in Post.objects.filter(author__in=authors).values_list("pk")]
        ListenerEvent.objects.filter(listener="log_new_post", object_key__in=post_keys).delete()
        _, deleted = authors.delete()
        stored, _ = _stored().delete()
        self.say(
            f"Cleared earlier demo data ({deleted.get('testapp.Author', 0)} authors and their "
            f"posts, {stored} stored notifications)."
        )

    def start_listen(self, *args: str) -> ListenProcess:
        channels = [channel.name() for channel in DEMO_CHANNEL_CLASSES]
        self.say(
            f"Starting `manage.py listen {' '.join(args)}` on the demo's two channels "
            f"({', '.join(channel.__name__ for channel in DEMO_CHANNEL_CLASSES)}) ..."
        )
        listen = ListenProcess.start_demo(*args, "--channels", *channels)
        try:
            listen.wait_ready_echoing(PROCESSES, READY_TIMEOUT, self.say)
        except BaseException:
            listen.stop(self.stop_timeout())
            listen.remove_log()
            raise
        self.say(f"{PROCESSES} workers are listening.")
        return listen

    def stop_listen(self, listen: ListenProcess, messages: int) -> None:
        self.say(
            f"Stopping the workers (SIGTERM to the supervisor). Each one's 'processed' count "
            f"is the messages it handled: together {messages}, the messages of this phase, "
            "since each was handled by exactly one of them."
        )
        code = listen.stop(self.stop_timeout())
        listen.echo_new_lines(self.say)
        listen.remove_log()
        self.say(f"listen exited with code {code}; no worker is running.")

    def phase_live(self) -> bool:
        singles = 20
        bulk = 300
        for number in range(singles):
            Author(name=f"{NAME_PREFIX}single-{number:03}").save()
        Author.objects.bulk_create(
            Author(name=f"{NAME_PREFIX}bulk-{number:03}") for number in range(bulk)
        )
        self.expected.authors += singles + bulk
        self.expected.messages += singles + bulk
        self.say(
            f"Wrote {singles} authors with .save() and {bulk} with one bulk_create; "
            "each must get exactly one first post."
        )
        # Reads need posts: wait for the first few, then read them.
        self.watch(lambda s: s.with_one_post + s.with_extra_posts >= 10)
        posts = list(
            Post.objects.filter(author__name__startswith=NAME_PREFIX)
            .order_by("pk")
            .values_list("pk", flat=True)[:10]
        )
        self.send_reads(posts, per_post=lambda i: i + 1)
        return self.verify()

    def write_while_nobody_listens(self) -> None:
        singles = 5
        bulk = 200
        for number in range(singles):
            Author(name=f"{NAME_PREFIX}late-single-{number:03}").save()
        Author.objects.bulk_create(
            Author(name=f"{NAME_PREFIX}late-bulk-{number:03}") for number in range(bulk)
        )
        self.expected.authors += singles + bulk
        self.expected.messages += singles + bulk
        self.say(f"Wrote {singles} authors with .save() and {bulk} with one bulk_create.")
        self.send_reads(list(self.expected.reads)[:5], per_post=lambda i: 3)
        by_channel = dict(
            _stored().values_list("channel").annotate(n=Count("pk")).values_list("channel", "n")
        )
        self.say(
            f"Stored, waiting for a worker: "
            f"{by_channel.get(AuthorTriggerChannel.listen_safe_name(), 0)} notifications of "
            f"AuthorTriggerChannel, {by_channel.get(PostReads.listen_safe_name(), 0)} of "
            "PostReads."
        )

    def send_reads(self, post_ids: list[int], per_post: Callable[[int], int]) -> None:
        """Read each post ``per_post(i)`` times: half one by one, half in one transaction."""
        total = 0
        with transaction.atomic():
            for index, post_id in enumerate(post_ids):
                reads = per_post(index)
                for _ in range(reads // 2):
                    pgpubsub.notify(PostReads, post_id=post_id)
                self.expected.reads[post_id] = self.expected.reads.get(post_id, 0) + reads
                total += reads
        for index, post_id in enumerate(post_ids):
            reads = per_post(index)
            for _ in range(reads - reads // 2):
                pgpubsub.notify(PostReads, post_id=post_id)
        self.expected.messages += total
        self.say(f"Sent {total} PostReads notifications for {len(post_ids)} posts.")

    # --- watching --------------------------------------------------------------------

    def watch(self, done: Callable[[Snapshot], bool]) -> Snapshot:
        """Print progress whenever it changes, until ``done`` or the deadline."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        last = ""
        while True:
            current = snapshot(self.expected)
            line = current.progress()
            if line != last:
                self.say(line)
                last = line
            if done(current):
                return current
            if time.monotonic() > deadline:
                self.say(f"Still not settled after {SETTLE_TIMEOUT:.0f} s.")
                return current
            time.sleep(TICK)

    def verify(self) -> bool:
        result = self.watch(lambda s: s.settled)
        ok = result.exactly_once
        self.say(
            f"Authors with exactly one first post: {result.with_one_post}/{result.authors}; "
            f"with more than one: {result.with_extra_posts}; read counters matching: "
            f"{len(self.expected.reads) - result.reads_wrong_posts}/{len(self.expected.reads)}; "
            f"failed notifications: {result.failed}."
        )
        self.say(f"exactly once: {'yes' if ok else 'no'}", style=self.style.SUCCESS if ok else None)
        return ok

    # --- output ----------------------------------------------------------------------

    def stop_timeout(self) -> float:
        # Workers get PGPUBSUB_SHUTDOWN_TIMEOUT to finish; the supervisor then kills them.
        return get_settings().shutdown_timeout + 10.0

    def heading(self, text: str) -> None:
        self.stdout.write("")
        self.stdout.write(self.style.MIGRATE_HEADING(text))

    def say(self, text: str, style: Callable[[str], str] | None = None) -> None:
        elapsed = time.monotonic() - self.started
        line = f"[{elapsed:5.1f}s] {text}"
        self.stdout.write(style(line) if style else line)
