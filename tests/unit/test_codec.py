"""The payload codec: what ``notify`` sends is exactly what a listener receives."""

from __future__ import annotations

import datetime
import json
import re
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

import pgpubsub
from pgpubsub import Channel, ChannelDefinitionError, PayloadError
from pgpubsub.processing import decode_payload
from testapp.channels import Announcement, AuthorTriggerChannel
from tests.unit.channels_for_tests import EveryType, Opaque  # noqa: F401 (in annotations)

IST = datetime.timezone(datetime.timedelta(hours=5, minutes=30))


def round_trip(channel: type[Channel], **kwargs: Any) -> dict[str, Any]:
    """Encode as ``notify`` does, travel as JSON text, decode as the worker does."""
    text = json.dumps(channel.build_payload(kwargs))
    return channel.callback_kwargs(decode_payload(channel, text))


def every_type_values() -> dict[str, Any]:
    return {
        "number": -(2**62),
        "ratio": 0.1,
        "text": "it's a \\ $$ test\n🎉",
        "flag": True,
        "amount": Decimal("12345678901234567890.0123456789"),
        "ident": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "day": datetime.date(2024, 2, 29),
        "moment": datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=IST),
        "names": ["a", "b"],
        "pair": (1, "one"),
        "many": (Decimal("0.1"), Decimal("1E+30")),
        "unique": {uuid.UUID(int=1), uuid.UUID(int=2)},
        "frozen": frozenset({3, 4}),
        "by_day": {datetime.date(2024, 1, 1): [Decimal("1.10")]},
        "by_number": {7: datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc), 8: None},
        "maybe": 5,
        "anything": {"free": ["form", 1]},
        "raw_list": [1, "x", None],
        "label": "given",
        "extras": {"k": 1},
    }


def test_every_supported_field_type_round_trips_to_equal_values_of_the_same_type() -> None:
    values = every_type_values()

    received = round_trip(EveryType, **values)

    assert received == values
    for name, value in values.items():
        assert type(received[name]) is type(value), name


def test_decimal_keeps_every_digit_and_its_exponent() -> None:
    received = round_trip(EveryType, **{**every_type_values(), "amount": Decimal("1.500")})

    assert str(received["amount"]) == "1.500"


def test_aware_datetime_arrives_aware_with_its_own_utc_offset() -> None:
    moment = datetime.datetime(2024, 5, 6, 23, 30, tzinfo=IST)

    received = round_trip(EveryType, **{**every_type_values(), "moment": moment})["moment"]

    assert received == moment
    assert received.utcoffset() == datetime.timedelta(hours=5, minutes=30)


def test_naive_datetime_arrives_naive() -> None:
    moment = datetime.datetime(2024, 5, 6, 23, 30)

    received = round_trip(EveryType, **{**every_type_values(), "moment": moment})["moment"]

    assert received == moment
    assert received.tzinfo is None


def test_defaults_and_optional_fields_are_filled_in_when_not_sent() -> None:
    received = round_trip(Announcement, text="hello")

    assert received == {
        "text": "hello",
        "count": 0,
        "ratio": 0.0,
        "flag": False,
        "amount": Decimal("0"),
        "ident": None,
        "day": None,
        "moment": None,
        "tags": [],
        "pair": (),
        "unique": set(),
        "scores": {},
    }


def test_optional_field_sent_as_none_arrives_as_none() -> None:
    received = round_trip(EveryType, **{**every_type_values(), "maybe": None})

    assert received["maybe"] is None


def test_int_is_accepted_for_a_float_field_and_arrives_as_float() -> None:
    received = round_trip(EveryType, **{**every_type_values(), "ratio": 3})

    assert received["ratio"] == 3.0
    assert isinstance(received["ratio"], float)


def test_decimal_and_uuid_fields_accept_their_text_form() -> None:
    ident = uuid.uuid4()

    received = round_trip(
        EveryType, **{**every_type_values(), "amount": "2.50", "ident": str(ident)}
    )

    assert received["amount"] == Decimal("2.50")
    assert received["ident"] == ident


def test_payload_fields_the_channel_no_longer_has_are_ignored() -> None:
    payload = {"kwargs": {"text": "hi", "removed_field": 1}}

    assert Announcement.callback_kwargs(payload)["text"] == "hi"
    assert "removed_field" not in Announcement.callback_kwargs(payload)


def test_payload_stored_before_a_field_was_added_gets_the_field_default() -> None:
    # A message stored by an older release of the channel lacks its newer fields.
    received = Announcement.callback_kwargs({"kwargs": {"text": "old message"}})

    assert received["count"] == 0
    assert received["tags"] == []


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("number", "1"),
        ("number", True),
        ("number", 1.5),
        ("ratio", "0.5"),
        ("flag", 1),
        ("amount", 0.1),
        ("amount", "not a number"),
        ("ident", "not-a-uuid"),
        ("day", "2024-01-01"),
        ("moment", datetime.date(2024, 1, 1)),
        ("names", "abc"),
        ("names", [1]),
        ("pair", (1, "one", "extra")),
        ("by_number", {"seven": None}),
        ("extras", ["k", 1]),
    ],
)
def test_wrong_typed_value_is_refused_with_an_error_naming_the_field(
    field_name: str, value: Any
) -> None:
    with pytest.raises(PayloadError, match=rf"Field '{field_name}' of channel .*EveryType"):
        EveryType.build_payload({**every_type_values(), field_name: value})


def test_notify_refuses_a_wrong_typed_value_before_touching_the_database() -> None:
    # No django_db mark: any query would fail the test with a database access error.
    expected = "Field 'count' of channel testapp.channels.Announcement"
    with pytest.raises(PayloadError, match=re.escape(expected)):
        pgpubsub.notify(Announcement, text="hi", count="3")


def test_notify_refuses_a_missing_field() -> None:
    with pytest.raises(PayloadError, match="text"):
        pgpubsub.notify(Announcement, count=3)


def test_notify_refuses_an_unknown_field() -> None:
    with pytest.raises(PayloadError, match="colour"):
        pgpubsub.notify(Announcement, text="hi", colour="red")


def test_notify_refuses_a_trigger_channel() -> None:
    with pytest.raises(PayloadError, match="TriggerChannel"):
        pgpubsub.notify(AuthorTriggerChannel)  # type: ignore[arg-type]


def test_corrupt_stored_value_raises_payload_error_naming_the_field() -> None:
    with pytest.raises(PayloadError, match=r"Field 'count' of channel .*Announcement"):
        Announcement.callback_kwargs({"kwargs": {"text": "x", "count": "many"}})


@pytest.mark.parametrize(
    "annotation",
    ["Opaque", "int | str", "list[Opaque]", "dict[tuple[int, int], str]", "bytes"],
)
def test_unsupported_field_type_is_refused_when_the_class_is_defined(annotation: str) -> None:
    # Built with type() so the parametrized annotation is a string resolved in this module,
    # exactly as `from __future__ import annotations` leaves it.
    with pytest.raises(ChannelDefinitionError, match=r"Field 'payload' of channel .*Unsendable"):
        type(
            "Unsendable",
            (Channel,),
            {"__module__": __name__, "__annotations__": {"payload": annotation}},
        )


def test_annotation_that_cannot_be_resolved_is_refused_with_a_hint() -> None:
    class Local:
        pass

    with pytest.raises(ChannelDefinitionError, match="import every type used in them"):

        @dataclass
        class Unresolvable(Channel):
            item: Local


@pytest.mark.parametrize(
    ("field_name", "stored"),
    [
        ("text", None),
        ("flag", None),
        ("number", None),
        ("names", ["a", None]),
        ("pair", [1, None]),
    ],
)
def test_stored_null_for_a_field_that_is_not_optional_is_an_error_naming_it(
    field_name: str, stored: Any
) -> None:
    payload = EveryType.build_payload(every_type_values())
    payload["kwargs"][field_name] = stored

    with pytest.raises(PayloadError, match=rf"Field '{field_name}' of channel .*EveryType"):
        EveryType.callback_kwargs(payload)


def test_stored_null_for_an_optional_field_decodes_to_none() -> None:
    payload = EveryType.build_payload(every_type_values())
    payload["kwargs"]["maybe"] = None
    payload["kwargs"]["by_number"] = {"7": None}

    received = EveryType.callback_kwargs(payload)

    assert received["maybe"] is None
    assert received["by_number"] == {7: None}


@pytest.mark.parametrize(
    ("field_name", "value", "problem"),
    [
        ("text", "nul\x00inside", r"contains a NUL character \(\\x00\)"),
        ("text", "half a pair \ud800", "contains an unpaired surrogate"),
        ("ratio", float("nan"), "is nan"),
        ("ratio", float("inf"), "is inf"),
        ("names", ["fine", "not\x00fine"], r"\[1\] contains a NUL"),
        ("extras", {"k\x00": 1}, r"the key 'k\\x00' contains a NUL"),
        ("anything", {"deep": [{"x": float("-inf")}]}, r"\['deep'\]\[0\]\['x'\] is -inf"),
    ],
)
def test_value_postgresql_jsonb_refuses_is_a_payload_error_naming_the_field(
    field_name: str, value: Any, problem: str
) -> None:
    with pytest.raises(PayloadError, match=rf"Field '{field_name}' of channel .*{problem}"):
        EveryType.build_payload({**every_type_values(), field_name: value})
