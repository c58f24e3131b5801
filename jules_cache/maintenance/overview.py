"""A local root's overview rows (``FeatureStore.overview``): read-only, one shared manifest
hold, three queries (``sql/overview.sql``, and GC's own ``last_run`` in ``sql/gc.sql``).
A shared root reads the same statements from its PostgreSQL catalog (``sql/postgres/``).
"""

from __future__ import annotations

from typing import Any

from jules_cache.storage.manifest import Manifest

OverviewRows = tuple[tuple[Any, ...], list[tuple[Any, ...]], dict[str, Any] | None]


def overview_rows(manifest: Manifest) -> OverviewRows:
    """The totals row, one row per feature and symbol, and the last GC run (None: never)."""
    with manifest.read() as con:
        totals = manifest.execute(con, "overview.sql", "totals").fetchone()
        groups = manifest.execute(con, "overview.sql", "by_feature_symbol").fetchall()
        cursor = manifest.execute(con, "gc.sql", "last_run")
        columns = [d[0] for d in cursor.description]
        last = cursor.fetchone()
    assert totals is not None  # an aggregate without GROUP BY returns exactly one row
    return totals, groups, dict(zip(columns, last, strict=True)) if last is not None else None


__all__ = ["OverviewRows", "overview_rows"]
