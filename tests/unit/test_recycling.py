"""Worker recycling: when a worker retires (``listen --max-messages`` and ``--max-memory``)."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from pgpubsub.recycling import Recycling, resident_memory_mb


def test_without_limits_a_worker_never_retires() -> None:
    recycling = Recycling()

    assert not recycling.enabled
    assert recycling.reason(10**9) is None


def test_a_worker_retires_once_it_took_max_messages() -> None:
    recycling = Recycling(max_messages=100)

    assert recycling.reason(99) is None
    assert recycling.reason(100) == "it took 100 messages (--max-messages 100)"
    assert recycling.reason(112) == "it took 112 messages (--max-messages 100)"


def test_a_worker_retires_once_its_memory_reaches_max_memory() -> None:
    used = [120.0]
    recycling = Recycling(max_memory=200, memory=lambda: used[0])

    assert recycling.reason(1) is None
    used[0] = 200.4
    assert recycling.reason(1) == "it uses 200 MB of memory (--max-memory 200)"


def test_this_process_resident_memory_is_measured() -> None:
    before = resident_memory_mb()
    kept = b"x" * (64 * 1024 * 1024)

    assert 1 < before < resident_memory_mb()
    assert kept


@pytest.mark.parametrize("option", ["--max-messages", "--max-memory"])
@pytest.mark.parametrize("value", ["0", "-5", "many"])
def test_recycling_limits_must_be_positive_integers(option: str, value: str) -> None:
    with pytest.raises(CommandError, match=option):
        call_command("listen", option, value)
