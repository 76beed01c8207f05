"""``manage.py listen`` options: which channels run, and clear refusals of bad arguments."""

from __future__ import annotations

import subprocess

import pytest

import pgpubsub
from pgpubsub.models import Notification
from testapp.channels import Announcement, AuthorTriggerChannel, Task
from testapp.models import Author, ListenerEvent, Post
from tests.acceptance.conftest import StartListen
from tests.support.processes import run_manage, wait_for


def stored_channels() -> list[str]:
    return sorted(Notification.objects.values_list("channel", flat=True))


@pytest.mark.django_db(transaction=True)
def test_channels_option_runs_only_the_named_channels(listen: StartListen) -> None:
    Author.objects.create(name="not listened to")

    process = listen("--worker", "--channels", "testapp.channels.Task")
    process.wait_for_workers(1)
    pgpubsub.notify(Task, key="listened to")
    # The worker drained its channels at start, before serving this message.
    wait_for(
        lambda: ListenerEvent.objects.filter(listener="task").exists(),
        message="the task to run",
    )
    process.stop()
    assert stored_channels() == [AuthorTriggerChannel.listen_safe_name()]
    assert not Post.objects.exists()
    assert "started on channels: testapp.channels.Task\n" in process.output()


@pytest.mark.django_db(transaction=True)
def test_exclude_channels_option_runs_every_channel_but_the_named_ones(
    listen: StartListen,
) -> None:
    Author.objects.create(name="not listened to")

    process = listen("--worker", "--exclude-channels", "testapp.channels.AuthorTriggerChannel")
    process.wait_for_workers(1)
    pgpubsub.notify(Task, key="listened to")
    pgpubsub.notify(Announcement, text="heard")
    wait_for(
        lambda: ListenerEvent.objects.filter(listener__in=["task", "announcement"]).count() >= 2,
        message="the task and the announcement to run",
    )
    process.stop()
    assert stored_channels() == [AuthorTriggerChannel.listen_safe_name()]
    assert not Post.objects.exists()
    started = next(line for line in process.output().splitlines() if "started on channels" in line)
    assert "AuthorTriggerChannel" not in started
    for name in ("Task", "Announcement", "PostReads", "PostTriggerChannel", "MediaTriggerChannel"):
        assert f"testapp.channels.{name}" in started


@pytest.mark.django_db
@pytest.mark.parametrize("option", ["--channels", "--exclude-channels"])
def test_unknown_channel_path_exits_non_zero_naming_the_path(option: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as failure:
        run_manage("listen", option, "testapp.channels.NoSuchChannel", timeout=30)
    assert failure.value.returncode != 0
    assert "CommandError" in failure.value.output
    assert "'testapp.channels.NoSuchChannel' not found" in failure.value.output
    assert "Traceback" not in failure.value.output


@pytest.mark.django_db
def test_worker_with_several_processes_exits_non_zero_with_a_clear_message() -> None:
    with pytest.raises(subprocess.CalledProcessError) as failure:
        run_manage("listen", "--worker", "--processes", "2", timeout=30)
    assert failure.value.returncode != 0
    assert "--worker runs exactly one worker: remove --processes." in failure.value.output
    assert "Traceback" not in failure.value.output
