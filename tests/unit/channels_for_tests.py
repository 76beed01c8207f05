"""Channels declared for the unit tests (module level, so string annotations resolve)."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Optional

from pgpubsub import Channel


class Opaque:
    """A type pgpubsub has no codec for."""


@dataclass
class EveryType(Channel):
    """Every supported field type; the annotations are strings (``from __future__``)."""

    number: int
    ratio: float
    text: str
    flag: bool
    amount: Decimal
    ident: uuid.UUID
    day: datetime.date
    moment: datetime.datetime
    names: list[str]
    pair: tuple[int, str]
    many: tuple[Decimal, ...]
    unique: set[uuid.UUID]
    frozen: frozenset[int]
    by_day: dict[datetime.date, list[Decimal]]
    by_number: dict[int, Optional[datetime.datetime]]  # noqa: UP045 (the typing spelling)
    maybe: int | None = None
    anything: Any = None
    raw_list: list = field(default_factory=list)  # a bare container travels as JSON
    label: str = "default label"
    extras: dict[str, int] = field(default_factory=dict)


@dataclass
class Bulletin(Channel):
    """A fan-out channel (the worker loop's unit tests)."""

    text: str


@dataclass
class Chore(Channel):
    """A lockable channel (the worker loop's unit tests)."""

    name: str
    lock_notifications = True
