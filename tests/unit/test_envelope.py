"""The envelope of fan-out messages: one decoder, whatever arrives on the channel."""

from __future__ import annotations

import inspect
import json
from decimal import Decimal

import pytest

from pgpubsub import codec, envelope, functions

# Deep enough for a RecursionError on every Python (3.13 parses 3000 levels).
DEEP = "[" * 100_000 + "]" * 100_000


def test_the_three_shapes_decode() -> None:
    assert envelope.decode('{"p": {"kwargs": {"a": 1}}}') == envelope.Inline({"kwargs": {"a": 1}})
    assert envelope.decode('{"r": 42}') == envelope.Reference(42)
    assert envelope.decode('{"kwargs": {"a": 1}}') == envelope.Inline({"kwargs": {"a": 1}})


def test_encode_and_decode_are_a_pair() -> None:
    payload = {"kwargs": {"text": "hé", "n": 3}}
    assert envelope.decode(envelope.encode_inline(payload)) == envelope.Inline(payload)
    assert envelope.decode(envelope.encode_reference(7)) == envelope.Reference(7)


def test_exact_parsing_keeps_decimals() -> None:
    decoded = envelope.decode('{"p": {"new": {"price": 1.10}}}', codec.loads_exact)
    assert decoded == envelope.Inline({"new": {"price": Decimal("1.10")}})


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"r": 1e400}', "not a stored payload's id"),
        ('{"r": 99999999999999999999999}', "not a stored payload's id"),
        ('{"r": true}', "not a stored payload's id"),
        ('{"r": 0}', "not a stored payload's id"),
        ('{"r": "12"}', "not a stored payload's id"),
        (DEEP, "RecursionError"),
        ("not JSON", "not JSON"),
        ("", "not JSON"),
        ("[]", "a JSON list, not an object"),
        ('{"p": 5}', "'p' holds a int"),
    ],
)
def test_junk_raises_one_error_that_says_what_is_wrong(text: str, reason: str) -> None:
    for parse in (json.loads, codec.loads_exact):
        with pytest.raises(envelope.UnreadableEnvelope, match=reason):
            envelope.decode(text, parse)


def test_the_sql_functions_spell_the_keys_as_the_envelope_module() -> None:
    sql = inspect.getsource(functions)
    for key in (envelope.PAYLOAD_KEY, envelope.REFERENCE_KEY):
        assert f"jsonb_build_object('{key}', " in sql
    with open(
        inspect.getfile(functions).replace("functions.py", "migrations/0007_reliable_delivery.py")
    ) as frozen:
        text = frozen.read()
    assert f"jsonb_build_object('{envelope.PAYLOAD_KEY}', v_payload)" in text
    assert f"jsonb_build_object('{envelope.REFERENCE_KEY}', v_ref)" in text


def test_a_long_text_is_logged_cut_short() -> None:
    assert envelope.excerpt("x" * 5) == "'xxxxx'"
    assert envelope.excerpt("x" * 500, limit=3) == "'xxx'... (500 characters)"
