"""What JSON holds as it is: task arguments and return values must round-trip through it."""

from __future__ import annotations

import json
import math
from typing import Any


def json_problem(value: Any, where: str) -> str | None:
    """Why ``value`` (named ``where`` in the message) does not round-trip through JSON, or
    None when it does. Tuples count as lists, as Django normalises them."""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is {value!r}, which JSON cannot hold"
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            problem = json_problem(item, f"{where}[{index}]")
            if problem is not None:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} has the key {key!r}, a {type(key).__name__}, not a str"
            problem = json_problem(item, f"{where}[{key!r}]")
            if problem is not None:
                return problem
        return None
    return f"{where} is a {type(value).__module__}.{type(value).__qualname__}"


def to_json(value: Any) -> str:
    """``value`` (checked with :func:`json_problem`) as JSON text."""
    return json.dumps(value, allow_nan=False)
