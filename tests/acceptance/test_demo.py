"""``manage.py demo`` end to end: real workers, exactly-once effects, recovery, clean exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

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
