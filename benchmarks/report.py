"""The report: figures beside the issue's targets and the django-pgpubsub 1.3.1 baseline."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness import Figure

Figures = dict[str, Figure]


def _median(figures: Figures, key: str) -> float | None:
    figure = figures.get(key)
    return None if figure is None else figure.median


def _at_least(key: str, bound: float) -> Callable[[Figures], bool | None]:
    def check(figures: Figures) -> bool | None:
        value = _median(figures, key)
        return None if value is None else value >= bound

    return check


def _at_most(key: str, bound: float, *, worst: bool = False) -> Callable[[Figures], bool | None]:
    def check(figures: Figures) -> bool | None:
        figure = figures.get(key)
        if figure is None:
            return None
        return (figure.max if worst else figure.median) <= bound

    return check


def _exactly_once(figures: Figures) -> bool | None:
    rate, ceiling = _median(figures, "exactly_once.rate"), _median(figures, "raw.per_row")
    if rate is None:
        return None
    if rate < 3000:
        return False
    return None if ceiling is None else rate >= 0.7 * ceiling


def _ten_times_tasks_db(figures: Figures) -> bool | None:
    ours = _median(figures, "tasks.pgpubsub.end_to_end")
    theirs = _median(figures, "tasks.django_tasks_db.end_to_end")
    return None if ours is None or theirs is None else ours >= 10 * theirs


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    target: str = ""
    check: Callable[[Figures], bool | None] | None = None
    baseline: str = ""


ROWS = [
    Row(
        "exactly_once.rate",
        "1 exactly-once, 20k bulk, 2 procs",
        ">= 3000 and >= 70% of 7 per-row",
        _exactly_once,
        "179",
    ),
    Row("exactly_once.worker_peak_rss", "1 worker peak RSS"),
    Row("backlog.rate_0", "2 live rate, no backlog"),
    Row("backlog.rate_1000", "2 live rate, 1k standing rows"),
    Row("backlog.rate_10000", "2 live rate, 10k standing rows"),
    Row("backlog.rate_100000", "2 live rate, 100k standing rows"),
    Row(
        "backlog.ratio",
        "2 largest backlog / no backlog",
        ">= 0.90",
        _at_least("backlog.ratio", 0.9),
    ),
    Row(
        "recovery.rate",
        "3 recovery drain, 2 procs",
        ">= 3000",
        _at_least("recovery.rate", 3000),
        "945",
    ),
    Row("recovery.rate_with_startup", "3 recovery incl. process start"),
    Row(
        "recovery.worker_peak_rss",
        "3 worker peak RSS (VmHWM)",
        "< 150 MiB",
        _at_most("recovery.worker_peak_rss", 150, worst=True),
    ),
    Row(
        "recovery.worker_rss_growth",
        "3 worker RSS growth, 10%..100%",
        "flat: <= 5 MiB",
        _at_most("recovery.worker_rss_growth", 5, worst=True),
    ),
    Row("latency.p50", "4 latency p50, 50 tx/s", "<= 3 ms", _at_most("latency.p50", 3)),
    Row("latency.p95", "4 latency p95"),
    Row("latency.p99", "4 latency p99", "<= 8 ms", _at_most("latency.p99", 8)),
    Row("latency.max", "4 latency max"),
    Row(
        "write.insert_select_ratio",
        "5 bulk INSERT..SELECT, trigger/plain",
        "<= 2.0x",
        _at_most("write.insert_select_ratio", 2.0),
        "6.0x",
    ),
    Row(
        "write.bulk_create_ratio",
        "5 bulk_create, trigger/plain",
        "<= 2.0x",
        _at_most("write.bulk_create_ratio", 2.0),
    ),
    Row(
        "write.single_ratio",
        "5 single-row tx, trigger/plain",
        "<= 1.5x",
        _at_most("write.single_ratio", 1.5),
    ),
    Row("write.insert_select_trigger", "5 INSERT..SELECT with trigger"),
    Row("write.insert_select_plain", "5 INSERT..SELECT plain"),
    Row("write.bulk_create_trigger", "5 bulk_create with trigger"),
    Row("write.bulk_create_plain", "5 bulk_create plain"),
    Row("write.single_trigger", "5 single-row tx with trigger"),
    Row("write.single_plain", "5 single-row tx plain"),
    Row("fanout.rate_per_process", "6 fan-out, per process (mean)"),
    Row("fanout.slowest_process", "6 fan-out, slowest process"),
    Row("fanout.deliveries", "6 fan-out, all deliveries"),
    Row("fanout.send_rate", "6 fan-out, notify() send rate"),
    Row("raw.per_row", "7 raw claim+delete, 1 row/tx"),
    Row("raw.batch_100", "7 raw claim+delete, 100 rows/tx"),
    Row("raw.batch_100_effect", "7 raw, 100 rows/tx + Effect insert"),
    Row("ordered.rate_unordered", "8 unordered, 20k burst, 2 procs"),
    Row("ordered.rate_1000_keys", "8 ordered, 1,000 keys"),
    Row(
        "ordered.ratio_1000_keys",
        "8 1,000 keys / unordered",
        ">= 0.50",
        _at_least("ordered.ratio_1000_keys", 0.5),
    ),
    Row("ordered.rate_distinct_keys", "8 ordered, all keys distinct"),
    Row(
        "ordered.ratio_distinct_keys",
        "8 distinct keys / unordered",
        ">= 0.90",
        _at_least("ordered.ratio_distinct_keys", 0.9),
    ),
    Row("ordered.rate_one_key", "8 ordered, one key"),
    Row("ordered.rate_single_stream", "8 single stream: unordered, 1 proc"),
    Row(
        "ordered.ratio_one_key",
        "8 one key / single stream",
        ">= 0.90",
        _at_least("ordered.ratio_one_key", 0.9),
    ),
    Row("delayed.lateness_p50", "9 delayed lateness p50, 50/s"),
    Row(
        "delayed.lateness_p99",
        "9 delayed lateness p99",
        "< 50 ms",
        _at_most("delayed.lateness_p99", 50),
    ),
    Row("delayed.lateness_max", "9 delayed lateness max"),
    Row("tasks.pgpubsub.enqueue_single", "11 tasks: enqueue, 1 per tx"),
    Row("tasks.django_tasks_db.enqueue_single", "11 django-tasks-db: enqueue, 1 per tx"),
    Row("tasks.pgpubsub.enqueue_one_transaction", "11 tasks: enqueue, all in 1 tx"),
    Row("tasks.django_tasks_db.enqueue_one_transaction", "11 django-tasks-db: enqueue, 1 tx"),
    Row(
        "tasks.pgpubsub.end_to_end",
        "11 tasks: 20k no-op, 2 procs",
        ">= 10x django-tasks-db",
        _ten_times_tasks_db,
    ),
    Row("tasks.django_tasks_db.end_to_end", "11 django-tasks-db: 20k no-op"),
    Row("tasks.pgpubsub.latency_p50", "11 tasks: latency p50, 50/s"),
    Row("tasks.django_tasks_db.latency_p50", "11 django-tasks-db: latency p50"),
    Row(
        "tasks.pgpubsub.latency_p99",
        "11 tasks: latency p99, 50/s",
        "< 10 ms",
        _at_most("tasks.pgpubsub.latency_p99", 10),
    ),
    Row("tasks.django_tasks_db.latency_p99", "11 django-tasks-db: latency p99"),
    Row("keep_handled.rate_deleted", "10 exactly-once, handled deleted"),
    Row("keep_handled.rate_kept", "10 exactly-once, handled kept"),
    Row(
        "keep_handled.ratio",
        "10 kept / deleted, same run",
        ">= 0.80",
        _at_least("keep_handled.ratio", 0.8),
    ),
    Row("keep_handled.prune_rate", "10 pruning, 1,000 rows/statement"),
]


#: Ratios of medians printed under the table: (label, numerator, denominator).
RATIOS = [
    ("1 exactly-once / 7 per-row ceiling", "exactly_once.rate", "raw.per_row"),
    ("1 exactly-once / 7 batch-100 ceiling", "exactly_once.rate", "raw.batch_100"),
    ("1 exactly-once / 7 like-for-like", "exactly_once.rate", "raw.batch_100_effect"),
    ("3 recovery / 7 like-for-like", "recovery.rate", "raw.batch_100_effect"),
    (
        "11 tasks end-to-end / django-tasks-db",
        "tasks.pgpubsub.end_to_end",
        "tasks.django_tasks_db.end_to_end",
    ),
]


def ratios(figures: Figures) -> dict[str, float]:
    """The ratios of ``RATIOS`` whose figures were measured."""
    return {
        label: figures[top].median / figures[bottom].median
        for label, top, bottom in RATIOS
        if top in figures and bottom in figures
    }


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def _status(met: bool | None, with_targets: bool) -> str:
    if not with_targets or met is None:
        return "-"
    return "met" if met else "NOT MET"


def evaluate(figures: Figures) -> dict[str, bool | None]:
    """Whether each target is met (None: its figures were not measured)."""
    return {row.key: row.check(figures) for row in ROWS if row.check is not None}


def table(figures: Figures, *, with_targets: bool) -> str:
    """The figures as a fixed-width text table, one line per measured metric."""
    header = (
        f"{'scenario / metric':<38} {'median':>9} {'min':>9} {'max':>9} {'unit':<6} "
        f"{'target':<32} {'status':<8} {'1.3.1':>6}"
    )
    lines = [header, "-" * len(header)]
    known = {row.key for row in ROWS}
    rows = [row for row in ROWS if row.key in figures]
    rows += [Row(key, key) for key in figures if key not in known]
    for row in rows:
        figure = figures[row.key]
        met = row.check(figures) if row.check is not None else None
        lines.append(
            f"{row.label:<38} {_number(figure.median):>9} {_number(figure.min):>9} "
            f"{_number(figure.max):>9} {figure.unit:<6} "
            f"{(row.target if with_targets else ''):<32} "
            f"{_status(met, with_targets and row.check is not None):<8} {row.baseline:>6}"
        )
    for label, value in ratios(figures).items():
        lines.append(f"{label:<38} {value:>9.0%}")
    return "\n".join(lines)


def json_line(
    *,
    mode: str,
    runs: int,
    machine: dict[str, Any],
    figures: Figures,
    checks: dict[str, bool],
    errors: dict[str, str],
    with_targets: bool,
) -> str:
    """Every figure, check and target on one line of JSON."""
    document = {
        "benchmark": "pgpubsub",
        "mode": mode,
        "runs": runs,
        "machine": machine,
        "figures": {key: figure.as_json() for key, figure in figures.items()},
        "ratios": {label: round(value, 3) for label, value in ratios(figures).items()},
        "checks": checks,
        "targets": (
            {
                row.key: {"target": row.target, "met": row.check(figures)}
                for row in ROWS
                if row.check is not None and row.key in figures
            }
            if with_targets
            else {}
        ),
        "errors": errors,
    }
    return json.dumps(document, separators=(",", ":"))
