"""The catalog seam: where a cache's rows live (entries, their input files, counters, view
names, GC runs), and its per-key locks.

Two implementations answer ``Catalog``, over the same tables and statement names (``sql/`` for
DuckDB, ``sql/postgres/`` for PostgreSQL):

- ``ManifestCatalog`` (``engine.manifest_catalog``: its removal takes the local root's view
  bookkeeping along): ``manifest.duckdb`` under its file lock, ``flock`` key locks: a local
  root's;
- ``PostgresCatalog`` (``storage.postgres_catalog``): a schema of a PostgreSQL database,
  advisory key locks: a cache many hosts share.

The protocol is the catalog's writes that must be one transaction (``publish``,
``flush_counts``, ``drop_entries``, ``delete_entries``), statements run by name (``read``,
``write``, ``transaction``), key locks, snapshots for SQL (``changes_since``) and upkeep.
What the engine reads of it is written once, below, as functions over ``read``: so each
catalog is told once, and what is read of it is told once too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from jules_cache.models import Entry, FeatureStats, SymbolStats

# The key lock one GC of a cache holds for its whole run (``locks/gc.lock`` on a local root):
# not a key (keys are 32 hex digits), so never taken for a stale key lock.
GC_LOCK = "gc"


class Rows(list[tuple[Any, ...]]):
    """A statement's rows, with its column names (empty for a statement returning none)."""

    def __init__(self, rows: Sequence[tuple[Any, ...]] = (), columns: Sequence[str] = ()):
        super().__init__(rows)
        self.columns = list(columns)


#: ``run(filename, name, params=None) -> Rows``: a statement inside ``Catalog.transaction``
Run = Callable[..., Rows]


@dataclass(frozen=True)
class CatalogChanges:
    """The catalog's tables since an earlier snapshot (``Catalog.changes_since``).

    Apply in this order: replace each ``replaced`` table; in each ``changed`` table delete the
    rows whose primary key (``keys``, columns in order) is in ``deleted`` (values as text) or in
    the changed rows, then insert the changed rows. Pass ``watermark`` to the next call.
    """

    watermark: int
    replaced: dict[str, Any]  # table -> pyarrow.Table, every row
    changed: dict[str, Any]  # table -> pyarrow.Table, rows written since (tables touched only)
    deleted: dict[str, list[tuple[str, ...]]]  # table -> primary keys, as text
    keys: dict[str, tuple[str, ...]]  # table -> its primary key columns


class Catalog(Protocol):
    """A cache's rows and key locks. Errors are the package's own: ``LockTimeout`` (a lock
    not had in time), ``ServiceUnavailable`` (the service is not answering), ``ManifestError``
    (a statement failed), ``InvalidInput`` (the catalog belongs to another root)."""

    #: where it lives, for messages (a path, or ``host:port/database``)
    address: str

    def migrate(self) -> int:
        """Create or upgrade the tables now (and bind them to the cache's root); return the
        schema version."""

    def read(self, filename: str, name: str, params: Mapping[str, Any] | None = None) -> Rows:
        """Run the reading statement ``name`` of ``filename``; return its rows."""

    def write(self, filename: str, name: str, params: Mapping[str, Any] | None = None) -> Rows:
        """Run the statement ``name`` of ``filename`` in a transaction of its own; return
        what it returns (``RETURNING`` rows)."""

    def transaction(self, lock: str | None = None) -> AbstractContextManager[Run]:
        """One transaction for several statements (yields ``run``); with ``lock``, one
        transaction at a time of all that name it, across processes and hosts."""

    def key_lock(self, key: str, timeout: float) -> AbstractContextManager[None]:
        """Hold ``key`` for the block (single flight): one holder per key across processes
        and hosts. Raises ``LockTimeout`` naming the key."""

    def publish(
        self,
        row: Mapping[str, Any],
        *,
        input_method: str | None = None,
        input_files: Sequence[Any] = (),
    ) -> None:
        """Insert or replace ``row`` (an ``entry_row``) and its input files, in one
        transaction."""

    def flush_counts(
        self,
        *,
        hits: Mapping[str, tuple[int, datetime]] | None = None,
        misses: int = 0,
        calls: Mapping[str, tuple[str, str, int, int]] | None = None,
        wait: bool = True,
    ) -> None:
        """Add counts kept in memory in one transaction: ``hits`` {key: (count, last access)},
        ``misses``, ``calls`` {key: (feature, symbol, hits, misses)}. ``wait=False`` raises
        ``LockTimeout`` at once when the catalog is busy."""

    def drop_entries(
        self,
        keys: Sequence[str],
        delete_objects: Callable[[list[str]], list[str]],
        last_accessed: Sequence[datetime | None] | None = None,
    ) -> list[str]:
        """Remove whole entries in one transaction: ``delete_objects`` is given the keys of
        ``keys`` with a row (with ``last_accessed``, a GC plan's: not accessed since) and
        returns those whose objects are gone; only their rows are deleted, before the commit.
        Returns those keys. Hold the keys' locks."""

    def delete_entries(
        self, keys: Sequence[str], last_accessed: Sequence[datetime | None] | None = None
    ) -> list[tuple[str, str]]:
        """Delete the rows of ``keys`` whose objects are gone; return (key, feature) pairs."""

    def changes_since(
        self, since: int | None, *, exclude: frozenset[str] = frozenset()
    ) -> CatalogChanges:
        """The tables' rows since the snapshot whose watermark was ``since`` (None: all)."""

    def tidy(self, older_than: float) -> None:
        """Drop bookkeeping older than ``older_than`` seconds that no reader needs (GC)."""

    def close(self) -> None:
        """Release connections and locks held between calls (reopened on next use)."""


# -- what the engine reads of a catalog: written once, over ``read`` ------------------------------


def entries(catalog: Catalog, name: str, params: Mapping[str, Any]) -> list[Entry]:
    """Run ``list_entries``, ``match_entries`` or ``get_entry`` (sql/entries.sql)."""
    rows = catalog.read("entries.sql", name, params)
    return [Entry.from_row(rows.columns, row) for row in rows]


def keys_with_rows(catalog: Catalog, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` have a row now."""
    return {key for (key,) in catalog.read("removal.sql", "keys_with_rows", {"keys": list(keys)})}


def entry_inputs(catalog: Catalog, keys: Sequence[str]) -> dict[str, list[tuple[Any, ...]]]:
    """The input files each of ``keys`` was computed from: (position, path, size, mtime_ns,
    inode, ctime_ns, method, digest), in order."""
    return {key: list(catalog.read("entries.sql", "entry_inputs", {"key": key})) for key in keys}


def statistics(
    catalog: Catalog, symbol_limit: int
) -> tuple[list[FeatureStats], list[SymbolStats], dict[str, int]]:
    """Per feature and per symbol (the first ``symbol_limit``; the rest as ``__other__``),
    and the cache-wide counters (misses, store_failures, corrupt_files, ...)."""
    features = catalog.read("entries.sql", "stats_by_feature")
    symbols = catalog.read("entries.sql", "stats_by_symbol", {"limit": symbol_limit})
    return (
        [FeatureStats(*row) for row in features],
        [SymbolStats(*row) for row in symbols],
        counters(catalog),
    )


def counters(catalog: Catalog) -> dict[str, int]:
    return {name: value for name, value in catalog.read("entries.sql", "counters")}


def bump_counter(catalog: Catalog, name: str, delta: int = 1) -> None:
    """Add ``delta`` to the cache-wide counter ``name`` (created at 0 if new)."""
    catalog.write("entries.sql", "bump_counter", {"name": name, "delta": delta})


def last_gc_run(catalog: Catalog) -> dict[str, Any] | None:
    """The newest ``gc_runs`` row by column name, or None if GC never ran."""
    rows = catalog.read("gc.sql", "last_run")
    return dict(zip(rows.columns, rows[0], strict=True)) if rows else None


def overview(
    catalog: Catalog,
) -> tuple[tuple[Any, ...], list[tuple[Any, ...]], dict[str, Any] | None]:
    """``overview.sql``'s totals and per feature/symbol rows, and the last GC run."""
    (totals,) = catalog.read("overview.sql", "totals")
    return totals, list(catalog.read("overview.sql", "by_feature_symbol")), last_gc_run(catalog)


def footer_inputs(catalog: Catalog) -> list[tuple[Any, ...]]:
    """(key, path, size, mtime_ns, inode, ctime_ns, footer digest) of every footer-keyed
    entry's input files: what ``verify`` compares with the files now."""
    return list(catalog.read("entries.sql", "footer_entry_inputs"))


def entries_snapshot(catalog: Catalog) -> list[tuple[str, int, datetime, datetime | None]]:
    """(key, bytes, last_accessed_at, expires_at) of every entry: the rows side of GC."""
    return [(k, b, t, x) for k, b, t, x in catalog.read("gc.sql", "entries_snapshot")]
