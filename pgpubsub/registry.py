"""The registry of channels and the listeners (callbacks) registered on them."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import iscoroutinefunction

from pgpubsub.channel import BaseChannel, locate_channel
from pgpubsub.exceptions import ChannelDefinitionError, ChannelNotFound

Callback = Callable[..., Any]


@dataclass(frozen=True)
class Listener:
    """A callback registered on a channel.

    ``triggers`` names the pgpubsub triggers whose messages the callback handles (``None``:
    every message of the channel). ``operations`` is used for messages stored by
    django-pgpubsub 1.3, which do not name their trigger. ``is_async`` tells an
    ``async def`` callback, which the dispatcher awaits, from a plain one.
    """

    channel: type[BaseChannel]
    callback: Callback
    triggers: frozenset[str] | None = None
    operations: frozenset[str] | None = None
    is_async: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        # Decided once, here, rather than for every message.
        object.__setattr__(self, "is_async", iscoroutinefunction(self.callback))

    @property
    def key(self) -> tuple[str, str, frozenset[str] | None]:
        return (self.callback.__module__, self.callback.__qualname__, self.triggers)

    @property
    def label(self) -> str:
        """The callback's dotted path, e.g. ``"blog.listeners.count_read"``."""
        return f"{self.callback.__module__}.{self.callback.__qualname__}"

    def signature_problem(self, pass_context: bool) -> str | None:
        """Why the callback cannot be called with its channel's arguments; None if it can.

        The dispatcher calls it with :meth:`BaseChannel.callback_parameters` as keyword
        arguments: each must be a parameter (or go to ``**kwargs``), and the callback may
        require no other.
        """
        try:
            signature = inspect.signature(self.callback)
        except (TypeError, ValueError):  # a built-in without a signature: nothing to compare
            return None
        try:
            signature.bind(**dict.fromkeys(self.channel.callback_parameters(pass_context)))
        except TypeError as exc:
            return str(exc)
        return None

    def accepts(self, payload: dict[str, Any]) -> bool:
        if self.triggers is None:
            return True
        trigger = payload.get("trigger")
        if trigger is not None:
            return trigger in self.triggers
        return self.operations is None or _legacy_operation(payload) in self.operations


def _legacy_operation(payload: dict[str, Any]) -> str:
    if payload.get("old") is None:
        return "insert"
    return "delete" if payload.get("new") is None else "update"


class ChannelRegistry:
    """Channels that have listeners, indexed by class and by PostgreSQL channel name."""

    def __init__(self) -> None:
        self._listeners: dict[type[BaseChannel], list[Listener]] = {}
        self._by_pg_name: dict[str, type[BaseChannel]] = {}

    def register(self, listener: Listener) -> None:
        """Add a listener; registering the same callback twice is a no-op."""
        channel = listener.channel
        pg_name = channel.listen_safe_name()
        known = self._by_pg_name.get(pg_name)
        if known is not None and known.name() != channel.name():
            raise ChannelDefinitionError(
                f"Channels {known.name()} and {channel.name()} map to the same PostgreSQL "
                f"channel {pg_name!r}: rename one of them."
            )
        self._by_pg_name[pg_name] = channel
        listeners = self._listeners.setdefault(channel, [])
        if all(existing.key != listener.key for existing in listeners):
            listeners.append(listener)

    def listeners_for(self, channel: type[BaseChannel]) -> list[Listener]:
        return self._listeners.get(channel, [])

    def channel_for(self, pg_name: str) -> type[BaseChannel] | None:
        return self._by_pg_name.get(pg_name)

    def label(self, pg_name: str) -> str:
        """The dotted path of the channel of a PostgreSQL channel name, when registered (the
        name itself otherwise): what people are shown."""
        channel = self._by_pg_name.get(pg_name)
        return channel.name() if channel is not None else pg_name

    def channels(self) -> list[type[BaseChannel]]:
        return list(self._listeners)

    def select(
        self,
        include: Iterable[type[BaseChannel] | str] | None = None,
        exclude: Iterable[type[BaseChannel] | str] | None = None,
    ) -> list[type[BaseChannel]]:
        """Registered channels, limited to ``include`` (and their subclasses) minus ``exclude``.

        Raises:
            ChannelNotFound: when a path names no channel, or a channel without listeners.
        """
        selected = self.channels()
        if include:
            wanted = [self._registered(locate_channel(item)) for item in include]
            selected = [c for c in selected if issubclass(c, tuple(wanted))]
        if exclude:
            unwanted = tuple(self._registered(locate_channel(item)) for item in exclude)
            selected = [c for c in selected if not issubclass(c, unwanted)]
        return selected

    def _registered(self, channel: type[BaseChannel]) -> type[BaseChannel]:
        if not any(issubclass(known, channel) for known in self._listeners):
            raise ChannelNotFound(
                channel.name(),
                "the channel exists but no listener is registered on it: is the module that "
                "declares its listeners (listeners.py of an installed app) imported?",
            )
        return channel

    def clear(self) -> None:
        """Forget every channel and listener."""
        self._listeners.clear()
        self._by_pg_name.clear()

    @contextmanager
    def isolated(self) -> Iterator[ChannelRegistry]:
        """Forget, when the block ends, what was registered inside it (for tests).

        Example::

            with registry.isolated():
                pgpubsub.listener(MyChannel)(callback)
                ...  # callback is registered here, and no longer after the block
        """
        listeners = {channel: list(found) for channel, found in self._listeners.items()}
        by_pg_name = dict(self._by_pg_name)
        try:
            yield self
        finally:
            self._listeners.clear()
            self._listeners.update(listeners)
            self._by_pg_name.clear()
            self._by_pg_name.update(by_pg_name)


registry = ChannelRegistry()
