"""The benchmark suite's smoke mode runs every scenario end to end, so the suite never rots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

RUN_PY = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"
SCENARIOS = (
    "exactly_once",
    "backlog",
    "recovery",
    "latency",
    "write",
    "fanout",
    "raw",
    "ordered",
    "delayed",
    "tasks",
    "keep_handled",
)


def test_benchmark_smoke_mode_runs_every_scenario_and_reports_json() -> None:
    # A database of its own: a concurrent run (another checkout, `make bench`) is not disturbed.
    database = f"pgpubsub_bench_smoke_{os.getpid()}"
    completed = subprocess.run(
        [sys.executable, str(RUN_PY), "--smoke", "--database", database],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output

    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["mode"] == "smoke"
    assert report["errors"] == {}
    assert report["checks"] and all(report["checks"].values()), report["checks"]
    measured = {key.split(".")[0] for key in report["figures"]}
    assert measured == set(SCENARIOS), measured
    rates = [f for f in report["figures"].values() if f["unit"] in ("msg/s", "rows/s")]
    assert rates and all(rate["median"] > 0 for rate in rates)
    assert report["targets"] == {}  # smoke sizes say nothing about the targets
