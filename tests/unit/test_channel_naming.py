"""Channel names and lookup: compatible with django-pgpubsub 1.3, with helpful errors."""

from __future__ import annotations

import hashlib

import pytest

from pgpubsub import ChannelNotFound, locate_channel
from testapp.channels import Announcement, AuthorTriggerChannel, PostReads


def test_name_is_the_dotted_path_of_the_channel_class() -> None:
    assert PostReads.name() == "testapp.channels.PostReads"


@pytest.mark.parametrize("channel", [PostReads, AuthorTriggerChannel, Announcement])
def test_listen_safe_name_is_the_django_pgpubsub_sha1_prefix_of_the_dotted_path(
    channel: type[PostReads],
) -> None:
    dotted = f"testapp.channels.{channel.__name__}"
    expected = "pgpubsub_" + hashlib.sha1(dotted.encode()).hexdigest()[:5]

    assert channel.listen_safe_name() == expected


def test_listen_safe_name_matches_the_name_frozen_into_the_testapp_migration() -> None:
    # testapp/migrations/0001_initial.py installs its trigger on channel 'pgpubsub_c1bf1'.
    assert AuthorTriggerChannel.listen_safe_name() == "pgpubsub_c1bf1"


def test_locate_channel_accepts_a_class_or_its_dotted_path() -> None:
    assert locate_channel(PostReads) is PostReads
    assert locate_channel("testapp.channels.PostReads") is PostReads


@pytest.mark.parametrize(
    "path",
    [
        "testapp.channels.PostRead",  # a typo in the class name
        "testapp.chanels.PostReads",  # a typo in the module
        "PostReads",  # not a dotted path
    ],
)
def test_unknown_channel_path_names_the_path_and_what_to_check(path: str) -> None:
    with pytest.raises(ChannelNotFound) as raised:
        locate_channel(path)

    message = str(raised.value)
    assert f"'{path}'" in message
    assert "INSTALLED_APPS" in message
    assert "full dotted path" in message
    assert raised.value.name == path


def test_path_to_something_that_is_not_a_channel_says_so() -> None:
    with pytest.raises(ChannelNotFound, match=r"not a subclass of pgpubsub\.Channel"):
        locate_channel("testapp.models.Author")


def test_channel_not_found_is_a_lookup_error() -> None:
    # Code written for django-pgpubsub may catch the built-in category.
    with pytest.raises(LookupError):
        locate_channel("testapp.channels.Nothing")
