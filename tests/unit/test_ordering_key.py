"""``ordering_key``: checked when the channel class is defined, with errors that say what to do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from pgpubsub import Channel, ChannelDefinitionError, TriggerChannel
from pgpubsub.triggers import builtin_trigger
from testapp.models import Author, Post


def test_a_channel_orders_by_one_of_its_fields() -> None:
    @dataclass
    class Shipment(Channel):
        order_id: int
        step: str
        lock_notifications = True
        ordering_key = "order_id"

    assert Shipment.ordering_key_of(Shipment.build_payload({"order_id": 7, "step": "x"})) == "7"


def test_string_keys_are_kept_as_they_are_and_none_is_no_key() -> None:
    @dataclass
    class Shipment(Channel):
        order: str | None
        lock_notifications = True
        ordering_key = "order"

    assert Shipment.ordering_key_of(Shipment.build_payload({"order": "A-1"})) == "A-1"
    assert Shipment.ordering_key_of(Shipment.build_payload({"order": None})) is None


def test_a_channel_without_ordering_key_has_no_key() -> None:
    @dataclass
    class Plain(Channel):
        number: int
        lock_notifications = True

    assert Plain.ordering_key_of(Plain.build_payload({"number": 1})) is None


def test_an_ordering_key_that_is_not_a_field_is_refused() -> None:
    with pytest.raises(ChannelDefinitionError, match=r"'orderid', which is not one of its fields"):

        @dataclass
        class Shipment(Channel):
            order_id: int
            lock_notifications = True
            ordering_key = "orderid"


@pytest.mark.parametrize("key", ["", 5])
def test_an_ordering_key_that_is_not_a_name_is_refused(key: Any) -> None:
    with pytest.raises(ChannelDefinitionError, match="must be the name of one of its fields"):

        @dataclass
        class Shipment(Channel):
            order_id: int
            lock_notifications = True
            ordering_key = key


def test_a_fan_out_channel_cannot_be_ordered() -> None:
    with pytest.raises(ChannelDefinitionError, match=r"not lockable.*lock_notifications = True"):

        @dataclass
        class Shipment(Channel):
            order_id: int
            ordering_key = "order_id"


def test_a_trigger_channel_orders_by_a_model_field_and_pk_is_its_primary_key() -> None:
    @dataclass
    class ByPk(TriggerChannel):
        model = Author
        lock_notifications = True
        ordering_key = "pk"

    @dataclass
    class ByAuthor(TriggerChannel):
        model = Post
        lock_notifications = True
        ordering_key = "author"

    assert ByPk.ordering_column() == "id"
    assert ByAuthor.ordering_column() == "author_id"


def test_a_trigger_channel_ordering_key_that_is_not_a_model_field_is_refused() -> None:
    with pytest.raises(ChannelDefinitionError, match=r"'nom', which is not a column of Author"):

        @dataclass
        class Authors(TriggerChannel):
            model = Author
            lock_notifications = True
            ordering_key = "nom"


def test_a_trigger_channel_ordering_key_needs_a_model() -> None:
    with pytest.raises(ChannelDefinitionError, match="no model"):

        @dataclass
        class Authors(TriggerChannel):
            lock_notifications = True
            ordering_key = "pk"


def test_the_trigger_of_an_ordered_channel_passes_the_key_column() -> None:
    @dataclass
    class ByPk(TriggerChannel):
        model = Author
        lock_notifications = True
        ordering_key = "pk"

    @dataclass
    class Unordered(TriggerChannel):
        model = Author
        lock_notifications = True

    ordered_sql = builtin_trigger(ByPk, "AFTER", "UPDATE").get_func(Author)
    unordered_sql = builtin_trigger(Unordered, "AFTER", "UPDATE").get_func(Author)
    assert "pgpubsub_publish_v3(" in ordered_sql
    assert ordered_sql.split(";")[0].endswith(", 'id')")
    # Unordered channels keep version 2: their migrations do not change.
    assert "pgpubsub_publish_v2(" in unordered_sql
