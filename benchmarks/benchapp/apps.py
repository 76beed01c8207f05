"""The benchmark app's configuration, with the opt-in cProfile of worker processes."""

from __future__ import annotations

import atexit
import cProfile
import multiprocessing
import os
from pathlib import Path

from django.apps import AppConfig

#: Directory where each worker process writes ``worker-<pid>.prof`` when it exits.
PROFILE_DIR_ENV = "PGPUBSUB_BENCH_CPROFILE_DIR"


class BenchAppConfig(AppConfig):
    name = "benchapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        directory = os.environ.get(PROFILE_DIR_ENV)
        # Only the supervisor's children (the workers) are profiled, not `listen` itself.
        if directory and multiprocessing.parent_process() is not None:
            _profile_until_exit(Path(directory))


def _profile_until_exit(directory: Path) -> None:
    profiler = cProfile.Profile()

    def dump() -> None:
        profiler.disable()
        directory.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(str(directory / f"worker-{os.getpid()}.prof"))

    atexit.register(dump)
    profiler.enable()
