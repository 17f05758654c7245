"""Durations and sizes as a playbook spells them ('500ms', '16MB') and as people read them.

A bare number is refused where its unit would be a guess; sizes are 1024-based and
spelt like postgresql.conf, so a value can be copied from there.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["format_duration", "format_size", "parse_duration", "parse_size"]

_DURATION = re.compile(r"^\s*(?P<num>[-+]?\d+(?:\.\d+)?|[-+]?\.\d+)\s*(?P<unit>[a-zA-Z]+)\s*$")
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION_HINT = "use a number with a unit: 500ms, 2s, 1m"

_SIZE = re.compile(r"^\s*(?P<num>[-+]?\d+(?:\.\d+)?|[-+]?\.\d+)\s*(?P<unit>[a-zA-Z]*)\s*$")
# 1024-based and spelled like postgresql.conf, so a value can be copied from there.
_SIZE_UNITS = {"": 1, "B": 1, "kB": 1024, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_SIZE_HINT = "use a number of bytes or a number with a unit: 512kB, 16MB, 1GB"


def parse_duration(text: str | float) -> float:
    """Seconds in a duration such as '500ms', '2s', '1.5s', '1m', '250us' or '1h'.

    A bare number is refused: in a playbook '2' could as well mean milliseconds.
    """
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError(f"{_short(text)} is not a duration — {_DURATION_HINT}")
    if isinstance(text, int | float) or _is_number(text):
        raise ValueError(f"{text!r} needs a unit such as 500ms or 2s")
    match = _DURATION.match(text)
    if not match or match["unit"] not in _DURATION_UNITS:
        raise ValueError(f"{text!r} is not a duration — {_DURATION_HINT}")
    return float(match["num"]) * _DURATION_UNITS[match["unit"]]


def parse_size(text: str | int) -> int:
    """Bytes in a size such as '16MB', '512kB' or 1048576 (a plain integer is bytes)."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError(f"{_short(text)} is not a size — {_SIZE_HINT}")
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match or match["unit"] not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size — {_SIZE_HINT}")
    number = float(match["num"]) * _SIZE_UNITS[match["unit"]]
    if not match["unit"] and not number.is_integer():
        raise ValueError(f"{text!r} is not a whole number of bytes — {_SIZE_HINT}")
    return round(number)


def format_duration(seconds: float) -> str:
    """A duration for people: '250 us', '220 ms', '1.5 s', '2.5 min', '1.2 h'."""
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    if seconds == 0:
        text = "0 ms"
    elif round(seconds * 1e6) < 1000:
        text = f"{round(seconds * 1e6)} us"
    elif round(seconds * 1e3) < 1000:
        text = f"{round(seconds * 1e3)} ms"
    elif seconds < 60:
        text = f"{_trim(seconds, 2)} s"
    elif seconds < 3600:
        text = f"{_trim(seconds / 60, 1)} min"
    else:
        text = f"{_trim(seconds / 3600, 1)} h"
    return sign + text


def format_size(size: int) -> str:
    """A size for people, 1024-based like Postgres: '512 B', '16.0 MB', '1.5 GB'."""
    sign, size = ("-", -size) if size < 0 else ("", size)
    if size < 1024:
        return f"{sign}{size} B"
    for unit in ("kB", "MB", "GB"):
        size /= 1024
        if size < 1024:
            return f"{sign}{size:.1f} {unit}"
    return f"{sign}{size / 1024:.1f} TB"


def _trim(number: float, places: int) -> str:
    return f"{number:.{places}f}".rstrip("0").rstrip(".")


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


# ---------------------------------------------------------------------------
# What a value is, in the playbook's terms (for the messages here and in the models)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _short(value: Any) -> str:
    return repr(value) if isinstance(value, str) else _kind(value)
