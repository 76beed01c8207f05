"""Plain (fan-out) channels: every listening process handles every message."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import pytest

import pgpubsub
from testapp.channels import Announcement
from testapp.models import Author, ListenerEvent, Post
from tests.acceptance.conftest import StartListen
from tests.support.processes import wait_for


def announce(number: int) -> str:
    text = f"announcement {number}"
    pgpubsub.notify(Announcement, text=text, count=number)
    return text


def publish_post(number: int) -> str:
    author = Author.objects.get_or_create(name="writer")[0]
    return str(Post.objects.create(author=author, title=f"post {number}").pk)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("channel", "listener", "send"),
    [
        ("testapp.channels.Announcement", "announcement", announce),
        ("testapp.channels.PostTriggerChannel", "log_new_post", publish_post),
    ],
    ids=["notify", "trigger"],
)
def test_two_listen_processes_both_handle_every_message(
    listen: StartListen, channel: str, listener: str, send: Callable[[int], str]
) -> None:
    first = listen("--worker", "--channels", channel)
    second = listen("--worker", "--channels", channel)
    # Fan-out messages are not stored: send only once both workers listen.
    first.wait_for_workers(1)
    second.wait_for_workers(1)

    keys = [send(number) for number in range(5)]
    events = ListenerEvent.objects.filter(listener=listener)
    wait_for(lambda: events.count() >= 10, message="10 listener events")
    first.stop()
    second.stop()

    pids_per_message: dict[str, list[int]] = defaultdict(list)
    for key, pid in events.values_list("object_key", "pid"):
        pids_per_message[key].append(pid)
    assert {key: sorted(pids) for key, pids in pids_per_message.items()} == {
        key: sorted([first.pid, second.pid]) for key in keys
    }
