"""Channels: the typed dataclasses that name a message stream and describe its payload.

A :class:`Channel` carries typed fields sent by :func:`pgpubsub.notify`; a
:class:`TriggerChannel` names a model and carries the ``old`` and ``new`` state of a row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import re
import typing
from typing import Any, ClassVar

from django.db import models
from django.utils.module_loading import import_string

from pgpubsub import codec
from pgpubsub.exceptions import ChannelDefinitionError, ChannelNotFound, PayloadError

_PG_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclasses.dataclass
class BaseChannel:
    """Common behaviour of every channel class."""

    #: Store each message so exactly one listener process handles it.
    lock_notifications: ClassVar[bool] = False

    @classmethod
    def name(cls) -> str:
        """The dotted path of the channel class, e.g. ``"shop.channels.OrderPaid"``."""
        return f"{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def listen_safe_name(cls) -> str:
        """The PostgreSQL channel name (at most 63 characters) used by LISTEN/NOTIFY.

        Derived from :meth:`name` exactly as django-pgpubsub 1.3 did, so that notifications
        it stored are recognised after an upgrade.
        """
        digest = hashlib.sha1(cls.name().encode()).hexdigest()[:5]
        return f"pgpubsub_{digest}"

    @classmethod
    def is_trigger_channel(cls) -> bool:
        return issubclass(cls, TriggerChannel)

    @classmethod
    def callback_kwargs(cls, payload: dict[str, Any]) -> dict[str, Any]:
        """Decode a payload into the keyword arguments a callback receives."""
        raise NotImplementedError


def ensure_dataclass(channel: type[BaseChannel]) -> None:
    """Refuse a channel class that declares fields but was not decorated with @dataclass."""
    declared = [
        name
        for name, hint in inspect.get_annotations(channel).items()
        if "ClassVar" not in str(hint)
    ]
    fields = getattr(channel, "__dataclass_fields__", {})
    missing = [name for name in declared if name not in fields]
    if missing:
        raise ChannelDefinitionError(
            f"Channel {channel.name()} declares field(s) {', '.join(missing)} but is not a "
            "dataclass: decorate the class with @dataclass."
        )


def validate_pg_identifier(name: str) -> str:
    """Check that ``name`` is a safe, unquoted PostgreSQL identifier and return it."""
    if not _PG_IDENTIFIER.match(name):
        raise ChannelDefinitionError(
            f"{name!r} is not a valid PostgreSQL channel name: use lower-case letters, digits "
            "and underscores, at most 63 characters."
        )
    return name


@dataclasses.dataclass
class Channel(BaseChannel):
    """A channel whose messages are sent from Python with :func:`pgpubsub.notify`.

    Example::

        @dataclass
        class PostReads(Channel):
            post_id: int
            read_at: datetime.datetime | None = None

    Raises:
        ChannelDefinitionError: when a field has a type that cannot be sent.
    """

    _field_codecs: ClassVar[dict[str, codec.FieldCodec]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        try:
            hints = typing.get_type_hints(cls)
        except Exception as exc:  # NameError, or anything a broken annotation raises
            raise ChannelDefinitionError(
                f"The field annotations of channel {cls.__module__}.{cls.__qualname__} cannot "
                f"be resolved ({exc}): import every type used in them at module level."
            ) from exc
        cls._field_codecs = codec.build_channel_codecs(cls, hints)

    @classmethod
    def build_payload(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Validate ``kwargs`` against the channel's fields and return the JSON payload."""
        ensure_dataclass(cls)
        try:
            instance = cls(**kwargs)
        except TypeError as exc:
            raise PayloadError(f"Cannot send on channel {cls.name()}: {exc}") from None
        values = {field.name: getattr(instance, field.name) for field in dataclasses.fields(cls)}
        return {"kwargs": codec.encode_fields(cls.name(), cls._field_codecs, values)}

    @classmethod
    def callback_kwargs(cls, payload: dict[str, Any]) -> dict[str, Any]:
        kwargs = codec.decode_fields(cls.name(), cls._field_codecs, payload.get("kwargs") or {})
        # A message stored before a field was added lacks it: give it the field's default.
        for field in dataclasses.fields(cls):
            if field.name in kwargs:
                continue
            if field.default is not dataclasses.MISSING:
                kwargs[field.name] = field.default
            elif field.default_factory is not dataclasses.MISSING:
                kwargs[field.name] = field.default_factory()
        return kwargs


@dataclasses.dataclass
class TriggerChannel(BaseChannel):
    """A channel fed by database triggers on ``model``.

    Callbacks receive ``old`` and ``new`` as unsaved instances of ``model`` (``None`` where
    the operation has none: ``old`` on insert, ``new`` on delete).

    Example::

        @dataclass
        class AuthorTriggerChannel(TriggerChannel):
            model = Author
            lock_notifications = True
    """

    model: ClassVar[type[models.Model]]
    old: models.Model | None = None
    new: models.Model | None = None

    @classmethod
    def get_model(cls) -> type[models.Model]:
        model = getattr(cls, "model", None)
        if not (isinstance(model, type) and issubclass(model, models.Model)):
            raise ChannelDefinitionError(
                f"Trigger channel {cls.name()} has no model: set `model = YourModel` in its body."
            )
        return model

    @classmethod
    def callback_kwargs(cls, payload: dict[str, Any]) -> dict[str, Any]:
        decoder = codec.row_decoder(cls.get_model())
        return {
            "old": decoder.decode(payload.get("old")),
            "new": decoder.decode(payload.get("new")),
        }


def locate_channel(channel: type[BaseChannel] | str) -> type[BaseChannel]:
    """Return the channel class for a class or its dotted path.

    Raises:
        ChannelNotFound: when the path cannot be imported or does not name a channel.
    """
    if isinstance(channel, str):
        try:
            located = import_string(channel)
        except ImportError:
            raise ChannelNotFound(channel) from None
        channel_cls: Any = located
    else:
        channel_cls = channel
    if not (isinstance(channel_cls, type) and issubclass(channel_cls, BaseChannel)):
        raise ChannelNotFound(
            str(channel),
            "it exists but is not a subclass of pgpubsub.Channel or pgpubsub.TriggerChannel",
        )
    return channel_cls


__all__ = [
    "BaseChannel",
    "Channel",
    "ChannelNotFound",
    "TriggerChannel",
    "locate_channel",
]
