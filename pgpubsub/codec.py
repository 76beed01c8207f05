"""The payload codec: channel fields to JSON and back, and database rows to model instances.

Codecs are built once per channel field (when the channel class is defined) and once per
model (on first use), so decoding a message does no type inspection.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import types
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from pgpubsub.exceptions import ChannelDefinitionError, PayloadError

Converter = Callable[[Any], Any]


@dataclass(frozen=True)
class FieldCodec:
    """How one channel field travels: ``encode`` to JSON-ready data, ``decode`` back."""

    encode: Converter
    decode: Converter
    description: str


class _UnsupportedType(Exception):
    pass


def _identity(value: Any) -> Any:
    return value


def _expect(kinds: tuple[type, ...], name: str) -> Converter:
    def check(value: Any) -> Any:
        if not isinstance(value, kinds):
            raise TypeError(f"expected {name}, got {type(value).__name__} {value!r}")
        return value

    return check


def _encode_decimal(value: Any) -> str:
    if isinstance(value, (Decimal, int)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return str(Decimal(value))
    raise TypeError(f"expected Decimal, got {type(value).__name__} {value!r}")


def _decode_decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _encode_uuid(value: Any) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        return str(uuid.UUID(value))
    raise TypeError(f"expected UUID, got {type(value).__name__} {value!r}")


def _decode_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _encode_datetime(value: Any) -> str:
    if not isinstance(value, datetime.datetime):
        raise TypeError(f"expected datetime, got {type(value).__name__} {value!r}")
    return value.isoformat()


def _decode_datetime(value: Any) -> datetime.datetime:
    text = str(value)
    # Python 3.10's fromisoformat does not read a trailing "Z".
    return datetime.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)


def _encode_date(value: Any) -> str:
    if isinstance(value, datetime.datetime):
        return value.date().isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    raise TypeError(f"expected date, got {type(value).__name__} {value!r}")


def _decode_date(value: Any) -> datetime.date:
    return datetime.date.fromisoformat(str(value))


def _encode_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise TypeError(f"expected float, got {type(value).__name__} {value!r}")
    return float(value)


def _encode_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected int, got {type(value).__name__} {value!r}")
    return value


def _refusing_null(decode: Converter) -> Converter:
    # str(None) would be "None" and bool(None) False: a null is only valid for Optional[...].
    def decode_value(value: Any) -> Any:
        if value is None:
            raise TypeError("null is only valid for an Optional[...] field")
        return decode(value)

    return decode_value


_SCALARS: dict[Any, FieldCodec] = {
    int: FieldCodec(_encode_int, _refusing_null(int), "int"),
    float: FieldCodec(_encode_float, _refusing_null(float), "float"),
    str: FieldCodec(_expect((str,), "str"), _refusing_null(str), "str"),
    bool: FieldCodec(_expect((bool,), "bool"), _refusing_null(bool), "bool"),
    Decimal: FieldCodec(_encode_decimal, _refusing_null(_decode_decimal), "Decimal"),
    uuid.UUID: FieldCodec(_encode_uuid, _refusing_null(_decode_uuid), "UUID"),
    datetime.datetime: FieldCodec(_encode_datetime, _refusing_null(_decode_datetime), "datetime"),
    datetime.date: FieldCodec(_encode_date, _refusing_null(_decode_date), "date"),
}

# JSON object keys are strings: these turn a key into text and back.
_KEY_CODECS: dict[Any, FieldCodec] = {
    str: _SCALARS[str],
    int: FieldCodec(lambda v: str(_encode_int(v)), int, "int"),
    float: FieldCodec(lambda v: repr(_encode_float(v)), float, "float"),
    Decimal: _SCALARS[Decimal],
    uuid.UUID: _SCALARS[uuid.UUID],
    datetime.datetime: _SCALARS[datetime.datetime],
    datetime.date: _SCALARS[datetime.date],
}

_PASSTHROUGH = FieldCodec(_identity, _identity, "JSON value")
_UNION_TYPES: tuple[Any, ...] = (typing.Union, types.UnionType)


def _optional(inner: FieldCodec) -> FieldCodec:
    return FieldCodec(
        lambda v: None if v is None else inner.encode(v),
        lambda v: None if v is None else inner.decode(v),
        f"Optional[{inner.description}]",
    )


def _sequence(inner: FieldCodec, container: type) -> FieldCodec:
    def encode(value: Any) -> list[Any]:
        if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
            raise TypeError(f"expected {container.__name__}, got {type(value).__name__}")
        return [inner.encode(item) for item in value]

    return FieldCodec(
        encode,
        lambda v: container(inner.decode(item) for item in v),
        f"{container.__name__}[{inner.description}]",
    )


def _fixed_tuple(items: list[FieldCodec]) -> FieldCodec:
    def encode(value: Any) -> list[Any]:
        if len(value) != len(items):
            raise TypeError(f"expected a tuple of {len(items)} items, got {len(value)}")
        return [codec.encode(item) for codec, item in zip(items, value, strict=False)]

    return FieldCodec(
        encode,
        lambda v: tuple(codec.decode(item) for codec, item in zip(items, v, strict=False)),
        f"tuple[{', '.join(codec.description for codec in items)}]",
    )


def _mapping(key: FieldCodec, value: FieldCodec) -> FieldCodec:
    def encode(data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise TypeError(f"expected dict, got {type(data).__name__}")
        return {key.encode(k): value.encode(v) for k, v in data.items()}

    return FieldCodec(
        encode,
        lambda d: {key.decode(k): value.decode(v) for k, v in d.items()},
        f"dict[{key.description}, {value.description}]",
    )


def _tuple_codec(hint: Any, args: tuple[Any, ...]) -> FieldCodec:
    """The codec of ``tuple[X, ...]``, ``tuple[X, Y]`` or ``typing.Tuple[X]``."""
    variable = len(args) == 2 and args[1] is Ellipsis
    # typing.Tuple[X], django-pgpubsub 1.3's spelling, took tuples of any length there; the
    # builtin tuple[X] means exactly one item.
    legacy = len(args) == 1 and not isinstance(hint, types.GenericAlias)
    if variable or legacy:
        return _sequence(codec_for_type(args[0]), tuple)
    return _fixed_tuple([codec_for_type(arg) for arg in args])


def codec_for_type(hint: Any) -> FieldCodec:
    """Return the codec of a type annotation, or raise ``_UnsupportedType``."""
    if hint in _SCALARS:
        return _SCALARS[hint]
    if hint in (Any, list, dict, tuple, set, frozenset):
        return _PASSTHROUGH
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in _UNION_TYPES:
        members = [arg for arg in args if arg is not type(None)]
        if len(members) == 1 and len(args) == 2:
            return _optional(codec_for_type(members[0]))
        raise _UnsupportedType(f"{hint!r}: only Optional[X] unions can be decoded unambiguously")
    if origin in (list, set, frozenset) and len(args) == 1:
        return _sequence(codec_for_type(args[0]), origin)
    if origin is tuple:
        return _tuple_codec(hint, args)
    if origin is dict and len(args) == 2:
        if args[0] not in _KEY_CODECS:
            raise _UnsupportedType(f"dict key type {args[0]!r}")
        return _mapping(_KEY_CODECS[args[0]], codec_for_type(args[1]))
    raise _UnsupportedType(repr(hint))


def build_channel_codecs(channel: type, hints: dict[str, Any]) -> dict[str, FieldCodec]:
    """Build the codec of every field of ``channel``; refuse a type that cannot travel."""
    codecs = {}
    for name, hint in hints.items():
        if typing.get_origin(hint) is typing.ClassVar or hint is typing.ClassVar:
            continue
        try:
            codecs[name] = codec_for_type(hint)
        except _UnsupportedType as exc:
            supported = ", ".join(codec.description for codec in _SCALARS.values())
            raise ChannelDefinitionError(
                f"Field {name!r} of channel {channel.__module__}.{channel.__qualname__} has "
                f"type {hint!r}, which pgpubsub cannot send ({exc}). Use one of {supported}, "
                "Optional[...] of those, or list/tuple/set/dict of those."
            ) from None
    return codecs


def encode_fields(
    channel_name: str, codecs: dict[str, FieldCodec], values: dict[str, Any]
) -> dict[str, Any]:
    """Encode a channel's field values to JSON-ready data, naming the field that is wrong."""
    encoded = {}
    for name, value in values.items():
        try:
            encoded[name] = codecs[name].encode(value)
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise PayloadError(
                f"Field {name!r} of channel {channel_name} is declared as "
                f"{codecs[name].description} but got {value!r}: {exc}"
            ) from None
        problem = jsonb_problem(encoded[name])
        if problem is not None:
            raise PayloadError(
                f"Field {name!r} of channel {channel_name} holds a value PostgreSQL's jsonb "
                f"cannot store: {problem}. Remove that value or encode it differently."
            )
    return encoded


def decode_fields(
    channel_name: str, codecs: dict[str, FieldCodec], data: dict[str, Any]
) -> dict[str, Any]:
    """Decode the fields of a channel payload; fields the channel no longer has are ignored."""
    decoded = {}
    for name, value in data.items():
        codec = codecs.get(name)
        if codec is None:
            continue
        try:
            decoded[name] = codec.decode(value)
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise PayloadError(
                f"Field {name!r} of channel {channel_name} holds {value!r}, which is not a "
                f"{codec.description}: {exc}"
            ) from None
    return decoded


def dumps(data: Any) -> str:
    """Serialize JSON-ready data compactly."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


# What PostgreSQL's jsonb refuses in text: NUL, and UTF-16 surrogates (not characters).
_JSONB_UNSAFE_TEXT = re.compile("[\x00\ud800-\udfff]")


def _text_problem(text: str) -> str | None:
    found = _JSONB_UNSAFE_TEXT.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character (\\x00)"
    return f"contains an unpaired surrogate ({found.group()!r})"


def jsonb_problem(value: Any) -> str | None:
    """Say what PostgreSQL's ``jsonb`` would refuse in JSON-ready ``value``, and where.

    jsonb stores no NaN or infinity, and its text holds neither NUL characters nor unpaired
    surrogates, though Python's ``json`` writes all of them. Returns ``None`` when ``value`` can
    be stored, else a description such as ``"['tags'][2] contains a NUL character (\\x00)"``.
    """
    pending: list[tuple[Any, str]] = [(value, "")]
    while pending:
        item, where = pending.pop()
        problem = None
        if isinstance(item, str):
            problem = _text_problem(item)
        elif isinstance(item, float) and not math.isfinite(item):
            problem = f"is {item!r}"
        elif isinstance(item, dict):
            for key, child in item.items():
                key_problem = _text_problem(key) if isinstance(key, str) else None
                if key_problem is not None:
                    return f"the key {key!r}{' in ' + where if where else ''} {key_problem}"
                pending.append((child, f"{where}[{key!r}]"))
        elif isinstance(item, (list, tuple)):
            pending.extend((child, f"{where}[{index}]") for index, child in enumerate(item))
        if problem is not None:
            return f"{where or 'the value'} {problem}"
    return None


_EXACT_DECODER = json.JSONDecoder(parse_float=Decimal)


def loads_exact(text: str | bytes) -> Any:
    """Parse JSON keeping every number with a fraction as an exact ``Decimal``."""
    return _EXACT_DECODER.decode(text if isinstance(text, str) else text.decode())


# --- database rows ---------------------------------------------------------------------


def _floats_for_decimals(value: Any) -> Any:
    """Undo ``loads_exact`` inside a JSONField, whose floats are Python floats."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list):
        return [_floats_for_decimals(item) for item in value]
    if isinstance(value, dict):
        return {key: _floats_for_decimals(item) for key, item in value.items()}
    return value


def _column_converter(field: models.Field[Any, Any]) -> Converter:
    if isinstance(field, models.JSONField):
        decoder = field.decoder
        if decoder is None:
            return _floats_for_decimals
        return lambda v: json.loads(json.dumps(_floats_for_decimals(v)), cls=decoder)
    if isinstance(field, models.BinaryField):
        return lambda v: bytes.fromhex(v[2:]) if isinstance(v, str) and v[:2] == "\\x" else v
    return field.to_python


_MISSING = object()


class ModelRowDecoder:
    """Turns a row as PostgreSQL's ``to_jsonb`` writes it into an unsaved model instance.

    Columns are matched to fields by their database column name; a column the model no
    longer has is ignored and a field of the model's own table that the row lacks gets its
    default, so stored messages survive migrations. An inherited field (multi-table
    inheritance) that the row lacks is deferred: Django loads it on access. Triggers
    generated by pgpubsub 2.0 before version 2 of its SQL functions sent only the child's
    own table.
    """

    def __init__(self, model: type[models.Model]) -> None:
        self.model = model
        fields = list(model._meta.concrete_fields)
        # Instances are built with positional values in concrete-field order: Django's
        # fastest constructor path (no keyword or descriptor handling).
        self._fields = fields
        self._columns: dict[str, tuple[int, str, Converter]] = {
            str(field.column): (position, field.name, _column_converter(field))
            for position, field in enumerate(fields)
        }
        # A multi-table child's row holds only its own table: its ancestors share its pk.
        attnames = [field.attname for field in fields]
        ancestor_pks = [parent._meta.pk.attname for parent in model._meta.get_parent_list()]
        self._ancestor_positions = [attnames.index(attname) for attname in ancestor_pks]
        pk = model._meta.pk
        self._pk_position = attnames.index(pk.attname) if pk is not None else None
        own = set(model._meta.local_concrete_fields)
        self._inherited_positions = {
            position for position, field in enumerate(fields) if field not in own
        }

    def decode(self, row: dict[str, Any] | None) -> models.Model | None:
        if row is None:
            return None
        values: list[Any] = [_MISSING] * len(self._fields)
        for column, raw in row.items():
            spec = self._columns.get(column)
            if spec is None:
                continue
            position, name, convert = spec
            try:
                values[position] = None if raw is None else convert(raw)
            except (ValidationError, TypeError, ValueError, ArithmeticError) as exc:
                raise PayloadError(
                    f"Column {column!r} of {self.model._meta.label} holds {raw!r}, which "
                    f"field {name!r} cannot read: {exc}"
                ) from None
        if self._pk_position is not None and values[self._pk_position] is not _MISSING:
            for position in self._ancestor_positions:
                if values[position] is _MISSING:
                    values[position] = values[self._pk_position]
        for position, value in enumerate(values):
            if value is _MISSING:
                values[position] = (
                    models.DEFERRED
                    if position in self._inherited_positions
                    else self._fields[position].get_default()
                )
        return self.model(*values)


_row_decoders: dict[type[models.Model], ModelRowDecoder] = {}


def row_decoder(model: type[models.Model]) -> ModelRowDecoder:
    """The (cached) row decoder of ``model``."""
    decoder = _row_decoders.get(model)
    if decoder is None:
        decoder = _row_decoders[model] = ModelRowDecoder(model)
    return decoder
