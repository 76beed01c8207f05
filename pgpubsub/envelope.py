"""What travels on a NOTIFY channel: the envelope of a fan-out message.

A lockable channel's NOTIFY carries nothing (an empty string): it only wakes the workers,
and the stored row is the message. A fan-out (not lockable) channel's NOTIFY carries the
message itself, in one of three shapes:

- ``{"p": PAYLOAD}``: the payload, inline;
- ``{"r": ID}``: a payload too large for NOTIFY (8000 bytes), stored in
  ``pgpubsub_broadcastpayload`` under ``ID`` for ``PGPUBSUB_BROADCAST_RETENTION`` seconds;
- ``PAYLOAD`` alone: sent by a django-pgpubsub 1.3 trigger, still accepted.

The envelopes are written by the SQL functions ``pgpubsub_send_v1`` (frozen in migration
``0007_reliable_delivery``) and ``pgpubsub_send_v2`` (:mod:`pgpubsub.functions`, migration
``0009``); :data:`PAYLOAD_KEY` and :data:`REFERENCE_KEY` are the Python side's one spelling of
their keys (a unit test checks that the SQL spells them the same). Anyone who can connect
can NOTIFY any channel, so :func:`decode` accepts any text and raises only
:class:`UnreadableEnvelope`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict

from pgpubsub.exceptions import PayloadError

#: The envelope key of an inline payload (``jsonb_build_object('p', ...)`` in 0007's SQL).
PAYLOAD_KEY = "p"
#: The envelope key of a stored payload's id (``jsonb_build_object('r', ...)`` in 0007's SQL).
REFERENCE_KEY = "r"

_MAX_REFERENCE = 2**63 - 1  # ids are bigint


class ChannelPayload(TypedDict):
    """The payload of a plain channel: its fields, encoded by :mod:`pgpubsub.codec`."""

    kwargs: dict[str, Any]


class TriggerPayload(TypedDict, total=False):
    """The payload of a trigger channel: the rows before and after, and the context."""

    app: str
    model: str
    trigger: str
    context: dict[str, Any] | None
    old: dict[str, Any] | None
    new: dict[str, Any] | None


#: What a callback's arguments are decoded from.
Payload = ChannelPayload | TriggerPayload | dict[str, Any]


class InlineEnvelope(TypedDict):
    p: Payload


class ReferenceEnvelope(TypedDict):
    r: int


@dataclass(frozen=True)
class Inline:
    """A decoded envelope that carried its payload."""

    payload: dict[str, Any]


@dataclass(frozen=True)
class Reference:
    """A decoded envelope naming a stored oversized payload."""

    id: int


class UnreadableEnvelope(PayloadError):
    """A NOTIFY on a fan-out channel is not an envelope pgpubsub wrote."""


def encode_inline(payload: Payload) -> str:
    """The NOTIFY text carrying ``payload`` inline (what ``pgpubsub_send_v1`` writes)."""
    envelope: InlineEnvelope = {PAYLOAD_KEY: payload}  # type: ignore[misc]
    return json.dumps(envelope, separators=(",", ":"))


def encode_reference(reference: int) -> str:
    """The NOTIFY text naming the stored payload ``reference``."""
    envelope: ReferenceEnvelope = {REFERENCE_KEY: reference}  # type: ignore[misc]
    return json.dumps(envelope, separators=(",", ":"))


def decode(text: str, parse: Callable[[str], Any] = json.loads) -> Inline | Reference:
    """Decode the NOTIFY text of a fan-out message, whatever its bytes.

    ``parse`` turns JSON text into Python values (trigger channels keep decimals exact).

    Raises:
        UnreadableEnvelope: ``text`` is not JSON, too deeply nested, or not one of the
            three shapes; the message says which.
    """
    try:
        data = parse(text)
    except Exception as exc:  # ValueError, RecursionError: the sender is not trusted
        raise UnreadableEnvelope(f"not JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise UnreadableEnvelope(f"a JSON {type(data).__name__}, not an object")
    if PAYLOAD_KEY in data:
        payload = data[PAYLOAD_KEY]
        if not isinstance(payload, dict):
            raise UnreadableEnvelope(f"{PAYLOAD_KEY!r} holds a {type(payload).__name__}")
        return Inline(payload)
    if REFERENCE_KEY in data:
        reference = data[REFERENCE_KEY]
        if type(reference) is not int or not 0 < reference <= _MAX_REFERENCE:
            raise UnreadableEnvelope(f"{REFERENCE_KEY!r} is not a stored payload's id")
        return Reference(reference)
    return Inline(data)  # a django-pgpubsub 1.3 trigger's bare payload


def excerpt(text: str, limit: int = 200) -> str:
    """``text`` for a log line: its start, and how long it was when it is cut."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
