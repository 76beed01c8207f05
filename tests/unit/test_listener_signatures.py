"""A listener that cannot take its channel's arguments is a system-check error (pgpubsub.E007).

Otherwise it would pass ``check``, fail on every message at run time and turn each one into a
dead letter after using up its attempts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from pgpubsub import Channel, TriggerChannel, checks
from pgpubsub.registry import ChannelRegistry, Listener
from testapp.models import Author


@dataclass
class Orders(Channel):
    order_id: int
    note: str = ""


@dataclass
class AuthorChanges(TriggerChannel):
    model = Author


def order_by_name(order: int) -> None: ...


def no_arguments() -> None: ...


def only_new(new: Author) -> None: ...


def wants_context(old: Author | None, new: Author | None, context: dict[str, Any]) -> None: ...


def old_and_new(old: Author | None, new: Author | None) -> None: ...


def every_field(order_id: int, note: str) -> None: ...


def field_and_extra_default(order_id: int, note: str, retries: int = 3) -> None: ...


def anything(**kwargs: Any) -> None: ...


def optional_context(old: Author | None, new: Author | None, context: Any = None) -> None: ...


async def async_every_field(order_id: int, note: str) -> None: ...


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Register listeners in a registry of their own, the one the check reads."""
    registry = ChannelRegistry()
    monkeypatch.setattr(checks, "registry", registry)

    def register(channel: type[Channel] | type[TriggerChannel], *callbacks: Any) -> None:
        for callback in callbacks:
            registry.register(Listener(channel, callback))

    return register


@pytest.mark.parametrize(
    ("channel", "callback", "pass_context", "expected", "problem"),
    [
        (Orders, order_by_name, False, "order_id, note", "missing a required argument: 'order'"),
        (Orders, no_arguments, False, "order_id, note", "got an unexpected keyword argument"),
        (AuthorChanges, only_new, False, "old, new", "unexpected keyword argument 'old'"),
        (AuthorChanges, wants_context, False, "old, new", "missing a required argument: 'context'"),
        (AuthorChanges, old_and_new, True, "old, new, context", "argument 'context'"),
    ],
)
def test_a_listener_that_cannot_take_its_channels_arguments_is_a_check_error(
    registered: Callable[..., None],
    channel: type[Channel],
    callback: Callable[..., Any],
    pass_context: bool,
    expected: str,
    problem: str,
) -> None:
    registered(channel, callback)

    with override_settings(PGPUBSUB_PASS_CONTEXT_TO_LISTENERS=pass_context):
        (error,) = checks.check_listeners()

    assert error.id == "pgpubsub.E007"
    assert error.msg.startswith(
        f"Listener {__name__}.{callback.__qualname__} of channel {channel.name()} cannot be "
        f"called with the channel's arguments ({expected}): "
    )
    assert problem in error.msg
    assert f"the keyword parameters {expected}" in error.hint


def test_listeners_that_take_their_channels_arguments_pass(
    registered: Callable[..., None],
) -> None:
    registered(Orders, every_field, field_and_extra_default, anything, async_every_field)
    registered(AuthorChanges, old_and_new, anything, optional_context)

    assert checks.check_listeners() == []
    with override_settings(PGPUBSUB_PASS_CONTEXT_TO_LISTENERS=True):
        registered(AuthorChanges, wants_context)
        assert [error.msg for error in checks.check_listeners()] == [
            f"Listener {__name__}.old_and_new of channel {AuthorChanges.name()} cannot be "
            "called with the channel's arguments (old, new, context): got an unexpected "
            "keyword argument 'context'."
        ]


def test_the_example_projects_listeners_pass() -> None:
    assert checks.check_listeners() == []


def test_listen_refuses_to_start_with_a_listener_of_the_wrong_signature(
    registered: Callable[..., None],
) -> None:
    registered(Orders, order_by_name)

    with pytest.raises(SystemCheckError, match=r"pgpubsub\.E007.*order_by_name"):
        call_command("listen", "--worker", skip_checks=False)
