"""Plain-text tables and human-readable sizes and ages for the CLI."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")
_SIGNIFICANT = 4  # a return of 0.000123 must not print as 0.000


def human_bytes(size: float) -> str:
    """1536 -> '1.5 KB' (powers of 1024, one decimal)."""
    value = float(size)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_age(moment: datetime | None, now: datetime) -> str:
    """How long ago ``moment`` was, in the largest sensible unit ('3m', '2h', '5d')."""
    if moment is None:
        return "-"
    seconds = max((now - moment).total_seconds(), 0.0)
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f}{unit}"
    return f"{seconds:.0f}s"


def human_number(value: float) -> str:
    """A float with at least 4 significant digits: 0.000123 -> '0.000123', 12.5 -> '12.500',
    1234567.8 -> '1,234,568', 3.2e-09 -> '3.2e-09' (never '0.000' or '-0.000')."""
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 1:
        return f"{value:.3f}"
    return f"{value:.{_SIGNIFICANT}g}"


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: wide (East Asian) characters 2, combining marks 0."""
    width = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Align ``rows`` under ``headers``; numbers right-aligned, text left-aligned, by display
    width (so ``日本`` takes two columns per character)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(display_width(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [
        any(_is_number(row[i]) for row in rows)
        and all(_is_number(row[i]) or row[i] is None for row in rows)
        for i in range(len(headers))
    ]
    lines = []
    for index, row in enumerate(cells):
        parts = []
        for i, (value, width) in enumerate(zip(row, widths)):
            padding = " " * (width - display_width(value))
            parts.append(padding + value if numeric[i] else value + padding)
        lines.append("  ".join(parts).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return human_number(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "-" if value is None else str(value)
