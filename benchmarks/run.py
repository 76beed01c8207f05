#!/usr/bin/env python
"""Run pgpubsub's benchmark suite: ``python benchmarks/run.py [--smoke] [--scenario NAME]``.

Creates (drops and recreates) its own database on the PostgreSQL server of DATABASE_URL
(default postgres://postgres@127.0.0.1:5432/), migrates it, runs each scenario with real
``manage.py listen`` subprocesses, and prints a table and, last, one line of JSON. The exit
status is 1 when a scenario failed or a message was lost or handled twice; missed targets are
reported, not failed. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from harness import BenchmarkError, Figure, bench_env, recreate_database
from profiles import cprofile_summary, py_spy_summary
from report import json_line, table
from scenarios import FULL, SCENARIOS, SMOKE, Context, Result, Sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="Tiny sizes, one run each, no targets: checks that every scenario works.",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        metavar="NAME",
        help=f"Run only this scenario (repeatable). One of: {', '.join(SCENARIOS)}.",
    )
    parser.add_argument("--runs", type=int, help="Runs per scenario (default 3; smoke: 1).")
    parser.add_argument(
        "--database",
        default="pgpubsub_bench",
        help="Database to drop, create and use (default: pgpubsub_bench).",
    )
    parser.add_argument(
        "--conn-max-age",
        default="0",
        metavar="SECONDS",
        help="Django's CONN_MAX_AGE for every process: seconds, or 'none' for persistent "
        "connections (default 0, Django's default).",
    )
    parser.add_argument(
        "--keep-database", action="store_true", help="Leave the database when done."
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="Record the workers with py-spy (first run of each scenario) into DIR.",
    )
    parser.add_argument(
        "--cprofile",
        type=Path,
        metavar="DIR",
        help="Profile the workers with cProfile into DIR (slows them down).",
    )
    parser.add_argument("--log-dir", type=Path, help="Keep the logs of listen processes in DIR.")
    return parser.parse_args(argv)


def machine(cursor: Any) -> dict[str, Any]:
    """What the figures were measured on."""
    import django
    from django.db import connection

    import pgpubsub

    cursor.execute("SHOW server_version")
    (server_version,) = cursor.fetchone()
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total_kib = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    return {
        "code": _code_version(),
        "load_average": round(os.getloadavg()[0], 2),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory_gib": round(total_kib / 1024 / 1024, 1),
        "postgresql": server_version,
        "python": platform.python_version(),
        "django": django.get_version(),
        # The driver of the workers' connections: the one Django uses.
        "driver": f"{connection.Database.__name__} {connection.Database.__version__.split()[0]}",
        "pgpubsub": pgpubsub.__version__,
    }


def _code_version() -> str:
    """The commit measured, and whether pgpubsub/ had uncommitted changes."""
    import pgpubsub

    root = Path(__file__).resolve().parents[1]
    imported = Path(pgpubsub.__file__).resolve().parent
    if imported != root / "pgpubsub":
        return f"pgpubsub imported from {imported}"

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, check=False
            ).stdout.strip()
        except OSError:
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" + uncommitted changes" if git("status", "--porcelain", "pgpubsub") else "")


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds the `with` blocks that stop the subprocesses


def run_scenarios(
    names: list[str], context: Context
) -> tuple[dict[str, Figure], dict[str, bool], dict[str, str], dict[str, Result]]:
    figures: dict[str, Figure] = {}
    checks: dict[str, bool] = {}
    errors: dict[str, str] = {}
    results: dict[str, Result] = {}
    started = time.monotonic()
    for name in names:
        print(f"[{time.monotonic() - started:6.1f} s] {name} ...", flush=True)
        try:
            result = SCENARIOS[name](context)
        except BenchmarkError as exc:
            errors[name] = str(exc)
            print(f"  {name} FAILED: {exc}", flush=True)
            continue
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            continue
        results[name] = result
        figures.update(result.figures)
        checks.update(result.checks)
        for note in result.notes:
            print(f"  {note}", flush=True)
        for key, ok in result.checks.items():
            print(f"  check {key}: {'ok' if ok else 'FAILED'}", flush=True)
    print(f"[{time.monotonic() - started:6.1f} s] done", flush=True)
    return figures, checks, errors, results


def print_profiles(context: Context, results: dict[str, Result]) -> None:
    """The cProfile and py-spy summaries of each scenario's workers, when asked for."""
    for name, result in results.items():
        if context.cprofile_dir is not None and (context.cprofile_dir / name).is_dir():
            print(f"\ncProfile of the {name} workers:")
            print(cprofile_summary(context.cprofile_dir / name, result.messages))
        if context.py_spy_dir is not None:
            summary = py_spy_summary(context.py_spy_dir, name)
            if summary:
                print(f"\npy-spy of the {name} workers (first run):")
                print(summary)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes: Sizes = SMOKE if args.smoke else FULL
    if args.runs:
        sizes = Sizes(**{**sizes.__dict__, "runs": args.runs})
    names = args.scenario or list(SCENARIOS)

    env = bench_env(args.database, args.conn_max_age)
    os.environ.update(env)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    recreate_database(args.database)

    import django
    from django.core.management import call_command
    from django.db import connection

    django.setup()
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        described = machine(cursor)
    if described["load_average"] > 0.5:
        print(
            f"warning: load average {described['load_average']} before the start: other work "
            "on this machine will lower the figures",
            flush=True,
        )

    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="pgpubsub-bench-"))
    context = Context(
        sizes=sizes,
        env=env,
        log_dir=log_dir,
        py_spy_dir=args.py_spy.resolve() if args.py_spy else None,
        cprofile_dir=args.cprofile.resolve() if args.cprofile else None,
    )
    try:
        figures, checks, errors, results = run_scenarios(names, context)
    finally:
        described["load_average_end"] = round(os.getloadavg()[0], 2)
        connection.close()
        if not args.keep_database:
            recreate_database(args.database, create=False)
        if args.log_dir is None:
            shutil.rmtree(log_dir, ignore_errors=True)

    print_profiles(context, results)

    with_targets = not args.smoke
    print()
    print(
        f"pgpubsub benchmarks ({'smoke' if args.smoke else 'full'}, {sizes.runs} run(s) each; "
        f"{described['nproc']} cores, {described['memory_gib']} GiB, "
        f"PostgreSQL {described['postgresql']})"
    )
    print(table(figures, with_targets=with_targets))
    for name, error in errors.items():
        print(f"ERROR in {name}: {error}")
    failed_checks = [key for key, ok in checks.items() if not ok]
    for key in failed_checks:
        print(f"CHECK FAILED: {key}")
    print(
        json_line(
            mode="smoke" if args.smoke else "full",
            runs=sizes.runs,
            machine=described,
            figures=figures,
            checks=checks,
            errors=errors,
            with_targets=with_targets,
        ),
        flush=True,
    )
    return 1 if errors or failed_checks else 0


if __name__ == "__main__":
    sys.exit(main())
