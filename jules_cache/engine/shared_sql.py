"""SQL over a shared cache: the PostgreSQL catalog copied into DuckDB, objects read over S3.

``store.sql`` on a shared root runs in the same sandboxed DuckDB session as on a local root
(no file or network access for user SQL). Each query takes a snapshot: what changed in the
catalog's tables since the previous query is copied, in one read-only PostgreSQL transaction,
into a private in-memory DuckDB that the snapshot code reads with the same statements as a
local manifest; feature views are pyarrow
datasets on ``pyarrow.fs.S3FileSystem`` (filters and columns pushed down: one symbol of many
reads only that symbol's objects). DuckDB 2.0.1 has no offline ``httpfs`` here, so pyarrow does
the S3 reads.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow.dataset as ds

from jules_cache.query import views
from jules_cache.storage.manifest import utc_now

if TYPE_CHECKING:
    import pyarrow.fs

    from jules_cache.engine.backend import SharedRoot
    from jules_cache.storage.catalog import CatalogChanges

    _Marker = tuple[tuple[int, int, int]]


_copy_ids = itertools.count(1)

# The catalog tables a query can name (as on a local root); schema_version is bookkeeping
# (and so is row_deletions, which the catalog never hands out).
_HIDDEN = frozenset({"schema_version"})
_LOGGED = 32  # versions of changes kept for the sandbox's copies to catch up with


class SharedCatalogSource:
    """A ``CatalogSource`` for ``query.sql.run`` over a shared cache (see the module).

    One per backend, kept between queries with its in-memory DuckDB: opening one costs ~12 ms,
    as much as the rest of a small query. The first query copies the catalog whole; each later
    one applies only the rows written and the keys deleted since the previous one
    (``PostgresCatalog.changes_since``): copying a 100k-row catalog whole took 0.76 s a query.
    The changes of the last versions are kept, so the query session's copies of the tables
    catch up the same way (``changes``) instead of being copied whole after every publish.
    """

    def __init__(self, backend: SharedRoot):
        self.backend = backend
        self.base = backend.objects.arrow_path()
        self.format = ds.ParquetFileFormat()  # pre-buffering: coalesced ranged GETs
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._pid = 0
        self._watermark: int | None = None  # the catalog position the tables hold
        self._copy_id = 0  # which connection's copy (a new one never matches an old marker)
        self._version = 0  # bumped whenever a snapshot changed the copy
        self._reading = threading.local()  # the version, while this thread is in read()
        # (version, the changes that made it), the last _LOGGED versions
        self._log: collections.deque[tuple[int, CatalogChanges]] = collections.deque(maxlen=_LOGGED)

    @property
    def filesystem(self) -> pyarrow.fs.S3FileSystem:
        return self.backend.objects.arrow_filesystem()  # kept while the credentials hold

    def marker(self) -> _Marker | None:
        """None outside ``read``: only the catalog knows whether anything changed, so a query
        never reuses its snapshot without one. Inside, the version of the copy just brought
        up to date: the query keeps its tables and views while nothing changed (re-copying
        a 100k-row ``entries`` into the sandbox cost ~150 ms a query)."""
        version = getattr(self._reading, "version", None)
        return None if version is None else ((self._copy_id, version, 0),)

    @contextlib.contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            con = self._connection()
            changes = self.backend.catalog.changes_since(self._watermark, exclude=_HIDDEN)
            try:
                if _apply(con, changes):
                    self._version += 1
                    self._log.append((self._version, changes))
            except BaseException:
                self.close()  # half applied: never reused
                raise
            self._watermark = changes.watermark
            self._reading.version = self._version
            try:
                yield con
            finally:
                self._reading.version = None

    def changes(self, table: str, since: Any) -> Callable[[Any], None] | None:
        """Inside ``read``: what brings a copy of ``table`` taken at marker ``since`` (of this
        connection's copy) up to the current version, applied the way the copy was; None when
        the log no longer reaches back to ``since``."""
        if getattr(self._reading, "version", None) != self._version:
            return None
        try:
            ((copy_id, version, _),) = since
        except (TypeError, ValueError):
            return None
        if copy_id != self._copy_id or not 0 < version <= self._version:
            return None
        steps = [changes for logged, changes in self._log if logged > version]
        if len(steps) != self._version - version:
            return None  # older than the log
        return functools.partial(_apply_each, [_only(table, changes) for changes in steps])

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None or self._pid != os.getpid():  # a forked child makes its own
            self._log.clear()
            self._watermark = None
            self._copy_id = next(_copy_ids)
            self._con = duckdb.connect(":memory:")
            self._con.execute("SET enable_progress_bar = false")
            self._pid = os.getpid()
        return self._con

    def close(self) -> None:
        """Drop the catalog copy (a new connection is made by the next query)."""
        if self._con is not None and self._pid == os.getpid():
            with contextlib.suppress(duckdb.Error):
                self._con.close()
        self._con = None
        self._watermark = None
        self._log.clear()


def _only(table: str, changes: CatalogChanges) -> CatalogChanges:
    """``changes`` restricted to ``table``."""
    from jules_cache.storage.catalog import CatalogChanges

    def pick(found: dict[str, Any]) -> dict[str, Any]:
        return {table: found[table]} if table in found else {}

    return CatalogChanges(
        watermark=changes.watermark,
        replaced=pick(changes.replaced),
        changed=pick(changes.changed),
        deleted=pick(changes.deleted),
        keys=pick(changes.keys),
    )


def _apply_each(steps: list[CatalogChanges], con: duckdb.DuckDBPyConnection) -> None:
    for changes in steps:
        _apply(con, changes)


def _apply(con: duckdb.DuckDBPyConnection, changes: CatalogChanges) -> bool:
    """Bring the copy up to ``changes``: whole tables replaced, changed rows replaced by key,
    deleted keys removed (compared as text: the triggers note keys as text). Return whether
    anything was applied."""
    import pyarrow as pa

    applied = bool(changes.replaced)
    for name, table in changes.replaced.items():
        quoted = views.require_identifier(name)
        con.register("_copy", table)
        con.execute(f'CREATE OR REPLACE TABLE "{quoted}" AS FROM _copy')
        con.unregister("_copy")
    for name, table in changes.changed.items():
        deleted = changes.deleted[name]
        if not table.num_rows and not deleted:
            continue
        applied = True
        quoted = views.require_identifier(name)
        columns = [views.require_identifier(column) for column in changes.keys[name]]
        gone = pa.table(
            {
                column: pa.array([key[i] for key in deleted], pa.string())
                for i, column in enumerate(columns)
            }
        )
        as_text = " AND ".join(f'CAST(t."{c}" AS VARCHAR) = g."{c}"' for c in columns)
        same = " AND ".join(f't."{c}" = g."{c}"' for c in columns)
        con.register("_gone", gone)
        con.register("_copy", table)
        try:
            con.execute(f'DELETE FROM "{quoted}" AS t USING _gone AS g WHERE {as_text}')
            con.execute(f'DELETE FROM "{quoted}" AS t USING _copy AS g WHERE {same}')
            con.execute(f'INSERT INTO "{quoted}" BY NAME SELECT * FROM _copy')
        finally:
            con.unregister("_gone")
            con.unregister("_copy")
    return applied


def view_names(backend: SharedRoot, feature: str | None = None) -> dict[str, str]:
    """Give every feature with entries a view name, for good, and return ``{feature: name}``.

    With ``feature`` (just published), nothing is written if it has a name already.
    """
    catalog = backend.catalog
    statements = "catalog.sql"
    if feature is not None and catalog.read(statements, "view_name_of", {"feature": feature}):
        return {}
    keywords = views.sql_keywords(_keywords_connection())
    with catalog.transaction(lock="view_names") as run:
        assigned: dict[str, str] = dict(run(statements, "assigned_view_names"))
        unnamed = [row[0] for row in run(statements, "unnamed_features")]
        if unnamed:
            _, new = views.stable_view_names(assigned, unnamed, keywords)
            params = {"features": list(new), "names": list(new.values()), "assigned_at": utc_now()}
            run(statements, "assign_view_names", params)
            assigned.update(new)
        features = [row[0] for row in run(statements, "feature_names")]
    return {name: assigned[name] for name in features if name in assigned}


_keywords_con: duckdb.DuckDBPyConnection | None = None


def _keywords_connection() -> duckdb.DuckDBPyConnection:
    global _keywords_con
    if _keywords_con is None:
        _keywords_con = duckdb.connect(":memory:")
    return _keywords_con
