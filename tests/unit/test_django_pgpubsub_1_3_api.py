"""What django-pgpubsub 1.3.1 code relies on and needs no database: its spellings keep working."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, fields
from typing import Dict, List, Set, Tuple  # noqa: UP035 (django-pgpubsub 1.3's spellings)

import pytest
from django.core.management.base import CommandError
from django.test import override_settings

from pgpubsub import (
    Channel,
    ChannelDefinitionError,
    NotificationContextError,
    PayloadError,
    TriggerChannel,
)
from pgpubsub.management.commands.listen import Command as ListenCommand
from pgpubsub.processing import decode_payload
from testapp.channels import Announcement, AuthorTriggerChannel, PostReads
from testapp.models import Author


@dataclass
class Legacy(Channel):
    """Fields annotated as django-pgpubsub 1.3's examples and tests annotate them."""

    days: List[datetime.date]  # noqa: UP006
    ratios: Set[float]  # noqa: UP006
    words: Tuple[str]  # noqa: UP006
    flags: Dict[datetime.date, bool]  # noqa: UP006


LEGACY = {
    "days": [datetime.date(2021, 1, 1), datetime.date(2021, 1, 2)],
    "ratios": {1.0, 2.1},
    "words": ("hello", "world"),
    "flags": {datetime.date(2021, 1, 7): True},
}


def test_typing_tuple_of_one_type_takes_any_number_of_items_as_in_1_3() -> None:
    payload = Legacy.build_payload({**LEGACY, "words": ("a", "b", "c")})

    assert Legacy.callback_kwargs(payload)["words"] == ("a", "b", "c")
    assert Legacy.callback_kwargs(Legacy.build_payload({**LEGACY, "words": ()}))["words"] == ()


def test_builtin_tuple_of_one_type_still_means_exactly_one_item() -> None:
    @dataclass
    class Pair(Channel):
        word: tuple[str]

    with pytest.raises(PayloadError, match="expected a tuple of 1 items, got 2"):
        Pair.build_payload({"word": ("hello", "world")})


def test_channel_serialize_and_deserialize_round_trip_with_a_deprecation_warning() -> None:
    with pytest.deprecated_call(match=r"Legacy\.serialize\(\) is deprecated: use pgpubsub\.notify"):
        text = Legacy(**LEGACY).serialize()  # type: ignore[arg-type]
    assert isinstance(text, str)
    with pytest.deprecated_call(match=r"Legacy\.deserialize\(\) is deprecated: use Legacy\.callb"):
        assert Legacy.deserialize(text) == LEGACY
    with pytest.deprecated_call():
        assert Legacy.deserialize(json.loads(text)) == LEGACY  # a dict, as stored


def _author_payload(**changes: object) -> dict[str, object]:
    row = {"id": 3, "name": "Ann", "bio": "", "created_at": None}
    return {"app": "testapp", "model": "Author", "old": None, "new": row, **changes}


def test_trigger_channel_deserialize_builds_the_rows_as_1_3_did() -> None:
    with pytest.deprecated_call(match=r"callback_kwargs"):
        decoded = AuthorTriggerChannel.deserialize(json.dumps(_author_payload()))

    assert decoded["old"] is None
    assert isinstance(decoded["new"], Author) and decoded["new"].name == "Ann"
    assert "context" not in decoded


@override_settings(PGPUBSUB_PASS_CONTEXT_TO_LISTENERS=True)
def test_trigger_channel_deserialize_adds_the_context_when_listeners_get_it() -> None:
    with pytest.deprecated_call():
        decoded = AuthorTriggerChannel.deserialize(_author_payload(context={"user": 7}))

    assert decoded["context"] == {"user": 7}


def test_trigger_channel_model_given_as_an_annotation_is_the_model_as_in_1_3() -> None:
    @dataclass
    class Annotated(TriggerChannel):
        model: Author  # type: ignore[misc, assignment]

    assert Annotated.get_model() is Author
    assert [field.name for field in fields(Annotated)] == ["old", "new"]


def test_trigger_channel_annotating_model_with_a_non_model_is_refused() -> None:
    with pytest.raises(ChannelDefinitionError, match="with 'int', which is not a model class"):

        @dataclass
        class Wrong(TriggerChannel):
            model: int  # type: ignore[misc, assignment]


@pytest.mark.parametrize("key", ["app", "model"])
def test_trigger_payload_without_its_app_or_model_is_refused(key: str) -> None:
    payload = _author_payload()
    del payload[key]

    with pytest.raises(PayloadError, match=f"has no {key}: pgpubsub triggers always write both"):
        AuthorTriggerChannel.callback_kwargs(payload)


def test_payload_stored_as_a_json_string_by_1_3_notify_is_decoded() -> None:
    # django-pgpubsub 1.3's notify() stored the payload's JSON text as a JSON string.
    stored = json.dumps(json.dumps({"kwargs": {"text": "from 1.3", "count": 2}}))

    kwargs = Announcement.callback_kwargs(decode_payload(Announcement, stored))

    assert (kwargs["text"], kwargs["count"]) == ("from 1.3", 2)


def test_payload_that_is_neither_object_nor_string_is_still_refused() -> None:
    with pytest.raises(ValueError, match="is not a JSON object"):
        decode_payload(Announcement, "[1, 2]")


def test_notification_context_error_is_a_runtime_error_as_in_1_3() -> None:
    assert issubclass(NotificationContextError, RuntimeError)


@pytest.mark.parametrize("given", ["DEBUG", "Debug", "debug", "WARNING"])
def test_listen_accepts_the_log_level_in_any_case(given: str) -> None:
    options = ListenCommand().create_parser("manage.py", "listen").parse_args(["--loglevel", given])

    assert options.loglevel == given.lower()


def test_listen_still_refuses_an_unknown_log_level() -> None:
    parser = ListenCommand().create_parser("manage.py", "listen")

    with pytest.raises(CommandError, match="invalid choice: 'verbose'"):
        parser.parse_args(["--loglevel", "VERBOSE"])


def test_only_lockable_plain_channels_are_also_claimed_under_their_dotted_path() -> None:
    # Where django-pgpubsub 1.3's notify() stored them; its triggers used the PostgreSQL name.
    assert PostReads.stored_aliases() == ("testapp.channels.PostReads",)
    assert Announcement.stored_aliases() == ()  # fan-out: nothing stored
    assert AuthorTriggerChannel.stored_aliases() == ()
