"""Listener decorators: register a callback on a channel (and, for triggers, its trigger).

Example::

    @pgpubsub.post_insert_listener(AuthorTriggerChannel)
    def create_first_post(old: Author | None, new: Author) -> None:
        Post.objects.create(author_id=new.pk, content="Welcome!")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pgtrigger

from pgpubsub.channel import BaseChannel, TriggerChannel, ensure_dataclass, locate_channel
from pgpubsub.exceptions import ListenerRegistrationError
from pgpubsub.filters import ListenerFilterProvider  # noqa: F401  (django-pgpubsub 1.3 path)
from pgpubsub.registry import Listener, registry
from pgpubsub.triggers import Notify, builtin_trigger, notify_trigger_from

F = TypeVar("F", bound=Callable[..., Any])
ChannelRef = type[BaseChannel] | str


def _trigger_channel(channel: ChannelRef) -> type[TriggerChannel]:
    located = locate_channel(channel)
    if not issubclass(located, TriggerChannel):
        raise ListenerRegistrationError(
            f"{located.name()} is not a TriggerChannel: trigger listeners need a channel with "
            "`model = ...`; use pgpubsub.listener() for a plain Channel."
        )
    located.get_model()
    return located


def _install(channel: type[TriggerChannel], trigger: Notify) -> Notify:
    """Register ``trigger`` on the channel's model with django-pgtrigger, unless a trigger of
    that name is registered there already: listeners sharing a channel and an operation
    share one trigger (and one message per change)."""
    model = channel.get_model()
    for registered_model, existing in pgtrigger.registered():
        same = registered_model is model and existing.name == trigger.name
        if same and isinstance(existing, Notify):
            return existing
    trigger.register(model)  # type: ignore[arg-type]
    return trigger


def _register(listener: Listener) -> None:
    ensure_dataclass(listener.channel)
    if not callable(listener.callback):
        raise ListenerRegistrationError(
            f"A listener of {listener.channel.name()} must be a function, got "
            f"{listener.callback!r}."
        )
    registry.register(listener)


def listener(channel: ChannelRef) -> Callable[[F], F]:
    """Register the decorated function as a callback of ``channel``.

    The function is called with the channel's fields as keyword arguments.

    Raises:
        ChannelNotFound: when ``channel`` is a dotted path that names no channel.
    """
    channel_cls = locate_channel(channel)

    def decorator(callback: F) -> F:
        _register(Listener(channel_cls, callback))
        return callback

    return decorator


def _operations_listener(channel: ChannelRef, when: str, *operations: str) -> Callable[[F], F]:
    channel_cls = _trigger_channel(channel)
    triggers = [_install(channel_cls, builtin_trigger(channel_cls, when, op)) for op in operations]

    def decorator(callback: F) -> F:
        _register(
            Listener(
                channel_cls,
                callback,
                triggers=frozenset(trigger.name or "" for trigger in triggers),
                operations=frozenset(op.lower() for op in operations),
            )
        )
        return callback

    return decorator


def trigger_listener(channel: ChannelRef, trigger: Any) -> Callable[[F], F]:
    """Register a callback on ``channel`` fired by a custom django-pgtrigger ``trigger``.

    The trigger's name, timing, operation and condition are kept; its body publishes the row
    to the channel (use :class:`pgpubsub.triggers.Notify` for full control).
    """
    channel_cls = _trigger_channel(channel)
    notify = _install(channel_cls, notify_trigger_from(channel_cls, trigger))

    def decorator(callback: F) -> F:
        _register(Listener(channel_cls, callback, triggers=frozenset({notify.name or ""})))
        return callback

    return decorator


def pre_save_listener(channel: ChannelRef) -> Callable[[F], F]:
    """Callback for rows about to be inserted or updated (a BEFORE trigger)."""
    return _operations_listener(channel, "BEFORE", "INSERT", "UPDATE")


def post_save_listener(channel: ChannelRef) -> Callable[[F], F]:
    """Callback for rows inserted or updated (AFTER triggers)."""
    return _operations_listener(channel, "AFTER", "INSERT", "UPDATE")


def pre_insert_listener(channel: ChannelRef) -> Callable[[F], F]:
    """Callback for rows about to be inserted (a BEFORE INSERT trigger)."""
    return _operations_listener(channel, "BEFORE", "INSERT")


def post_insert_listener(channel: ChannelRef) -> Callable[[F], F]:
    """Callback for inserted rows (a statement-level AFTER INSERT trigger)."""
    return _operations_listener(channel, "AFTER", "INSERT")


def pre_update_listener(channel: ChannelRef) -> Callable[[F], F]:
    """Callback for rows about to be updated (a BEFORE UPDATE trigger)."""
    return _operations_listener(channel, "BEFORE", "UPDATE")


def post_update_listener(channel: ChannelRef) -> Callable[[F], F]:
    """Callback for updated rows (an AFTER UPDATE trigger)."""
    return _operations_listener(channel, "AFTER", "UPDATE")


def pre_delete_listener(channel: ChannelRef) -> Callable[[F], F]:
    """Callback for rows about to be deleted (a BEFORE DELETE trigger; the delete proceeds)."""
    return _operations_listener(channel, "BEFORE", "DELETE")


def post_delete_listener(channel: ChannelRef) -> Callable[[F], F]:
    """Callback for deleted rows (a statement-level AFTER DELETE trigger)."""
    return _operations_listener(channel, "AFTER", "DELETE")
