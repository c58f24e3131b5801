"""Load the named SQL statements kept in the top-level ``sql/`` folder.

SQL lives in ``sql/*.sql`` so it can be read, reviewed and run in a plain ``duckdb`` shell.
Each file holds one or more statements, each introduced by a ``-- name: <name>`` line
(aiosql style). They are found one way: ``jules_cache/sql``, a link to ``sql/`` in a checkout.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

_NAME_LINE = re.compile(r"^--\s*name:\s*([A-Za-z0-9_]+)\s*$", re.MULTILINE)


def sql_dir() -> Path:
    """The folder holding the SQL files: ``jules_cache/sql``, a link to the top-level ``sql/``
    in a checkout and the folder itself in a wheel (the build follows the link)."""
    return Path(__file__).resolve().parent.parent / "sql"


@functools.cache
def load(filename: str) -> dict[str, str]:
    """Return ``{name: statement}`` for every named statement in ``sql/<filename>``."""
    text = (sql_dir() / filename).read_text(encoding="utf-8")
    parts = _NAME_LINE.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    statements = {name: body.strip() for name, body in zip(parts[1::2], parts[2::2])}
    if not statements:
        raise ValueError(f"sql/{filename} has no '-- name:' statements")
    return statements


def statement(filename: str, name: str) -> str:
    """Return one named statement from ``sql/<filename>``."""
    return load(filename)[name]
