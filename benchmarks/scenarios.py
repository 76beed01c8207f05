"""The benchmark scenarios. Each returns its figures (one value per run) and its checks.

Times are ``time.time()`` seconds: the writer (this process) and the workers share the
machine's clock, so a commit time taken here and a callback time stored by a worker compare.
"""

from __future__ import annotations

import datetime
import json
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tasks_scenario
from django.db import connection, transaction
from harness import (
    BENCH_DIR,
    BenchmarkError,
    Figure,
    ListenProcess,
    dsn,
    listen_process,
    memory_kib,
    percentile,
    py_spy,
    wait_for,
)

ITEM_CHANNEL = "benchapp.channels.ItemChannel"
PING_CHANNEL = "benchapp.channels.Ping"
ORDERED_CHANNEL = "benchapp.channels.Ordered"
UNORDERED_CHANNEL = "benchapp.channels.Unordered"
DELAYED_CHANNEL = "benchapp.channels.Delayed"
MIB = 1024.0  # KiB per MiB


@dataclass(frozen=True)
class Sizes:
    """How much work each scenario does, and how often it is repeated."""

    runs: int
    exactly_once_rows: int
    backlogs: tuple[int, ...]
    recovery_rows: int
    latency_rate: float
    latency_seconds: float
    write_rows: int
    write_single: int
    fanout_processes: int
    fanout_messages: int
    raw_rows: int
    warmup_rows: int
    ordered_rows: int
    ordered_keys: int
    delayed_rate: float
    delayed_seconds: float
    delayed_by: float
    #: The ``tasks`` scenario (tasks_scenario.py): no-op tasks per end-to-end run, and tasks
    #: enqueued one per transaction to measure that enqueue rate.
    tasks_rows: int
    tasks_single: int
    prune_rows: int


FULL = Sizes(
    runs=3,
    exactly_once_rows=20_000,
    backlogs=(0, 10_000, 100_000),
    recovery_rows=100_000,
    latency_rate=50.0,
    latency_seconds=20.0,
    write_rows=50_000,
    write_single=2_000,
    fanout_processes=4,
    fanout_messages=10_000,
    raw_rows=20_000,
    warmup_rows=500,
    ordered_rows=20_000,
    ordered_keys=1_000,
    delayed_rate=50.0,
    delayed_seconds=20.0,
    delayed_by=1.0,
    tasks_rows=20_000,
    tasks_single=2_000,
    prune_rows=100_000,
)

SMOKE = Sizes(
    runs=1,
    exactly_once_rows=300,
    backlogs=(0, 1_000),
    recovery_rows=500,
    latency_rate=50.0,
    latency_seconds=1.0,
    write_rows=500,
    write_single=50,
    fanout_processes=2,
    fanout_messages=100,
    raw_rows=300,
    warmup_rows=20,
    ordered_rows=300,
    ordered_keys=10,
    delayed_rate=50.0,
    delayed_seconds=1.0,
    delayed_by=0.2,
    tasks_rows=300,
    tasks_single=50,
    prune_rows=2_000,
)


@dataclass
class Context:
    """What every scenario gets: sizes, the environment of child processes, and options."""

    sizes: Sizes
    env: dict[str, str]
    log_dir: Path
    py_spy_dir: Path | None = None
    cprofile_dir: Path | None = None

    def listen(
        self, *args: str, processes: int, label: str, env: dict[str, str] | None = None
    ) -> Any:
        env = {**self.env, **(env or {})}
        if self.cprofile_dir is not None:
            env["PGPUBSUB_BENCH_CPROFILE_DIR"] = str(self.cprofile_dir / label)
        return listen_process(*args, processes=processes, env=env, log_dir=self.log_dir)

    def spy(self, pids: list[int], label: str, run: int) -> Any:
        """py-spy on the first run only: profiles are evidence, the figures come from all."""
        return py_spy(pids, self.py_spy_dir if run == 0 else None, label)


@dataclass
class Result:
    """What a scenario measured: figures (one value per run), checks and notes."""

    figures: dict[str, Figure] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: Messages the workers handled in total, to turn profiles into per-message costs.
    messages: int = 0

    def add(self, key: str, unit: str, values: list[float]) -> None:
        self.figures[key] = Figure(unit, tuple(values))


# --- database helpers --------------------------------------------------------------------


def execute(sql: str, params: Any = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def scalar(sql: str, params: Any = None) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def rows(sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def item_channel_name() -> str:
    from benchapp.channels import ItemChannel

    return ItemChannel.listen_safe_name()


def truncate(*tables: str) -> None:
    execute(f"TRUNCATE {', '.join(tables)}")


def reset_all() -> None:
    truncate(
        "benchapp_item",
        "benchapp_plainitem",
        "benchapp_effect",
        "benchapp_fanoutreport",
        "pgpubsub_notification",
        "pgpubsub_broadcastpayload",
    )


def reset_items() -> None:
    truncate("benchapp_item", "benchapp_effect")


_INSERT_SELECT = """
INSERT INTO {table} (name, quantity, price, created_at)
SELECT 'item ' || g, g, g * 0.01, now() FROM generate_series(1, %s) AS g
"""


def insert_rows(count: int, table: str = "benchapp_item") -> float:
    """Insert ``count`` rows with one INSERT ... SELECT in one transaction; return commit time."""
    with transaction.atomic():
        execute(_INSERT_SELECT.format(table=table), [count])
        committing = _commit_time()
    return committing


def _commit_time() -> float:
    """The time just before COMMIT is sent, read as the last step of the transaction.

    Read after COMMIT returns, a tiny batch could be handled by a worker before the writer
    reads its clock, giving a negative duration; read before, durations include the commit.
    """
    return time.time()


def effect_count() -> int:
    return int(scalar("SELECT count(*) FROM benchapp_effect"))


def pending_count() -> int:
    """Messages of the Item channel still waiting (neither failed nor handled and kept)."""
    return int(
        scalar(
            "SELECT count(*) FROM pgpubsub_notification WHERE channel = %s "
            "AND failed_at IS NULL AND handled_at IS NULL",
            [item_channel_name()],
        )
    )


def failed_count() -> int:
    return int(
        scalar(
            "SELECT count(*) FROM pgpubsub_notification "
            "WHERE channel = %s AND failed_at IS NOT NULL",
            [item_channel_name()],
        )
    )


def handled_exactly_once(expected: int) -> bool:
    """Every Item has one Effect, no Effect is doubled, and no message is left stored."""
    effects, distinct, missing = rows(
        """
        SELECT count(*), count(DISTINCT item_id),
               (SELECT count(*) FROM benchapp_item AS i
                WHERE NOT EXISTS (SELECT 1 FROM benchapp_effect AS e WHERE e.item_id = i.id))
        FROM benchapp_effect
        """
    )[0]
    return effects == distinct == expected and missing == 0 and pending_count() == 0


def per_worker(pids: list[int]) -> str:
    counts = dict(rows("SELECT pid, count(*) FROM benchapp_effect GROUP BY pid"))
    return ", ".join(f"{pid}: {counts.get(pid, 0)}" for pid in pids)


def wait_handled(
    count: int, listen: ListenProcess, on_tick: Callable[[], None] | None = None
) -> None:
    """Wait until ``count`` Effects exist and nothing of the channel is pending."""

    def done() -> bool:
        listen.check_running()
        return effect_count() >= count and pending_count() == 0

    wait_for(
        done,
        timeout=60 + count / 100,
        message=f"{count} messages to be handled",
        interval=0.05,
        on_tick=on_tick,
    )


def warm_up(ctx: Context, listen: ListenProcess) -> None:
    """Send a few messages through fresh workers, so the first measured run is not a cold one."""
    insert_rows(ctx.sizes.warmup_rows)
    wait_handled(ctx.sizes.warmup_rows, listen)
    reset_items()


def peak_rss_mib(pids: list[int]) -> float:
    peaks = [memory_kib(pid, "VmHWM") for pid in pids]
    return max(peak for peak in peaks if peak is not None) / MIB


# --- 1. exactly-once throughput ----------------------------------------------------------


def live_rate(count: int, listen: ListenProcess) -> tuple[float, bool]:
    """Bulk-insert ``count`` Items in one transaction; messages/s from commit to last Effect."""
    failed_before = failed_count()
    committed = insert_rows(count)
    wait_handled(count, listen)
    last = float(scalar("SELECT max(finished_at) FROM benchapp_effect"))
    correct = handled_exactly_once(count) and failed_count() == failed_before
    return count / (last - committed), correct


def exactly_once(ctx: Context) -> Result:
    result = Result()
    count = ctx.sizes.exactly_once_rows
    reset_all()
    rates: list[float] = []
    correct: list[bool] = []
    with ctx.listen("--channels", ITEM_CHANNEL, processes=2, label="exactly_once") as listen:
        pids = listen.wait_ready()
        warm_up(ctx, listen)
        for run in range(ctx.sizes.runs):
            reset_items()
            with ctx.spy(pids, "exactly_once", run):
                rate, ok = live_rate(count, listen)
            rates.append(rate)
            correct.append(ok)
            result.notes.append(f"run {run + 1}: {rate:.0f} msg/s; per worker {per_worker(pids)}")
        result.add("exactly_once.worker_peak_rss", "MiB", [peak_rss_mib(pids)])
    result.add("exactly_once.rate", "msg/s", rates)
    result.checks["exactly_once.every_message_handled_once"] = all(correct)
    result.messages = ctx.sizes.warmup_rows + count * ctx.sizes.runs
    return result


# --- 2. backlog independence -------------------------------------------------------------


def insert_standing_rows(count: int) -> None:
    """Half pending rows of a channel nobody serves, half failed rows of the Item channel."""
    from benchapp.channels import Standing

    other = count // 2
    execute(
        """
        INSERT INTO pgpubsub_notification
            (channel, payload, created_at, db_version, attempts, available_at, last_error)
        SELECT %s, jsonb_build_object('kwargs', jsonb_build_object('n', g)),
               now(), NULL, 0, now(), ''
        FROM generate_series(1, %s) AS g
        """,
        [Standing.listen_safe_name(), other],
    )
    execute(
        """
        INSERT INTO pgpubsub_notification
            (channel, payload, created_at, db_version, attempts, available_at, last_error,
             last_attempt_at, failed_at)
        SELECT %s,
               jsonb_build_object(
                   'app', 'benchapp', 'model', 'Item', 'trigger', %s, 'old', NULL,
                   'context', NULL,
                   'new', jsonb_build_object('id', -g, 'name', 'failed ' || g, 'quantity', g,
                                             'price', g * 0.01, 'created_at', now())),
               now(), NULL, 5, now(), 'ValueError: the listener failed', now(), now()
        FROM generate_series(1, %s) AS g
        """,
        [item_channel_name(), f"{item_channel_name()}_ai", count - other],
    )
    execute("ANALYZE pgpubsub_notification")


def backlog(ctx: Context) -> Result:
    result = Result()
    count = ctx.sizes.exactly_once_rows
    by_level: dict[int, list[float]] = {}
    correct: list[bool] = []
    reset_all()
    with ctx.listen("--channels", ITEM_CHANNEL, processes=2, label="backlog") as listen:
        pids = listen.wait_ready()
        warm_up(ctx, listen)
        for level in ctx.sizes.backlogs:
            reset_all()
            insert_standing_rows(level)
            rates = by_level.setdefault(level, [])
            for run in range(ctx.sizes.runs):
                reset_items()
                with ctx.spy(pids, f"backlog-{level}", run):
                    rate, ok = live_rate(count, listen)
                rates.append(rate)
                correct.append(ok)
            result.add(f"backlog.rate_{level}", "msg/s", rates)
            result.notes.append(f"{level} standing rows, claim: {claim_plan(count)}")
    base, top = by_level[ctx.sizes.backlogs[0]], by_level[ctx.sizes.backlogs[-1]]
    result.add("backlog.ratio", "x", [high / low for high, low in zip(top, base, strict=True)])
    result.checks["backlog.every_message_handled_once"] = all(correct)
    result.messages = ctx.sizes.warmup_rows + count * ctx.sizes.runs * len(ctx.sizes.backlogs)
    return result


def claim_plan(pending: int) -> str:
    """How PostgreSQL runs pgpubsub's claim with ``pending`` new messages (access path, time).

    The messages are inserted in a transaction that is rolled back, so no worker sees them.
    """
    with transaction.atomic():
        insert_rows(pending)
        plan = rows(
            """
            EXPLAIN (ANALYZE, COSTS OFF, SUMMARY ON)
            SELECT id, payload::text, attempts FROM pgpubsub_notification
            WHERE channel = ANY(%s) AND failed_at IS NULL
            AND available_at <= statement_timestamp()
            ORDER BY channel, id LIMIT 100 FOR UPDATE SKIP LOCKED
            """,
            [[item_channel_name()]],
        )
        transaction.set_rollback(True)
    lines = [line for (line,) in plan]
    scans = [line.strip().lstrip("-> ") for line in lines if "Scan" in line]
    timing = [line.strip() for line in lines if line.startswith("Execution Time")]
    return "; ".join(scans + timing)


# --- 3. recovery drain -------------------------------------------------------------------


@dataclass
class _RssSampler:
    """Samples the workers' RSS with the progress of the drain, at most every half second."""

    pids: list[int]
    total: int
    samples: list[tuple[int, dict[int, int]]] = field(default_factory=list)
    _last: float = 0.0

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last < 0.5:
            return
        self._last = now
        rss = {pid: memory_kib(pid, "VmRSS") for pid in self.pids}
        self.samples.append((effect_count(), {p: v for p, v in rss.items() if v is not None}))

    def growth_mib(self) -> float:
        """The largest RSS growth of a worker from 10% of the drain to its end."""
        start = next((s for done, s in self.samples if done >= self.total // 10), None)
        if start is None or len(self.samples) < 2:
            return 0.0
        end = self.samples[-1][1]
        return max((end[pid] - start[pid]) / MIB for pid in start if pid in end)


def recovery(ctx: Context) -> Result:
    result = Result()
    count = ctx.sizes.recovery_rows
    drain_rates: list[float] = []
    wall_rates: list[float] = []
    peaks: list[float] = []
    growths: list[float] = []
    correct: list[bool] = []
    for run in range(ctx.sizes.runs):
        reset_all()
        insert_rows(count)
        execute("ANALYZE pgpubsub_notification")
        launched = time.time()
        args = ("--recover", "--channels", ITEM_CHANNEL)
        with ctx.listen(*args, processes=2, label="recovery") as listen:
            pids = listen.wait_ready()
            sampler = _RssSampler(pids, count)
            with ctx.spy(pids, "recovery", run):
                wait_handled(count, listen, on_tick=sampler.tick)
            sampler.tick()
            peaks.append(peak_rss_mib(pids))
            growths.append(sampler.growth_mib())
            result.notes.append(f"run {run + 1}: per worker {per_worker(pids)}")
        first, last = rows("SELECT min(started_at), max(finished_at) FROM benchapp_effect")[0]
        drain_rates.append(count / (last - first))
        wall_rates.append(count / (last - launched))
        correct.append(handled_exactly_once(count))
    result.add("recovery.rate", "msg/s", drain_rates)
    result.add("recovery.rate_with_startup", "msg/s", wall_rates)
    result.add("recovery.worker_peak_rss", "MiB", peaks)
    result.add("recovery.worker_rss_growth", "MiB", growths)
    result.checks["recovery.every_message_handled_once"] = all(correct)
    result.messages = count * ctx.sizes.runs
    return result


# --- 4. latency --------------------------------------------------------------------------


def latency(ctx: Context) -> Result:
    from benchapp.models import Item

    result = Result()
    sizes = ctx.sizes
    total = int(sizes.latency_rate * sizes.latency_seconds)
    figures: dict[str, list[float]] = {"p50": [], "p95": [], "p99": [], "max": []}
    correct: list[bool] = []
    reset_all()
    with ctx.listen("--channels", ITEM_CHANNEL, processes=2, label="latency") as listen:
        pids = listen.wait_ready()
        warm_up(ctx, listen)
        for run in range(sizes.runs):
            reset_items()
            committed: dict[int, float] = {}
            with ctx.spy(pids, "latency", run):
                start = time.monotonic()
                for number in range(total):
                    # A steady rate: each insert has its slot, whatever the previous one took.
                    delay = start + number / sizes.latency_rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    item = Item.objects.create(name=f"latency {number}", quantity=number)
                    committed[item.pk] = time.time()
                wait_handled(total, listen)
            delays = [
                (started - committed[item_id]) * 1000
                for item_id, started in rows("SELECT item_id, started_at FROM benchapp_effect")
            ]
            for name, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)):
                figures[name].append(percentile(delays, fraction))
            correct.append(handled_exactly_once(total))
    for name, values in figures.items():
        result.add(f"latency.{name}", "ms", values)
    result.checks["latency.every_message_handled_once"] = all(correct)
    result.notes.append(f"{total} single-row transactions per run at {sizes.latency_rate:.0f}/s")
    result.messages = sizes.warmup_rows + total * sizes.runs
    return result


# --- 5. write-path overhead --------------------------------------------------------------


def _timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def write_overhead(ctx: Context) -> Result:
    from benchapp.models import Item, PlainItem

    result = Result()
    count, single = ctx.sizes.write_rows, ctx.sizes.write_single
    tables = {Item: "benchapp_item", PlainItem: "benchapp_plainitem"}

    def insert_select(model: Any) -> None:
        insert_rows(count, tables[model])

    def bulk_create(model: Any) -> None:
        objects = [model(name=f"item {n}", quantity=n) for n in range(count)]
        with transaction.atomic():
            model.objects.bulk_create(objects)

    def single_rows(model: Any) -> None:
        for n in range(single):
            model.objects.create(name=f"item {n}", quantity=n)

    ratios: dict[str, list[float]] = {"insert_select": [], "bulk_create": [], "single": []}
    times: dict[str, list[float]] = {}
    for run in range(ctx.sizes.runs):
        for kind, action in (
            ("insert_select", insert_select),
            ("bulk_create", bulk_create),
            ("single", single_rows),
        ):
            measured: dict[Any, float] = {}
            # Alternate which table goes first, so neither profits from a warmer cache.
            order = (Item, PlainItem) if run % 2 == 0 else (PlainItem, Item)
            for model in order:
                reset_all()
                measured[model] = _timed(lambda model=model, action=action: action(model))
            ratios[kind].append(measured[Item] / measured[PlainItem])
            times.setdefault(f"{kind}_trigger", []).append(measured[Item])
            times.setdefault(f"{kind}_plain", []).append(measured[PlainItem])
    for kind, values in ratios.items():
        result.add(f"write.{kind}_ratio", "x", values)
    for name, values in times.items():
        rows_written = single if name.startswith("single") else count
        result.add(f"write.{name}", "rows/s", [rows_written / seconds for seconds in values])
    reset_all()
    return result


# --- 6. fan-out --------------------------------------------------------------------------


#: A fan-out run slower than this is not repeated, to keep the suite within ~15 minutes.
_SLOW_RUN = 60.0


def _send_pings(run: int, count: int) -> float:
    from benchapp.channels import Ping

    import pgpubsub

    with transaction.atomic():
        for seq in range(count):
            pgpubsub.notify(Ping, run=run, seq=seq, last=seq == count - 1)
        committing = _commit_time()
    return committing


def _reports(run: int) -> list[tuple[int, int, float]]:
    return [
        (pid, received, last_at)
        for pid, received, last_at in rows(
            "SELECT pid, received, last_at FROM benchapp_fanoutreport WHERE run = %s", [run]
        )
    ]


def fanout(ctx: Context) -> Result:
    result = Result()
    processes, count = ctx.sizes.fanout_processes, ctx.sizes.fanout_messages
    mean_rates: list[float] = []
    slowest: list[float] = []
    totals: list[float] = []
    send_rates: list[float] = []
    complete: list[bool] = []
    reset_all()
    with ctx.listen("--channels", PING_CHANNEL, processes=processes, label="fanout") as listen:
        pids = listen.wait_ready()

        def reported(run: int) -> bool:
            listen.check_running()
            return len(_reports(run)) >= processes

        _send_pings(0, ctx.sizes.warmup_rows)  # warm-up
        wait_for(lambda: reported(0), 120, "fan-out warm-up reports", interval=0.05)
        for run in range(1, ctx.sizes.runs + 1):
            started = time.time()
            with ctx.spy(pids, "fanout", run - 1):
                committed = _send_pings(run, count)
                wait_for(
                    lambda run=run: reported(run),
                    120 + count / 5,
                    f"{processes} fan-out reports",
                    interval=0.05,
                )
            send_rates.append(count / (committed - started))
            reports = _reports(run)
            rates = [received / (last_at - committed) for _, received, last_at in reports]
            mean_rates.append(sum(rates) / len(rates))
            slowest.append(min(rates))
            last = max(r[2] for r in reports)
            totals.append(processes * count / (last - committed))
            complete.append(all(received == count for _, received, _ in reports))
            if last - started > _SLOW_RUN and run < ctx.sizes.runs:
                result.notes.append(
                    f"a run took {last - started:.0f} s (> {_SLOW_RUN:.0f} s): "
                    f"repetitions reduced to {run}"
                )
                break
    result.add("fanout.rate_per_process", "msg/s", mean_rates)
    result.add("fanout.slowest_process", "msg/s", slowest)
    result.add("fanout.deliveries", "msg/s", totals)
    result.add("fanout.send_rate", "msg/s", send_rates)
    result.checks["fanout.every_process_got_every_message"] = all(complete)
    result.notes.append(
        f"{processes} processes, {count} messages per run (sent in one transaction)"
    )
    result.messages = (ctx.sizes.warmup_rows + count * ctx.sizes.runs) * processes
    return result


# --- 7. raw ceiling ----------------------------------------------------------------------


@contextmanager
def raw_loops(processes: int, batch: int, effect: bool) -> Iterator[list[subprocess.Popen[str]]]:
    """Start ``rawloop.py`` processes, wait until each is connected, and always stop them."""
    command = [
        sys.executable,
        str(BENCH_DIR / "rawloop.py"),
        "--connection",
        json.dumps(dsn()),
        "--channel",
        item_channel_name(),
        "--batch",
        str(batch),
        *(["--effect"] if effect else []),
    ]
    started = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    try:
        for process in started:
            assert process.stdout is not None
            readable, _, _ = select.select([process.stdout], [], [], 30)
            if not readable or process.stdout.readline().strip() != "ready":
                raise BenchmarkError("a raw claim loop did not get ready")
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait()


def raw_rate(count: int, batch: int, effect: bool) -> tuple[float, bool]:
    reset_all()
    insert_rows(count)
    execute("ANALYZE pgpubsub_notification")
    with raw_loops(2, batch, effect) as processes:
        started = time.time()
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        reports = []
        for process in processes:
            output, _ = process.communicate(timeout=60 + count / 100)
            reports.append(json.loads(output.strip().splitlines()[-1]))
    finished = max(report["finished_at"] for report in reports)
    processed = sum(report["processed"] for report in reports)
    return count / (finished - started), processed == count and pending_count() == 0


def raw_ceiling(ctx: Context) -> Result:
    result = Result()
    count = ctx.sizes.raw_rows
    correct: list[bool] = []
    for key, batch, effect in (
        ("raw.per_row", 1, False),
        ("raw.batch_100", 100, False),
        ("raw.batch_100_effect", 100, True),
    ):
        rates = []
        for _ in range(ctx.sizes.runs):
            rate, ok = raw_rate(count, batch, effect)
            rates.append(rate)
            correct.append(ok)
        result.add(key, "msg/s", rates)
    result.checks["raw.every_row_claimed_once"] = all(correct)
    result.notes.append(f"2 processes, {count} stored rows per run")
    reset_all()
    return result


# --- 8. per-key ordering -----------------------------------------------------------------


@dataclass(frozen=True)
class KeyShape:
    """How a burst's messages are spread over keys: message ``n`` has key ``n % modulo``."""

    label: str
    modulo: int


def key_shapes(sizes: Sizes) -> list[KeyShape]:
    return [
        KeyShape(f"{sizes.ordered_keys}_keys", sizes.ordered_keys),
        KeyShape("one_key", 1),
        # n % (count + 1) is n: every key distinct.
        KeyShape("distinct_keys", sizes.ordered_rows + 1),
    ]


def send_burst(channel: str, count: int, modulo: int) -> float:
    """Store ``count`` messages (``n`` = 1..count, key ``k<n % modulo>``) through pgpubsub's
    send function, in one statement and one transaction; return the commit time."""
    from django.utils.module_loading import import_string

    from pgpubsub import codec, functions

    channel_cls = import_string(channel)
    payloads, keys = [], []
    for n in range(1, count + 1):
        payload = channel_cls.build_payload({"key": f"k{n % modulo}", "n": n})
        payloads.append(codec.dumps(payload))
        keys.append(channel_cls.ordering_key_of(payload))
    with transaction.atomic():
        execute(
            f"SELECT {functions.qualified(functions.SEND)}"
            "(%s, true, 'benchapp', %s::jsonb[], %s::text[], NULL)",
            [channel_cls.listen_safe_name(), payloads, keys],
        )
        committing = _commit_time()
    return committing


def stored_count(channel: str) -> int:
    from django.utils.module_loading import import_string

    name = import_string(channel).listen_safe_name()
    return int(scalar("SELECT count(*) FROM pgpubsub_notification WHERE channel = %s", [name]))


def keyed_rate(channel: str, count: int, modulo: int, listen: ListenProcess) -> tuple[float, bool]:
    """Send a burst; messages/s from its commit to the last Effect, and whether every message
    was handled once and each key's messages in the order of ``n``."""
    reset_items()
    committed = send_burst(channel, count, modulo)

    def done() -> bool:
        listen.check_running()
        return effect_count() >= count and stored_count(channel) == 0

    wait_for(done, timeout=60 + count / 50, message=f"{count} keyed messages", interval=0.05)
    last = float(scalar("SELECT max(finished_at) FROM benchapp_effect"))
    effects, distinct, out_of_order = rows(
        """
        SELECT count(*), count(DISTINCT item_id), count(*) FILTER (WHERE item_id < previous)
        FROM (SELECT item_id, lag(item_id) OVER (PARTITION BY item_id %% %s ORDER BY id)
                  AS previous
              FROM benchapp_effect) AS handled
        """,
        [modulo],
    )[0]
    in_order = out_of_order == 0 or channel != ORDERED_CHANNEL
    return count / (last - committed), effects == distinct == count and in_order


def warm_up_keyed(ctx: Context, listen: ListenProcess, channels: tuple[str, ...]) -> None:
    for channel in channels:
        keyed_rate(channel, ctx.sizes.warmup_rows, 10, listen)


def ordered(ctx: Context) -> Result:
    """Per-key ordering: an ordered channel's rate beside an unordered one of the same shape,
    by key spread; one key beside the single-stream rate (one unordered worker process)."""
    result = Result()
    sizes = ctx.sizes
    count = sizes.ordered_rows
    shapes = key_shapes(sizes)
    rates: dict[str, list[float]] = {}
    correct: list[bool] = []
    reset_all()
    both = ("--channels", ORDERED_CHANNEL, UNORDERED_CHANNEL)
    with ctx.listen(*both, processes=2, label="ordered") as listen:
        listen.wait_ready()
        warm_up_keyed(ctx, listen, (ORDERED_CHANNEL, UNORDERED_CHANNEL))
        for run in range(sizes.runs):
            rate, ok = keyed_rate(UNORDERED_CHANNEL, count, sizes.ordered_keys, listen)
            rates.setdefault("unordered", []).append(rate)
            correct.append(ok)
            for shape in shapes:
                rate, ok = keyed_rate(ORDERED_CHANNEL, count, shape.modulo, listen)
                rates.setdefault(shape.label, []).append(rate)
                correct.append(ok)
            result.notes.append(
                f"run {run + 1}: "
                + ", ".join(f"{label} {values[-1]:.0f} msg/s" for label, values in rates.items())
            )
    with ctx.listen("--channels", UNORDERED_CHANNEL, processes=1, label="single") as listen:
        listen.wait_ready()
        warm_up_keyed(ctx, listen, (UNORDERED_CHANNEL,))
        for _ in range(sizes.runs):
            rate, ok = keyed_rate(UNORDERED_CHANNEL, count, 1, listen)
            rates.setdefault("single_stream", []).append(rate)
            correct.append(ok)
    for label, values in rates.items():
        result.add(f"ordered.rate_{label}", "msg/s", values)

    def ratio(top: str, bottom: str) -> list[float]:
        return [a / b for a, b in zip(rates[top], rates[bottom], strict=True)]

    result.add(f"ordered.ratio_{shapes[0].label}", "x", ratio(shapes[0].label, "unordered"))
    result.add("ordered.ratio_distinct_keys", "x", ratio("distinct_keys", "unordered"))
    result.add("ordered.ratio_one_key", "x", ratio("one_key", "single_stream"))
    result.checks["ordered.every_message_once_each_key_in_order"] = all(correct)
    result.notes.append(
        f"{count} messages per burst, sent in one transaction; listen --processes 2 "
        "(single stream: --processes 1 on the unordered channel)"
    )
    result.messages = count * sizes.runs * (len(shapes) + 2)
    return result


# --- 9. delayed delivery -----------------------------------------------------------------


def delayed(ctx: Context) -> Result:
    """Messages sent with ``notify_at`` at a steady rate, each due ``delayed_by`` seconds after
    its send: lateness is the callback's start minus the due time."""
    from datetime import datetime, timezone

    from benchapp.channels import Delayed

    import pgpubsub

    result = Result()
    sizes = ctx.sizes
    total = int(sizes.delayed_rate * sizes.delayed_seconds)
    figures: dict[str, list[float]] = {"p50": [], "p99": [], "max": []}
    correct: list[bool] = []
    reset_all()
    with ctx.listen("--channels", DELAYED_CHANNEL, processes=2, label="delayed") as listen:
        listen.wait_ready()
        for _ in range(sizes.runs):
            reset_items()
            due: dict[int, float] = {}
            start = time.monotonic()
            for number in range(total):
                delay = start + number / sizes.delayed_rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                due[number] = time.time() + sizes.delayed_by
                when = datetime.fromtimestamp(due[number], tz=timezone.utc)
                pgpubsub.notify_at(Delayed, when, n=number)

            def done() -> bool:
                listen.check_running()
                return effect_count() >= total and stored_count(DELAYED_CHANNEL) == 0

            wait_for(done, timeout=60 + sizes.delayed_by, message="delayed messages")
            handled = rows("SELECT item_id, started_at FROM benchapp_effect")
            lateness = [(started - due[n]) * 1000 for n, started in handled]
            for name, fraction in (("p50", 0.5), ("p99", 0.99), ("max", 1.0)):
                figures[name].append(percentile(lateness, fraction))
            early = [value for value in lateness if value < 0]
            correct.append(len(handled) == len({n for n, _ in handled}) == total and not early)
    for name, values in figures.items():
        result.add(f"delayed.lateness_{name}", "ms", values)
    result.checks["delayed.every_message_once_never_early"] = all(correct)
    result.notes.append(
        f"{total} notify_at() transactions per run at {sizes.delayed_rate:.0f}/s, each due "
        f"{sizes.delayed_by:g} s after its send"
    )
    result.messages = total * sizes.runs
    return result


# --- 10. kept handled messages (PGPUBSUB_KEEP_HANDLED) ----------------------------------

#: PGPUBSUB_KEEP_HANDLED of the workers that keep what they handle: a week, in seconds.
_KEEP_A_WEEK = str(7 * 24 * 3600)


def kept_count() -> int:
    return int(
        scalar(
            "SELECT count(*) FROM pgpubsub_notification WHERE channel = %s "
            "AND handled_at IS NOT NULL AND handled_by LIKE 'pgpubsub worker %%'",
            [item_channel_name()],
        )
    )


def keep_handled_rate(ctx: Context, *, keep: bool, run: int) -> tuple[float, bool]:
    """The rate of scenario 1, by fresh workers that keep (or delete) what they handle; and
    whether every message was handled once and, kept, marked handled by its worker."""
    env = {"PGPUBSUB_BENCH_KEEP_HANDLED": _KEEP_A_WEEK} if keep else {}
    label = f"keep_handled_{'kept' if keep else 'deleted'}"
    with ctx.listen("--channels", ITEM_CHANNEL, processes=2, label=label, env=env) as listen:
        pids = listen.wait_ready()
        warm_up(ctx, listen)
        kept_before = kept_count()
        with ctx.spy(pids, label, run):
            rate, correct = live_rate(ctx.sizes.exactly_once_rows, listen)
        kept = kept_count() - kept_before
    reset_items()
    return rate, correct and kept == (ctx.sizes.exactly_once_rows if keep else 0)


def insert_old_handled(count: int, handled_ago: str) -> None:
    """``count`` Item messages as workers keep them, handled ``handled_ago`` (an interval)."""
    execute(
        """
        INSERT INTO pgpubsub_notification
            (channel, payload, created_at, db_version, attempts, available_at, last_error,
             handled_at, handled_by)
        SELECT %s,
               jsonb_build_object(
                   'app', 'benchapp', 'model', 'Item', 'trigger', %s, 'old', NULL,
                   'context', '{}'::jsonb,
                   'new', jsonb_build_object('id', g, 'name', 'item ' || g, 'quantity', g,
                                             'price', g * 0.01, 'created_at', now())),
               now() - %s::interval, NULL, 0, now() - %s::interval, '',
               now() - %s::interval, 'pgpubsub worker 1 on bench, started then'
        FROM generate_series(1, %s) AS g
        """,
        [
            item_channel_name(),
            f"{item_channel_name()}_ai",
            handled_ago,
            handled_ago,
            handled_ago,
            count,
        ],
    )
    execute("ANALYZE pgpubsub_notification")


def prune_rate(count: int) -> tuple[float, bool]:
    """Prune ``count`` handled messages 8 days old as workers do (1,000 rows per statement,
    each its own transaction), with kept messages 1 day old beside them; rows/s, and whether
    exactly the old ones went."""
    from pgpubsub import queue
    from pgpubsub.housekeeping import PRUNE_BATCH

    execute("DELETE FROM pgpubsub_notification")
    insert_old_handled(count, "8 days")
    insert_old_handled(count // 10, "1 day")
    started = time.perf_counter()
    pruned = deleted = queue.prune_handled(
        datetime.timedelta(days=7), using="default", limit=PRUNE_BATCH
    )
    while deleted == PRUNE_BATCH:
        deleted = queue.prune_handled(
            datetime.timedelta(days=7), using="default", limit=PRUNE_BATCH
        )
        pruned += deleted
    elapsed = time.perf_counter() - started
    left = int(scalar("SELECT count(*) FROM pgpubsub_notification"))
    return pruned / elapsed, pruned == count and left == count // 10


def keep_handled(ctx: Context) -> Result:
    result = Result()
    reset_all()
    deleted: list[float] = []
    kept: list[float] = []
    correct: list[bool] = []
    for run in range(ctx.sizes.runs):
        # Alternated, so that a drift of the machine's load does not favour one side.
        for keep in (False, True) if run % 2 == 0 else (True, False):
            rate, ok = keep_handled_rate(ctx, keep=keep, run=run)
            (kept if keep else deleted).append(rate)
            correct.append(ok)
            result.notes.append(
                f"run {run + 1}: {rate:.0f} msg/s with handled messages "
                f"{'kept' if keep else 'deleted'}"
            )
    result.add("keep_handled.rate_deleted", "msg/s", deleted)
    result.add("keep_handled.rate_kept", "msg/s", kept)
    result.add("keep_handled.ratio", "x", [k / d for k, d in zip(kept, deleted, strict=True)])
    prunes = [prune_rate(ctx.sizes.prune_rows) for _ in range(ctx.sizes.runs)]
    result.add("keep_handled.prune_rate", "rows/s", [rate for rate, _ in prunes])
    result.checks["keep_handled.every_message_handled_once_and_kept"] = all(correct)
    result.checks["keep_handled.pruning_deletes_only_old_handled"] = all(ok for _, ok in prunes)
    result.notes.append(
        f"pruning: {ctx.sizes.prune_rows:,} handled messages 8 days old beside "
        f"{ctx.sizes.prune_rows // 10:,} 1 day old, PGPUBSUB_KEEP_HANDLED = 7 days"
    )
    reset_all()
    result.messages = 2 * ctx.sizes.runs * (ctx.sizes.warmup_rows + ctx.sizes.exactly_once_rows)
    return result


SCENARIOS: dict[str, Callable[[Context], Result]] = {
    "exactly_once": exactly_once,
    "backlog": backlog,
    "recovery": recovery,
    "latency": latency,
    "write_overhead": write_overhead,
    "fanout": fanout,
    "raw_ceiling": raw_ceiling,
    "ordered": ordered,
    "delayed": delayed,
    "tasks": tasks_scenario.run,
    "keep_handled": keep_handled,
}
