"""One duration syntax for every option and setting: ``6h``, ``30m``, ``7d``, ``2w``, seconds.

GC's ``--grace``, check's ``--grace``, ``ls --since`` and ``store.gc(grace=...)`` all parse
through ``parse_duration``, so a value that works in one place works in all of them.
"""

from __future__ import annotations

import re
from datetime import timedelta

from jules_cache.errors import InvalidInput

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SYNTAX = "a number with an optional unit s, m, h, d or w (e.g. 6h, 30m, 7d, 3600)"


def parse_duration(value: float | str | timedelta) -> float:
    """'6h' / '90m' / '2d' / '1w' / '3600' / a number of seconds / a timedelta -> seconds."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(str(value))
        if not match:
            raise InvalidInput(f"duration {value!r} is not a duration; write {SYNTAX}")
        seconds = float(match.group(1)) * _SECONDS[match.group(2).lower()]
    if not seconds >= 0:  # also refuses NaN
        raise InvalidInput(f"duration must be >= 0, not {value!r}")
    return seconds


__all__ = ["SYNTAX", "parse_duration"]
