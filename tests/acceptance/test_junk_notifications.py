"""Anyone who can connect can NOTIFY a fan-out channel: junk must not stop its workers.

A fan-out message exists only as its NOTIFY, so a worker that died of junk would also lose
the messages sent while it restarts.
"""

from __future__ import annotations

import sys

import pytest
from django.db import connection

import pgpubsub
from testapp.channels import Announcement, PostTriggerChannel
from testapp.models import ListenerEvent
from tests.acceptance.conftest import StartListen
from tests.support.processes import wait_for

DEEP = "[" * 3000 + "]" * 3000

#: Payloads no pgpubsub sender writes (NOTIFY payloads are at most 8000 bytes).
JUNK = [
    '{"r": 1e400}',
    '{"r": -1e400}',
    '{"r": 99999999999999999999999999}',
    '{"r": -5}',
    '{"r": 0}',
    '{"r": "12"}',
    '{"r": true}',
    '{"r": 1.5}',
    '{"r": null}',
    DEEP,
    '{"p": ' + DEEP + "}",
    '{"kwargs": {"text": ' + DEEP + "}}",
    "not JSON at all",
    "",
    "null",
    "[]",
    '"a string"',
    "12",
    '{"p": 5}',
    '{"p": null}',
    '{"p": []}',
    '{"p": {"kwargs": 5}}',
    '{"p": {"kwargs": {"text": ["not", "a", "string"]}}}',
    '{"p": {"kwargs": {"text": "x", "count": 1e400}}}',
    '{"p": {"kwargs": {}}}',
    '{"p": {"old": 1, "new": [2]}}',
    '{"p": {"new": {"id": "x", "author_id": {"a": 1}}}}',
    '{"p": {"kwargs": {"text": "\\ud800"}}}',
    "{" * 100,
    "x" * 7999,
]


def _notify_raw(channel: str, payload: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [channel, payload])


@pytest.mark.django_db(transaction=True)
def test_junk_on_fanout_channels_is_logged_and_dropped_and_the_same_worker_carries_on(
    listen: StartListen,
) -> None:
    process = listen()
    (worker,) = process.wait_for_workers(1)

    for channel in (Announcement, PostTriggerChannel):
        for payload in JUNK:
            _notify_raw(channel.listen_safe_name(), payload)
    pgpubsub.notify(Announcement, text="after the junk")

    event = wait_for(
        lambda: ListenerEvent.objects.filter(object_key="after the junk").first(),
        message="the valid message delivered",
    )
    output = process.output()
    pids = list(process.worker_pids().values())
    process.stop()

    assert event.pid == worker, "the same worker process delivered it: none died of the junk"
    assert pids == [worker]
    assert "Dropped a NOTIFY on channel testapp.channels.Announcement" in output
    assert "Dropped a NOTIFY on channel testapp.channels.PostTriggerChannel" in output
    if sys.version_info < (3, 13):  # 3.13's parser takes 3000 levels: then "not an object"
        assert "RecursionError" in output  # the 3000-deep array, named
    assert "x" * 1000 not in output  # logged truncated
    assert "(7999 characters)" in output
