"""Channels: the typed dataclasses that name a message stream and describe its payload.

A :class:`Channel` carries typed fields sent by :func:`pgpubsub.notify`; a
:class:`TriggerChannel` names a model and carries the ``old`` and ``new`` state of a row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import re
import sys
import typing
import warnings
from typing import Any, ClassVar

from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.utils.module_loading import import_string

from pgpubsub import codec
from pgpubsub.conf import get_settings
from pgpubsub.exceptions import ChannelDefinitionError, ChannelNotFound, PayloadError

_PG_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
#: The length of Notification.channel: 1.3 could not store a longer dotted path.
_CHANNEL_COLUMN_LENGTH = 63


@dataclasses.dataclass
class BaseChannel:
    """Common behaviour of every channel class."""

    #: Store each message so exactly one listener process handles it.
    lock_notifications: ClassVar[bool] = False
    #: Handle the messages with the same value of this field one at a time, in the order
    #: they were stored (lockable channels only): a dataclass field of a :class:`Channel`,
    #: a model field (typically ``"pk"``) of a :class:`TriggerChannel`.
    ordering_key: ClassVar[str | None] = None
    #: Seconds the callbacks of one message may run (None: no limit); when not set,
    #: ``PGPUBSUB_MESSAGE_TIME_LIMIT`` applies. See :mod:`pgpubsub.timelimit`.
    message_time_limit: ClassVar[float | None]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._check_message_time_limit()

    @classmethod
    def _check_message_time_limit(cls) -> None:
        """Refuse a ``message_time_limit`` that is not None or a number of seconds above 0."""
        if "message_time_limit" not in vars(cls):
            return
        limit = cls.message_time_limit
        if limit is None or (
            isinstance(limit, (int, float))
            and not isinstance(limit, bool)
            and math.isfinite(limit)
            and limit > 0
        ):
            return
        raise ChannelDefinitionError(
            f"message_time_limit of channel {cls.__module__}.{cls.__qualname__} must be a "
            f"number of seconds greater than 0, or None for no limit; got {limit!r}."
        )

    @classmethod
    def time_limit(cls, default: float | None) -> float | None:
        """Seconds the callbacks of one message may run: the channel's own
        ``message_time_limit`` if it sets one, else ``default`` (the setting)."""
        limit = getattr(cls, "message_time_limit", default)
        return None if limit is None else float(limit)

    @classmethod
    def _check_ordering_key(cls, known: str) -> str | None:
        """The ordering key, checked to be a string on a lockable channel; None if unset."""
        key = cls.ordering_key
        if key is None:
            return None
        where = f"{cls.__module__}.{cls.__qualname__}"
        if not isinstance(key, str) or not key:
            raise ChannelDefinitionError(
                f"ordering_key of channel {where} must be the name of {known}, got {key!r}."
            )
        if not cls.lock_notifications:
            raise ChannelDefinitionError(
                f"Channel {where} has ordering_key = {key!r} but is not lockable: only stored "
                "messages can be handled in order. Set `lock_notifications = True`."
            )
        return key

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
    def stored_aliases(cls) -> tuple[str, ...]:
        """Names other than :meth:`listen_safe_name` that its stored notifications may carry."""
        return ()

    @classmethod
    def callback_kwargs(cls, payload: dict[str, Any]) -> dict[str, Any]:
        """Decode a payload into the keyword arguments a callback receives."""
        raise NotImplementedError

    @classmethod
    def callback_parameters(cls, pass_context: bool = False) -> tuple[str, ...]:
        """The names of the keyword arguments every callback of the channel is called with.

        ``pass_context``: ``PGPUBSUB_PASS_CONTEXT_TO_LISTENERS``.
        """
        raise NotImplementedError

    @classmethod
    def deserialize(cls, payload: dict[str, Any] | str) -> dict[str, Any]:
        """Deprecated django-pgpubsub 1.3 API: decode a payload (a dict or its JSON text).

        Use :meth:`callback_kwargs` with the payload as a dict. Like 1.3, trigger channels
        add ``context`` when ``PGPUBSUB_PASS_CONTEXT_TO_LISTENERS`` is on.
        """
        warnings.warn(
            f"{cls.__qualname__}.deserialize() is deprecated: use "
            f"{cls.__qualname__}.callback_kwargs(payload), with the payload as a dict.",
            DeprecationWarning,
            stacklevel=2,
        )
        if isinstance(payload, str):
            payload = (
                codec.loads_exact(payload) if cls.is_trigger_channel() else json.loads(payload)
            )
        if not isinstance(payload, dict):
            raise PayloadError(f"A payload of {cls.name()} must be a JSON object, got {payload!r}")
        kwargs = cls.callback_kwargs(payload)
        if cls.is_trigger_channel() and get_settings().pass_context_to_listeners:
            kwargs["context"] = payload.get("context") or {}
        return kwargs


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
        key = cls._check_ordering_key("one of its fields")
        if key is not None and key not in cls._field_codecs:
            raise ChannelDefinitionError(
                f"ordering_key of channel {cls.__module__}.{cls.__qualname__} is {key!r}, "
                f"which is not one of its fields ({', '.join(cls._field_codecs) or 'none'})."
            )

    @classmethod
    def ordering_key_of(cls, payload: dict[str, Any]) -> str | None:
        """The text of a payload's ordering key (None without one, or when it is None)."""
        if cls.ordering_key is None:
            return None
        return key_text(payload["kwargs"].get(cls.ordering_key))

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

    def serialize(self) -> str:
        """Deprecated django-pgpubsub 1.3 API: this message's payload as JSON text.

        Use :func:`pgpubsub.notify` to send, or :meth:`build_payload` for the payload.

        Raises:
            PayloadError: a field's value does not match its declared type.
        """
        cls = type(self)
        warnings.warn(
            f"{cls.__qualname__}.serialize() is deprecated: use pgpubsub.notify() to send, or "
            f"{cls.__qualname__}.build_payload(fields) for the payload.",
            DeprecationWarning,
            stacklevel=2,
        )
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(cls)}
        return codec.dumps(cls.build_payload(values))

    @classmethod
    def stored_aliases(cls) -> tuple[str, ...]:
        """The dotted path, under which django-pgpubsub 1.3's ``notify()`` stored messages.

        1.3 code still running beside pgpubsub 2 (a rolling deploy) keeps storing them so.
        """
        name = cls.name()
        return (name,) if cls.lock_notifications and len(name) <= _CHANNEL_COLUMN_LENGTH else ()

    @classmethod
    def callback_parameters(cls, pass_context: bool = False) -> tuple[str, ...]:
        # Every field, even one a stored message lacks: callback_kwargs fills in its default.
        return tuple(field.name for field in dataclasses.fields(cls))

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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # django-pgpubsub 1.3 also read `model: Author` (an annotation) as `model = Author`:
        # take it as the model rather than as a dataclass field.
        # The class's own dict, not a copy: dataclass() reads the fields from it afterwards.
        annotations = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
        if "model" in annotations and "model" not in cls.__dict__:
            hint = annotations.pop("model")
            if isinstance(hint, str):
                module = sys.modules.get(cls.__module__)
                hint = vars(module).get(hint, hint) if module is not None else hint
            if not (isinstance(hint, type) and issubclass(hint, models.Model)):
                raise ChannelDefinitionError(
                    f"Trigger channel {cls.__module__}.{cls.__qualname__} annotates `model` "
                    f"with {hint!r}, which is not a model class: write `model = YourModel`."
                )
            cls.model = hint

        key = cls._check_ordering_key("a field of its model, for example 'pk'")
        if key is not None:
            cls._ordering_column = _model_column(cls, key)

    #: The table column of ``ordering_key`` (``"id"`` for ``"pk"``), set at class definition.
    _ordering_column: ClassVar[str | None] = None

    @classmethod
    def ordering_column(cls) -> str | None:
        """The column whose value is the ordering key of each message (of the new row, or of
        the old one for a delete); None without ``ordering_key``."""
        return cls._ordering_column

    @classmethod
    def get_model(cls) -> type[models.Model]:
        model = getattr(cls, "model", None)
        if not (isinstance(model, type) and issubclass(model, models.Model)):
            raise ChannelDefinitionError(
                f"Trigger channel {cls.name()} has no model: set `model = YourModel` in its body."
            )
        return model

    @classmethod
    def callback_parameters(cls, pass_context: bool = False) -> tuple[str, ...]:
        # Only trigger payloads carry a context (django-pgpubsub 1.3 passed it to them only).
        return ("old", "new", "context") if pass_context else ("old", "new")

    @classmethod
    def callback_kwargs(cls, payload: dict[str, Any]) -> dict[str, Any]:
        missing = [key for key in ("app", "model") if key not in payload]
        if missing:
            raise PayloadError(
                f"A payload of trigger channel {cls.name()} has no {' and no '.join(missing)}: "
                "pgpubsub triggers always write both, so it was not written by one (or was "
                "edited). Fix or delete the stored notification."
            )
        decoder = codec.row_decoder(cls.get_model())
        return {
            "old": decoder.decode(payload.get("old")),
            "new": decoder.decode(payload.get("new")),
        }


def key_text(value: Any) -> str | None:
    """An encoded field value as ordering-key text: what PostgreSQL's ``->>`` gives for it
    (a string as it is, anything else as compact JSON), so that keys compare equal."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _model_column(channel: type[TriggerChannel], key: str) -> str:
    where = f"{channel.__module__}.{channel.__qualname__}"
    model = getattr(channel, "model", None)
    if not (isinstance(model, type) and issubclass(model, models.Model)):
        raise ChannelDefinitionError(
            f"Trigger channel {where} has ordering_key = {key!r} but no model: set "
            "`model = YourModel` in its body."
        )
    try:
        field = model._meta.pk if key == "pk" else model._meta.get_field(key)
    except FieldDoesNotExist:
        field = None
    column = getattr(field, "column", None)
    if field is None or not column:
        names = sorted(f.name for f in model._meta.concrete_fields)
        raise ChannelDefinitionError(
            f"ordering_key of trigger channel {where} is {key!r}, which is not a column of "
            f"{model.__name__}: use 'pk' or one of {', '.join(names)}."
        )
    return str(column)


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


def __getattr__(name: str) -> Any:
    # django-pgpubsub 1.3 defined it here; it now lives in pgpubsub.notify, which imports
    # this module, so it is imported on use.
    if name == "set_notification_context":
        from pgpubsub.notify import set_notification_context

        return set_notification_context
    raise AttributeError(f"module 'pgpubsub.channel' has no attribute {name!r}")


__all__ = [
    "BaseChannel",
    "Channel",
    "ChannelNotFound",
    "TriggerChannel",
    "locate_channel",
]
