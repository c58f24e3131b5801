"""What a cache holds, at a glance (``jules-cache overview``): entries and bytes in total and by
feature and symbol, the oldest and newest entries, and the last GC run.

Read-only: one shared manifest hold, three queries (``sql/overview.sql``, and GC's own
``last_run`` in ``sql/gc.sql``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jules_cache.models import _ToDict
from jules_cache.storage.layout import Layout
from jules_cache.storage.manifest import Manifest


@dataclass(frozen=True)
class GroupOverview(_ToDict):
    """The entries of one feature and symbol."""

    feature: str
    symbol: str
    entries: int
    bytes: int
    oldest: datetime | None
    newest: datetime | None
    last_access: datetime | None


@dataclass(frozen=True)
class Overview(_ToDict):
    """What the cache holds, and the last GC run (None if GC never ran)."""

    root: str
    entries: int
    bytes: int
    oldest_created: datetime | None
    newest_created: datetime | None
    least_recent_access: datetime | None
    most_recent_access: datetime | None
    groups: tuple[GroupOverview, ...]
    last_gc: dict[str, Any] | None


def overview(manifest: Manifest, layout: Layout) -> Overview:
    """Entries and bytes in total and by feature/symbol, oldest/newest, and the last GC run."""
    with manifest.read() as con:
        totals = manifest.execute(con, "overview.sql", "totals").fetchone()
        groups = manifest.execute(con, "overview.sql", "by_feature_symbol").fetchall()
        cursor = manifest.execute(con, "gc.sql", "last_run")
        columns = [d[0] for d in cursor.description]
        last = cursor.fetchone()
    assert totals is not None  # an aggregate without GROUP BY returns exactly one row
    entries, size, oldest, newest, least_recent, most_recent = totals
    return Overview(
        root=str(layout.root),
        entries=entries,
        bytes=size,
        oldest_created=oldest,
        newest_created=newest,
        least_recent_access=least_recent,
        most_recent_access=most_recent,
        groups=tuple(GroupOverview(*row) for row in groups),
        last_gc=dict(zip(columns, last, strict=True)) if last is not None else None,
    )


__all__ = ["GroupOverview", "Overview", "overview"]
