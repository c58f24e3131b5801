"""The API edge: every public argument checked by type and value, once, where it enters.

Each check returns the value (normalised where that is harmless) or raises ``InvalidInput``
naming the argument, so nothing below the façade meets a ``None`` where a key belongs, an int
where a flag belongs, or a NUL in a name it would store.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

from jules_cache._durations import parse_duration
from jules_cache.errors import InvalidInput
from jules_cache.fingerprints.keys import require_utf8

KEY_PREFIX_MIN = 6  # as `ls` prints keys and `rm --key` takes them


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be True or False, not {value!r}")
    return value


def text(name: str, value: Any, *, one_line: bool = False) -> str:
    """A non-empty str with a UTF-8 form and no NUL (``one_line``: no line break either)."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{name} must be a non-empty str, not {value!r}")
    if "\0" in value or (one_line and ("\n" in value or "\r" in value)):
        what = "a NUL character" if "\0" in value else "a line break"
        raise InvalidInput(f"{name} {value!r} contains {what}; give one line of plain text")
    return require_utf8(value, name)


def optional_text(name: str, value: Any, *, one_line: bool = False) -> str | None:
    return None if value is None else text(name, value, one_line=one_line)


def key_prefix(value: Any) -> str:
    """A key, or a prefix of one of at least ``KEY_PREFIX_MIN`` characters."""
    key = text("key", value, one_line=True)
    if len(key) < KEY_PREFIX_MIN:
        raise InvalidInput(
            f"key prefix {key!r} is too short; give at least {KEY_PREFIX_MIN} characters"
        )
    return key


def seconds(name: str, value: Any) -> float:
    """A finite number of seconds >= 0."""
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise InvalidInput(f"{name} must be a number of seconds >= 0, not {value!r}")
    return float(value)


def count(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"{name} must be an int >= 0, not {value!r}")
    return value


def strings(name: str, value: Any) -> Any:
    """None, a str, or an iterable of str (a symbol filter, a version filter)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray) or not isinstance(value, Iterable):
        raise InvalidInput(f"{name} must be a str or a list of str, not {value!r}")
    values = list(value)
    if not all(isinstance(item, str) for item in values):
        raise InvalidInput(f"{name} must be a str or a list of str, not {value!r}")
    return values


def config_keys(name: str, value: Any) -> frozenset[str]:
    """None or a list of non-empty str (config keys): a lone str is refused, not split into
    characters (``ignore="verbose"`` would otherwise ignore the keys "v", "e", ...)."""
    if value is None:
        return frozenset()
    if isinstance(value, str | bytes | bytearray) or not isinstance(value, Iterable):
        raise InvalidInput(f"{name} must be a list of config keys (str), not {value!r}")
    keys = list(value)
    for key in keys:
        if not isinstance(key, str) or not key:
            raise InvalidInput(f"{name} must be a list of non-empty str, not {value!r}")
    return frozenset(keys)


def expiry(name: str, value: Any) -> float | None:
    """None (never expires) or a duration > 0: seconds, '7d', '6h', or a timedelta."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real | str | timedelta):
        raise InvalidInput(
            f"{name} must be seconds, a duration such as '7d', or None; not {value!r}"
        )
    try:
        seconds = parse_duration(value)  # type: ignore[arg-type]
    except InvalidInput as exc:
        raise InvalidInput(f"{name}: {exc}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInput(f"{name} must be a duration > 0 (or None: never), not {value!r}")
    return seconds


def moment(name: str, value: Any) -> datetime | date | None:
    if value is not None and not isinstance(value, datetime | date):
        raise InvalidInput(f"{name} must be a datetime (naive UTC) or None, not {value!r}")
    return value


__all__ = [
    "config_keys",
    "count",
    "expiry",
    "flag",
    "key_prefix",
    "moment",
    "optional_text",
    "seconds",
    "strings",
    "text",
]
