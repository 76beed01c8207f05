"""The channel registry: which channels a worker listens to."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pytest

from pgpubsub import Channel, ChannelDefinitionError, ChannelNotFound
from pgpubsub.registry import ChannelRegistry, Listener


@dataclass
class Orders(Channel):
    order_id: int


@dataclass
class UrgentOrders(Orders):
    pass


@dataclass
class Invoices(Channel):
    invoice_id: int


@dataclass
class Unheard(Channel):
    value: int


@dataclass
class Impostor(Channel):
    """Pretends to have the PostgreSQL name of Orders (a sha1-prefix collision)."""

    value: int

    @classmethod
    def listen_safe_name(cls) -> str:
        return Orders.listen_safe_name()


def on_order(order_id: int) -> None:
    pass


def on_invoice(invoice_id: int) -> None:
    pass


async def on_order_async(order_id: int) -> None:
    pass


@pytest.fixture
def channels() -> ChannelRegistry:
    registry = ChannelRegistry()
    registry.register(Listener(Orders, on_order))
    registry.register(Listener(UrgentOrders, on_order))
    registry.register(Listener(Invoices, on_invoice))
    return registry


def test_select_without_arguments_returns_every_channel_with_listeners(
    channels: ChannelRegistry,
) -> None:
    assert channels.select() == [Orders, UrgentOrders, Invoices]


def test_select_include_by_class_or_path_takes_the_channel_and_its_subclasses(
    channels: ChannelRegistry,
) -> None:
    assert channels.select(include=[Orders]) == [Orders, UrgentOrders]
    assert channels.select(include=[f"{__name__}.Invoices"]) == [Invoices]


def test_select_exclude_removes_the_channel_and_its_subclasses(
    channels: ChannelRegistry,
) -> None:
    assert channels.select(exclude=[Orders]) == [Invoices]
    assert channels.select(include=[Orders], exclude=[UrgentOrders]) == [Orders]


def test_select_of_an_unknown_path_raises_channel_not_found(channels: ChannelRegistry) -> None:
    with pytest.raises(ChannelNotFound, match=f"'{__name__}.Refunds' not found"):
        channels.select(include=[f"{__name__}.Refunds"])


def test_select_of_a_channel_without_listeners_says_no_listener_is_registered(
    channels: ChannelRegistry,
) -> None:
    with pytest.raises(ChannelNotFound, match="no listener is registered"):
        channels.select(exclude=[Unheard])


def test_registering_the_same_callback_twice_keeps_one_listener(
    channels: ChannelRegistry,
) -> None:
    channels.register(Listener(Orders, on_order))

    assert [listener.callback for listener in channels.listeners_for(Orders)] == [on_order]


def test_channel_for_finds_a_channel_by_its_postgresql_name(channels: ChannelRegistry) -> None:
    assert channels.channel_for(Orders.listen_safe_name()) is Orders
    assert channels.channel_for("pgpubsub_00000") is None


def test_two_channels_with_the_same_postgresql_name_are_refused(
    channels: ChannelRegistry,
) -> None:
    with pytest.raises(ChannelDefinitionError, match="rename one of them"):
        channels.register(Listener(Impostor, on_order))


def test_trigger_listener_accepts_only_messages_of_its_triggers() -> None:
    listener = Listener(
        Orders, on_order, triggers=frozenset({"pgpubsub_x_ai"}), operations=frozenset({"insert"})
    )

    assert listener.accepts({"trigger": "pgpubsub_x_ai", "old": None, "new": {}})
    assert not listener.accepts({"trigger": "pgpubsub_x_au", "old": {}, "new": {}})


def test_message_stored_by_django_pgpubsub_is_matched_by_its_operation() -> None:
    # django-pgpubsub 1.3 payloads name no trigger: old/new tell the operation.
    inserts = Listener(
        Orders, on_order, triggers=frozenset({"t"}), operations=frozenset({"insert"})
    )

    assert inserts.accepts({"old": None, "new": {"id": 1}})
    assert not inserts.accepts({"old": {"id": 1}, "new": {"id": 1}})
    assert not inserts.accepts({"old": {"id": 1}, "new": None})


def test_listener_tells_once_at_registration_whether_its_callback_is_async() -> None:
    assert Listener(Orders, on_order_async).is_async
    assert Listener(Orders, functools.partial(on_order_async)).is_async
    assert not Listener(Orders, on_order).is_async
