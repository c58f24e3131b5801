"""Read-only SQL over the cache: the manifest tables and one view per feature.

``FeatureStore.sql`` runs user SQL on a DuckDB instance of its own, created once per process
and kept (``duckdb.connect`` costs ~40 ms; a query never pays it). The cache is read-only to
that SQL by construction, not because a parser said so:

- the instance has NO file access: ``enable_external_access = false`` with no allowed
  directory or path, extension autoload/autoinstall and community extensions off, Python
  replacement scans off, and ``lock_configuration`` on, so no statement (COPY, EXPORT, ATTACH
  of a file, read_text/read_csv/glob, INSTALL/LOAD of a file, SET/RESET of those settings, ...)
  can create, change, list or read a file, inside the root or outside it. There is no DuckDB
  setting for read-only file access: a directory DuckDB may read, it may also write;
- the result files are read by pyarrow instead: each feature view is a ``pyarrow.dataset``
  over exactly the files of the manifest snapshot, registered on the connection; the entry
  metadata columns are per-file partition expressions, which pyarrow materialises and matches
  against the filters DuckDB pushes down (``WHERE symbol = 'X'`` opens X's files only);
- every user statement runs inside ``BEGIN TRANSACTION ... ROLLBACK``, which undoes any
  catalog or table change (DuckDB's DDL and ATTACH are transactional), then ``RESET
  search_path`` (the one setting ``lock_configuration`` leaves open); a statement that ended
  the transaction gets the session thrown away. No view reads a session variable;
- in front of it all, a statement check refuses, with a message, anything but ONE SELECT (or
  EXPLAIN [ANALYZE] of one) without data-changing CTEs and without query()/query_table().

Each query then:

1. takes a snapshot under the shared manifest lock: the entry rows of the feature views it
   references and read-only copies of the manifest tables it names -- the lock is released
   before the query runs, and a half-published entry is never seen (a publish holds the
   exclusive lock from rename to commit). The snapshot is cached and reused, without the lock,
   while manifest.duckdb's (inode, size, mtime_ns) is unchanged (see ``_marker``);
2. points the referenced feature views at the snapshot's files; a view whose files are
   unchanged keeps its dataset. Two kinds of pruning: explicit (``symbols=``, ``versions=``,
   ``since=``/``until=`` against the manifest's per-file min/max time) and automatic -- a
   top-level ``AND`` of ``symbol``/``key``/``code_version``/``code_fingerprint``
   ``= 'literal'`` or ``IN (...)`` on a view referenced once builds that view from the
   matching files only;
3. runs; if a file vanished under it (a GC committed after the snapshot) it retries once with a
   fresh snapshot.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol, TypeAlias

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import xxhash

from jules_cache.errors import InvalidInput, QueryError
from jules_cache.query import configs
from jules_cache.query import views as catalog
from jules_cache.query.results import polars_ready
from jules_cache.query.views import FileRow
from jules_cache.storage import sqlfiles
from jules_cache.storage.layout import Layout
from jules_cache.storage.manifest import Manifest
from jules_cache.storage.result_files import METADATA_KEY

PRUNABLE = ("symbol", "key", "code_version", "code_fingerprint")
_SQL_FILE = "catalog.sql"


class CatalogSource(Protocol):
    """Where a query's snapshot comes from: a DuckDB connection holding the catalog tables
    (the manifest's names and columns), and the file system the result paths are on.

    ``ManifestSource`` reads a local root's manifest under its shared lock; the shared backend
    (``engine.shared_sql``) copies its PostgreSQL catalog into an in-memory DuckDB and reads
    objects over S3.
    """

    base: str  # a row's path is relative to it
    filesystem: Any  # a pyarrow FileSystem
    format: Any  # a pyarrow ParquetFileFormat

    def marker(self) -> _Marker | None:
        """Changes whenever the catalog may have changed; None: never reuse a snapshot."""

    def read(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        """The catalog tables, stable while the context is held."""

    def changes(self, table: str, since: _Marker) -> Callable[[Any], None] | None:
        """Inside ``read``: a function that brings a copy of ``table`` taken at marker
        ``since`` up to the current one on the DuckDB connection it is given; None: copy the
        table whole (a copy of many rows costs ~1 ms per 1,000 a query)."""


class ManifestSource:
    """A local root's manifest and files (see ``CatalogSource``)."""

    def __init__(self, manifest: Manifest, layout: Layout):
        self.manifest = manifest
        self.layout = layout
        self.base = str(layout.root)  # a row's path is relative to it
        self.filesystem: Any = _FILESYSTEM
        self.format: Any = _FORMAT

    def marker(self) -> _Marker | None:
        return _marker(self.layout)

    def read(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        return self.manifest.read()

    def changes(self, table: str, since: _Marker) -> Callable[[Any], None] | None:
        return None  # a local manifest keeps no log of its changes


@dataclass(frozen=True)
class Filters:
    """Explicit pruning: only files of these symbols/versions overlapping [since, until]."""

    symbols: frozenset[str] | None = None
    versions: frozenset[str] | None = None  # code_version or code_fingerprint
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def build(
        cls,
        symbols: Iterable[str] | str | None,
        versions: Iterable[str] | str | None,
        since: Any,
        until: Any,
    ) -> Filters:
        return cls(_strings(symbols, "symbols"), _strings(versions, "versions"),
                   _moment(since, "since"), _moment(until, "until"))  # fmt: skip

    def keep(self, row: FileRow) -> bool:
        if self.symbols is not None and row.symbol not in self.symbols:
            return False
        if self.versions is not None and not (
            row.code_fingerprint in self.versions or row.code_version in self.versions
        ):
            return False
        if self.since is not None and row.max_time is not None and row.max_time < self.since:
            return False
        return not (
            self.until is not None and row.min_time is not None and row.min_time > self.until
        )


def _strings(value: Iterable[str] | str | None, name: str) -> frozenset[str] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(v, str) for v in values):
        raise InvalidInput(f"{name} must be a str or a list of str, not {value!r}")
    return frozenset(values)


def _moment(value: Any, name: str) -> datetime | None:
    """A naive-UTC datetime (as the manifest stores min/max time) from a datetime/date/ISO str."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidInput(f"{name} must be an ISO date or datetime, not {value!r}") from exc
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    raise InvalidInput(f"{name} must be a datetime, date or ISO string, not {value!r}")


# -- the per-process session -----------------------------------------------------------------

# The sandbox: applied when the instance starts, then locked (only ``search_path`` and
# ``schema`` stay settable, and ``search_path`` is reset after every statement).
SESSION_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "enable_external_access": False,  # no file system at all: allowed_* stay empty
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "allow_community_extensions": False,
    "python_enable_replacements": False,  # no scans of Python variables by name
}
# Then, on the connection: no progress bar (it prints to stdout, where `jules-cache sql`
# writes its one JSON document), and the lock.
_SESSION_SETUP = ("SET enable_progress_bar = false", "SET lock_configuration = true")


@dataclass
class _Session:
    con: duckdb.DuckDBPyConnection
    spill: str  # the instance's private temp_directory
    views: dict[str, str] = field(default_factory=dict)  # view -> dataset serial / SELECT digest
    # manifest table copy -> (generation, the source's marker of the rows it holds)
    tables: dict[str, tuple[int, _Marker | None]] = field(default_factory=dict)
    cache: _Cache | None = None  # the last snapshot, reused while the manifest is unchanged
    analyses: dict[str, _Analysis] = field(default_factory=dict)  # query text -> analysis
    # (view, "all" | "some") -> (the rows it was built from, key, dataset, serial, fragments)
    datasets: dict[tuple[str, str], tuple[Any, str, Any, str, list[Any]]] = field(
        default_factory=dict
    )
    schemas: dict[str, pa.Schema] = field(default_factory=dict)  # result_schema -> Arrow schema
    # (base, row, metadata aliases) -> (the file's stamp when checked, its checked fragment)
    fragments: dict[tuple[str, FileRow, tuple[tuple[str, str], ...]], tuple[Any, Any]] = field(
        default_factory=dict
    )
    closed: bool = False

    def execute(self, statement: duckdb.Statement, params: Any = None) -> pa.Table:
        """Run one parsed statement with every change it could make to the session undone.

        ``ROLLBACK`` undoes catalog, table and ATTACH changes; ``RESET search_path`` undoes a
        USE. A statement that ended the transaction (COMMIT, ROLLBACK) leaves nothing to roll
        back: the session is closed, and the next query builds a new one. Files are out of
        reach whatever runs here (``SESSION_CONFIG``).
        """
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            relation = con.sql(statement, params=params)
            if relation is None:
                return pa.table({})
            table, types = relation.to_arrow_table(), [str(t) for t in relation.types]
        finally:
            try:
                con.execute("ROLLBACK; RESET search_path")
            except duckdb.Error:
                self.close()
        return polars_ready(table, types)

    def close(self) -> None:
        self.closed = True
        self.con.close()
        shutil.rmtree(self.spill, ignore_errors=True)


_session_lock = threading.RLock()  # queries of one process run one at a time on the session
_session: _Session | None = None
_session_pid: int | None = None
_ANALYSES_KEPT = 256


def _get_session() -> _Session:
    global _session, _session_pid
    if _session is None or _session.closed or _session_pid != os.getpid():
        # Spill files of a large query go to a private folder, not to ``.tmp`` in the cwd.
        spill = tempfile.mkdtemp(prefix="jules_cache-sql-")
        atexit.register(_remove_spill, spill, os.getpid())
        config = {**SESSION_CONFIG, "temp_directory": spill}
        con = duckdb.connect(":memory:", config=config)
        for statement in _SESSION_SETUP:
            con.execute(statement)
        _session = _Session(con, spill)
        _session_pid = os.getpid()
    return _session


def _remove_spill(folder: str, pid: int) -> None:
    if os.getpid() == pid:  # not from a forked child that inherited the handler
        shutil.rmtree(folder, ignore_errors=True)


# -- the statement check -----------------------------------------------------------------------
#
# A first line with a clear message; the session above is what makes a statement that got
# past it harmless.

_READ_ONLY_NODES = frozenset(
    {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"}
)
_HIDDEN_SQL = frozenset({"query", "query_table"})  # table functions that run SQL from a string
_REFUSED = (
    "the cache is queried read-only: run one SELECT (or EXPLAIN [ANALYZE] of one) over the "
    "feature views and manifest tables, and change the cache with FeatureStore methods or "
    "`jules-cache gc`/`rm`"
)


@dataclass(frozen=True)
class _Analysis:
    statement: duckdb.Statement  # the one statement to run
    tables: frozenset[str] | None  # referenced names; None: unknown, install everything
    prune: dict[str, dict[str, frozenset[str]]]  # view -> column -> allowed literal values


def _refuse(what: str) -> QueryError:
    return QueryError(f"{what} refused: {_REFUSED}")


def require_read_only(query: str) -> tuple[duckdb.Statement, str]:
    """Return the one statement of ``query`` and the SELECT it runs (EXPLAIN's inner one).

    Raises ``QueryError`` unless ``query`` is exactly one SELECT or EXPLAIN [ANALYZE] of one
    (DuckDB's parser errors propagate as ``duckdb.Error``).
    """
    statements = duckdb.extract_statements(query)
    if len(statements) != 1:
        raise _refuse(f"{len(statements)} statements in one query are")
    statement = statements[0]
    select = query
    kind = _kind(statement)
    if kind == "EXPLAIN":
        select = _explained(query)
        inner = duckdb.extract_statements(select)
        if len(inner) != 1 or _kind(inner[0]) != "SELECT":
            kinds = ", ".join(sorted({_kind(s) for s in inner})) or "nothing"
            raise _refuse(f"EXPLAIN of {kinds} is")
    elif kind != "SELECT":
        raise _refuse(f"{kind} statements are")
    return statement, select


def _kind(statement: duckdb.Statement) -> str:
    """The statement's type name; a kind this DuckDB client has no name for (its enum lags
    the parser, e.g. ``UPDATE EXTENSIONS``) is named by its number, and so never a SELECT."""
    try:
        return str(statement.type.name)
    except ValueError:
        return "unnamed (new) kind of"


def _explained(query: str) -> str:
    """The statement after ``EXPLAIN``, ``EXPLAIN ANALYZE`` or ``EXPLAIN (options)``."""
    tokens = duckdb.tokenize(query)
    bounds = [start for start, _ in tokens] + [len(query)]
    words = [
        (i, query[start : bounds[i + 1]].strip().lower())
        for i, (start, kind) in enumerate(tokens)
        if kind != duckdb.token_type.comment
    ]
    position, depth = 1, 0  # words[0] is EXPLAIN: the statement type says so
    while position < len(words):
        word = words[position][1]
        if word == "(":
            depth += 1
        elif word == ")":
            depth -= 1
        elif depth == 0 and word != "analyze":
            return query[tokens[words[position][0]][0] :]
        position += 1
    return ""


def analyse(con: duckdb.DuckDBPyConnection, query: str) -> _Analysis:
    """Check ``query`` (``QueryError`` if refused); say which tables it names and which
    literal filters can prune a feature view."""
    statement, select = require_read_only(query)
    found = con.execute("SELECT json_serialize_sql($1)", [select]).fetchall()[0][0]
    tree = json.loads(found)
    if tree.get("error"):
        raise _refuse(
            f"a query that cannot be checked ({tree.get('error_message', 'unknown form')}) is"
        )
    references: list[str] = []
    ctes: set[str] = set()
    selects: list[dict[str, Any]] = []
    unknown = False

    def walk(node: Any) -> None:
        nonlocal unknown
        if isinstance(node, dict):
            kind = node.get("type")
            if isinstance(kind, str) and kind.endswith("_NODE") and kind not in _READ_ONLY_NODES:
                verb = kind.removesuffix("_NODE").removesuffix("_QUERY")
                raise _refuse(f"{verb} inside a query is")
            if kind == "BASE_TABLE":
                references.append(str(node.get("table_name") or "").lower())
            elif kind == "TABLE_FUNCTION":
                unknown = True  # names we cannot see
                function = (node.get("function") or {}).get("function_name")
                if str(function).lower() in _HIDDEN_SQL:
                    raise _refuse(f"{function}() (SQL in a string, out of this check's sight) is")
            elif kind == "SELECT_NODE":
                selects.append(node)
            cte_map = node.get("cte_map")
            if isinstance(cte_map, dict):
                ctes.update(str(item.get("key", "")).lower() for item in cte_map.get("map", []))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tree.get("statements", []))
    if unknown:
        return _Analysis(statement, None, {})
    prune: dict[str, dict[str, frozenset[str]]] = {}
    for select_node in selects:
        table = select_node.get("from_table") or {}
        if (
            table.get("type") != "BASE_TABLE"
            or table.get("catalog_name")
            or table.get("schema_name")
        ):
            continue
        name = str(table.get("table_name", "")).lower()
        if references.count(name) != 1 or name in ctes:
            continue  # pruning is sound only when this SELECT is the view's one use
        qualifiers = {name, str(table.get("alias") or "").lower()} - {""}
        filters = _literal_filters(select_node.get("where_clause"), qualifiers)
        if filters:
            prune[name] = filters
    return _Analysis(statement, frozenset(references), prune)


def _literal_filters(where: Any, qualifiers: set[str]) -> dict[str, frozenset[str]]:
    """``column -> allowed values`` from the top-level AND of ``col = 'x'`` / ``col IN (...)``."""
    conjuncts: list[Any] = []
    pending = [where]
    while pending:
        node = pending.pop()
        if isinstance(node, dict) and node.get("type") == "CONJUNCTION_AND":
            pending.extend(node.get("children", []))
        elif node is not None:
            conjuncts.append(node)
    found: dict[str, frozenset[str]] = {}
    for node in conjuncts:
        column, values = None, None
        if node.get("type") == "COMPARE_EQUAL":
            for a, b in (
                (node.get("left"), node.get("right")),
                (node.get("right"), node.get("left")),
            ):
                column, literal = _column(a, qualifiers), _string(b)
                if column and literal is not None:
                    values = frozenset([literal])
                    break
        elif node.get("type") == "COMPARE_IN":
            children = node.get("children", [])
            column = _column(children[0], qualifiers) if children else None
            literals = [_string(child) for child in children[1:]]
            if literals and all(v is not None for v in literals):
                values = frozenset(v for v in literals if v is not None)
        if column and values is not None:
            found[column] = found[column] & values if column in found else values
    return found


def _column(node: Any, qualifiers: set[str]) -> str | None:
    if not isinstance(node, dict) or node.get("class") != "COLUMN_REF":
        return None
    parts = [str(p).lower() for p in node.get("column_names", [])]
    if len(parts) == 1 or (len(parts) == 2 and parts[0] in qualifiers):
        return parts[-1]
    return None


def _string(node: Any) -> str | None:
    if not isinstance(node, dict) or node.get("class") != "CONSTANT":
        return None
    literal = node.get("literal")
    if isinstance(literal, dict) and literal.get("kind") == "STRING":
        text = literal.get("text")
        return text if isinstance(text, str) else None
    return None


# -- snapshot -------------------------------------------------------------------------------------
#
# A snapshot (view names, the entry rows of the referenced features, copies of the referenced
# manifest tables) is cached with a change marker: (inode, size, mtime_ns) of manifest.duckdb
# and of its WAL. Every manifest write changes the file, so an equal marker means nothing
# changed -- provided the file's mtime was already older than the timestamp granularity when
# the snapshot was taken ("racy" stat, as git does for its index): a write within the same
# clock tick could leave mtime unchanged. A cache that is not yet trusted is re-read under the
# shared lock, so a publish or GC just before a query is always seen.

_RACY_NS = 100_000_000  # well above the file system's timestamp granularity

_Marker = tuple[tuple[int, int, int] | None, ...]


def _marker(layout: Layout) -> _Marker:
    stamps: list[tuple[int, int, int] | None] = []
    for path in (layout.manifest, layout.manifest.with_name(layout.manifest.name + ".wal")):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            stamps.append(None)
        else:
            stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


@dataclass
class _Cache:
    marker: _Marker | None  # None: the source offers no change marker (never trusted)
    trusted: bool  # the marker was old enough when read: an equal marker means no change
    generation: int
    names: dict[str, str]  # feature -> view name
    manifest_tables: tuple[str, ...]
    rows: dict[str, list[FileRow]] = field(default_factory=dict)  # loaded features only
    tables: dict[str, _TableCopy] = field(default_factory=dict)  # loaded table copies only
    latest: dict[str, list[FileRow]] = field(default_factory=dict)  # default views' rows

    def covers(self, features: Iterable[str], tables: Iterable[str]) -> bool:
        return all(f in self.rows for f in features) and all(t in self.tables for t in tables)


_generations = iter(range(1, 1 << 62))


@dataclass(frozen=True)
class _Delta:
    """What changed in a table since the session's copy of it was taken at ``since``."""

    since: _Marker
    apply: Callable[[Any], None]  # brings that copy, on the connection given, up to date


_TableCopy: TypeAlias = "pa.Table | _Delta"  # a whole table, or changes to the session's copy


def _usable(copy: _TableCopy | None, held: tuple[int, _Marker | None] | None, now: Any) -> bool:
    """Whether ``copy`` can bring the session's table (``held``) to the marker ``now``."""
    if copy is None:
        return False
    if not isinstance(copy, _Delta):
        return True
    return held is not None and held[1] in (copy.since, now)


def _table_copy(
    source: CatalogSource,
    mcon: duckdb.DuckDBPyConnection,
    table: str,
    held: tuple[int, _Marker | None] | None,
    marker: _Marker | None,
) -> _TableCopy:
    """The changes to the session's copy of ``table`` if the source has them, else all rows."""
    if held is not None and held[1] is not None and marker is not None:
        apply = source.changes(table, held[1])
        if apply is not None:
            return _Delta(held[1], apply)
    return mcon.sql(f'SELECT * FROM "{table}"').to_arrow_table()


@dataclass(frozen=True)
class _Snapshot:
    names: dict[str, str]  # feature -> view name
    rows: dict[str, list[FileRow]]  # feature -> its files (only for referenced views)
    manifest_tables: tuple[str, ...]
    tables: dict[str, _TableCopy]  # copies of (or changes to) the referenced manifest tables
    generation: int
    latest: dict[str, list[FileRow]]  # feature -> the files its default view shows
    marker: _Marker | None  # the source's, when the rows were read


def _wanted(cache: _Cache, names: frozenset[str] | None) -> tuple[list[str], list[str]]:
    """The features and manifest tables to load for a query naming ``names`` (None: all)."""
    if names is None:
        return sorted(cache.names), list(cache.manifest_tables)
    summaries = {catalog.CATALOG_VIEW, configs.CONFIGS_VIEW}
    tables = names | ({"entries"} if summaries & names else set())
    bases = names | {split[0] for split in map(configs.split, names) if split is not None}
    features = [f for f, name in cache.names.items() if {name, catalog.history_name(name)} & bases]
    return features, [t for t in cache.manifest_tables if t in tables]


def _snapshot(source: CatalogSource, names: frozenset[str] | None, session: _Session) -> _Snapshot:
    """Copy what a query naming ``names`` (None: unknown) needs out of the manifest, under
    the shared lock, then let go.

    Reuses the session's cached snapshot, without taking the lock, while the manifest's
    change marker is unchanged and trusted.
    """
    cache = session.cache
    if cache is not None and cache.trusted and cache.marker == source.marker():
        features, tables = _wanted(cache, names)
        copies = session.tables
        if cache.covers(features, tables) and all(
            _usable(cache.tables[t], copies.get(t), cache.marker) for t in tables
        ):
            return _view(cache, features, tables)
    statements = sqlfiles.load(_SQL_FILE)
    with source.read() as mcon:
        marker = source.marker()  # stable while we hold the shared lock
        if cache is None or not cache.trusted or cache.marker != marker:
            now = time.time_ns()
            stamps = marker or ()
            newest = max((stamp[2] for stamp in stamps if stamp is not None), default=now)
            features_now = [row[0] for row in mcon.execute(statements["feature_names"]).fetchall()]
            available = tuple(
                row[0] for row in mcon.execute(statements["manifest_tables"]).fetchall()
            )
            cache = _Cache(
                marker=marker,
                trusted=marker is not None and now - newest > _RACY_NS,
                generation=next(_generations),
                names=catalog.current_view_names(
                    mcon, features_now, catalog.sql_keywords(session.con)
                ),
                manifest_tables=available,
            )
        features, tables = _wanted(cache, names)
        missing = [f for f in features if f not in cache.rows]
        if missing:
            cursor = mcon.execute(statements["catalog_files"], {"features": missing})
            for feature in missing:
                cache.rows[feature] = []
            for row in FileRow.from_rows(cursor.fetchall()):
                cache.rows[row.feature].append(row)
            for feature in missing:
                cache.latest[feature] = catalog.latest_rows(cache.rows[feature])
        for table in tables:  # names come from duckdb_tables(): an allow-list
            held = session.tables.get(table)
            if not _usable(cache.tables.get(table), held, marker):
                cache.tables[table] = _table_copy(source, mcon, table, held, marker)
    session.cache = cache
    return _view(cache, features, tables)


def _view(cache: _Cache, features: Iterable[str], tables: Iterable[str]) -> _Snapshot:
    return _Snapshot(
        cache.names,
        {f: cache.rows[f] for f in features},
        cache.manifest_tables,
        {t: cache.tables[t] for t in tables},
        cache.generation,
        {f: cache.latest[f] for f in features},
        cache.marker,
    )


def _install(
    session: _Session,
    snapshot: _Snapshot,
    analysis: _Analysis,
    filters: Filters,
    source: CatalogSource,
) -> None:
    """Make the session's catalog match the snapshot: table copies and feature views."""
    con = session.con
    for table in sorted(set(session.tables) - set(snapshot.manifest_tables)):
        con.execute(f'DROP TABLE IF EXISTS "{catalog.require_identifier(table)}"')
        del session.tables[table]
    for table, data in snapshot.tables.items():
        held = session.tables.get(table)
        if held is not None and held[0] == snapshot.generation:
            continue
        name = catalog.require_identifier(table)
        if isinstance(data, _Delta):
            if held is None or held[1] != snapshot.marker:
                try:
                    data.apply(con)
                except BaseException:  # half applied: copied whole by the next query
                    session.tables.pop(table, None)
                    con.execute(f'DROP TABLE IF EXISTS "{name}"')
                    raise
        else:
            con.register("_jules_snapshot", data)
            try:
                con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM _jules_snapshot')
            finally:
                con.unregister("_jules_snapshot")
        session.tables[table] = (snapshot.generation, snapshot.marker)
    live = set(_view_names(snapshot.names))
    for name in sorted(set(session.views) - live):
        split = configs.split(name)
        if split is not None and name not in live and split[0] in live:
            continue  # a config view of a live feature: rebuilt when named
        _drop_view(con, catalog.require_identifier(name))
        del session.views[name]
        for variant in ("all", "some"):
            session.datasets.pop((name, variant), None)
    installed: set[str] = set()
    for feature, all_rows in snapshot.rows.items():
        view = snapshot.names[feature]
        for name, rows in _feature_views(view, all_rows, snapshot.latest[feature], live, analysis):
            name = catalog.require_identifier(name)
            installed.add(name)
            if isinstance(rows, str):  # a feature of several configs read without picking one
                if session.views.get(name) != rows:
                    _drop_view(con, name)
                    refused = catalog.sql_literal(rows)
                    con.execute(
                        f"CREATE TEMP VIEW {name} AS SELECT * FROM "
                        f"{catalog.history_name(view)} WHERE error({refused})"
                    )
                    session.views[name] = rows
                continue
            dataset, serial = _feature_dataset(
                session,
                name,
                rows,
                filters,
                analysis.prune.get(name, {}),
                source,
                snapshot.generation,
            )
            if session.views.get(name) != serial:
                if not str(session.views.get(name, "dataset")).startswith("dataset"):
                    _drop_view(con, name)
                con.register(name, dataset)
                session.views[name] = serial
    if analysis.tables is None:  # every view was installed: a config view not among them is
        for name in sorted(n for n in session.views if configs.split(n) and n not in installed):
            if name not in live and name != configs.CONFIGS_VIEW:  # of a config gone
                _drop_view(con, name)
                del session.views[name]
                for variant in ("all", "some"):
                    session.datasets.pop((name, variant), None)
    if analysis.tables is None or configs.CONFIGS_VIEW in analysis.tables:
        select = configs.configs_view_select(snapshot.names)
        digest = xxhash.xxh3_128_hexdigest(select.encode())
        if session.views.get(configs.CONFIGS_VIEW) != digest:
            con.execute(f"CREATE OR REPLACE VIEW {configs.CONFIGS_VIEW} AS {select}")
            session.views[configs.CONFIGS_VIEW] = digest
    if analysis.tables is None or catalog.CATALOG_VIEW in analysis.tables:
        select = catalog.catalog_view_select(snapshot.names)
        digest = xxhash.xxh3_128_hexdigest(select.encode())
        if session.views.get(catalog.CATALOG_VIEW) != digest:
            con.execute(f"CREATE OR REPLACE VIEW {catalog.CATALOG_VIEW} AS {select}")
            session.views[catalog.CATALOG_VIEW] = digest


def _feature_views(
    view: str,
    all_rows: list[FileRow],
    latest: list[FileRow],
    taken: set[str],
    analysis: _Analysis,
) -> list[tuple[str, list[FileRow] | str]]:
    """The views of one feature a query needs, each with its rows, or, for the bare view of a
    feature of several configs, the refusal its reading raises (see ``query.configs``).

    ``taken``: every real feature view name (a real view wins a config view's name).
    A query known to name a refused view or a config without results fails here, before
    anything runs; a query whose names are unknown gets a bare view that refuses when read.
    """
    wanted = analysis.tables
    found_configs = configs.configs(latest)
    shorts = configs.by_digest(found_configs)
    every = configs.all_configs_view(view)
    # A view of several configs refuses; it reads the history view, which always exists.
    found: list[tuple[str, list[FileRow] | str]] = [(catalog.history_name(view), all_rows)]
    picks = [(view, latest)] + ([(every, latest)] if every not in taken else [])
    for short in shorts:
        name = configs.config_view(view, short)
        if name not in taken:  # two configs sharing a digest (~1 in 4e9) share a refusal
            picks.append((name, configs.rows_of(latest, short)))
    for name, rows in picks:
        held = configs.configs(rows)
        if len(held) > 1 and name != every:
            if wanted is not None and name in wanted:
                raise QueryError(configs.refusal(name, held))
            found.append((name, configs.refusal(name, held)))
        else:
            found.append((name, rows))
    if wanted is None:
        return found
    for name in wanted:
        split = configs.split(name)
        unknown = split is not None and split[1] not in {*shorts, configs.ALL}
        if unknown and split is not None and split[0] == view and name not in taken:
            raise configs.missing(view, split[1], found_configs)
    return [(name, rows) for name, rows in found if name in wanted]


def _drop_view(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Remove a session view, whether registered (a dataset) or created by SQL (a refusal)."""
    con.unregister(name)
    con.execute(f"DROP VIEW IF EXISTS temp.main.{name}")


# -- feature views: pyarrow datasets --------------------------------------------------------------
#
# DuckDB cannot open a file, so pyarrow reads them: one ``FileSystemDataset`` per feature over
# the snapshot's files, the entry metadata as each file's partition expression
# (``symbol == 'AAPL' and key == '…' and code_version is null …``). pyarrow fills those columns
# with the file's values (strings dictionary-encoded: one value per file) and skips the files
# whose expression contradicts a filter DuckDB pushes down. The file columns come from a
# footer per distinct result schema; files of different schemas are read under the union of
# the schemas of the files the view reads (a column missing from older files reads as NULL,
# as ``union_by_name`` did).

# Local files: pre-buffering (coalesced reads, made for object stores) cost ~20% more CPU on
# the full scan of bench_sql.py.
_FORMAT = ds.ParquetFileFormat(
    default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False)
)
_serials = iter(range(1, 1 << 62))
_FILESYSTEM = pafs.LocalFileSystem()
_LABEL = pa.dictionary(pa.int32(), pa.string())
_META_TYPES = {
    "symbol": _LABEL,
    "key": _LABEL,
    "code_fingerprint": _LABEL,
    "code_version": _LABEL,
    "config_json": pa.json_(pa.string()),  # DuckDB reads it as JSON: config_json->>'freq'
    "created_at": pa.timestamp("us"),
}
_SCALAR_TYPES = {**_META_TYPES, **dict.fromkeys(("symbol", "key", "code_fingerprint",
                                                  "code_version"), pa.string())}  # fmt: skip


def _feature_dataset(
    session: _Session,
    name: str,
    rows: list[FileRow],
    filters: Filters,
    literal: dict[str, frozenset[str]],
    source: CatalogSource,
    generation: int,
) -> tuple[Any, str]:
    """The dataset of the files that can match, and a serial number naming it.

    The whole feature's dataset is kept while the snapshot's rows are the same; a pruned one
    is rebuilt per query, usually over a few files, from fragments checked before
    (``_fragments``).
    """
    meta = catalog.meta_column_names(rows)
    by_name = {alias: column for column, alias in meta.items() if column in PRUNABLE}
    checks = {by_name[column]: values for column, values in literal.items() if column in by_name}

    def keep(row: FileRow) -> bool:
        return filters.keep(row) and all(getattr(row, c) in v for c, v in checks.items())

    kept = [row for row in rows if keep(row)] if checks or filters != Filters() else rows
    variant = "all" if len(kept) == len(rows) else "some"
    base = source.base
    if variant == "all":  # the snapshot's list; equal rows (a shared root's new snapshot of an
        kept, key = rows, base  # unchanged catalog) are the same files, their keys checked
    else:
        stamps = "\0".join(f"{row.path}\t{row.created_at}" for row in kept)
        key = xxhash.xxh3_128_hexdigest(f"{base}\0{stamps}".encode())
    cached = session.datasets.get((name, variant))
    same_rows = variant == "some" or (
        cached is not None and (cached[0] is rows or cached[0] == rows)
    )
    reusable = cached is not None and cached[1] == key and same_rows
    local = isinstance(source.filesystem, pafs.LocalFileSystem)
    if reusable and cached is not None and not local:  # checked again once the catalog changed
        return cached[2], cached[3]
    in_memory = not local and variant == "some" and sum(r.bytes for r in kept) <= _IN_MEMORY
    fragments = _fragments(session, kept, meta, source, generation, in_memory)
    if reusable and cached is not None and _same_objects(cached[4], fragments):
        return cached[2], cached[3]
    try:
        schema = _schema(session, kept or rows[:1], source)
    except pa.ArrowTypeError as exc:
        raise QueryError(
            f"the results of {rows[0].feature} have incompatible column types across code "
            f"versions ({exc}); query one version at a time: versions=[...] or "
            "WHERE code_version = '...'"
        ) from exc
    for column, alias in meta.items():
        schema = schema.append(pa.field(alias, _META_TYPES[column]))
    dataset = ds.FileSystemDataset(
        fragments,
        schema=schema,
        format=source.format,
        filesystem=source.filesystem,
    )
    serial = f"dataset {next(_serials)}"
    if in_memory:  # read again by the next query: objects are never held between queries
        session.datasets.pop((name, variant), None)
        return dataset, serial
    kept_rows = rows if variant == "all" else None
    session.datasets[(name, variant)] = (kept_rows, key, dataset, serial, fragments)
    return dataset, serial


def _same_objects(old: Sequence[Any], new: Sequence[Any]) -> bool:
    return len(old) == len(new) and all(a is b for a, b in zip(old, new, strict=True))


_FRAGMENTS_KEPT = 200_000
_REMOTE_READS = 16  # objects or footers read at once from an object store
_IN_MEMORY = 32 * 1024 * 1024  # a pruned read of objects up to this size is read whole first


def _fragments(
    session: _Session,
    rows: Sequence[FileRow],
    meta: dict[str, str],
    source: CatalogSource,
    generation: int,
    in_memory: bool = False,
) -> list[Any]:
    """The rows' files as dataset fragments, each checked (``_check_identity``) once and
    reused while its stamp holds: a local file's (inode, size, mtime_ns), so a file copied or
    renamed over it is checked again; an object's snapshot generation (no stat is cheaper than
    the footer read), so it is checked again whenever the catalog changed. Reading the footers
    of a query's files again on every query cost more than the query (an object-store GET
    each, one after the other).

    ``in_memory`` (a few objects of a pruned query): the objects are read whole, all at once,
    then checked and scanned from memory -- one round of GETs instead of a footer GET per
    object and a scan that fetches a few objects at a time; never kept.
    """
    if in_memory:
        return _in_memory_fragments(rows, meta, source)
    local = isinstance(source.filesystem, pafs.LocalFileSystem)
    aliases = tuple(meta.items())
    found: list[Any] = [None] * len(rows)
    todo: list[tuple[int, tuple[str, FileRow, tuple[tuple[str, str], ...]], Any]] = []
    for index, row in enumerate(rows):
        key = (source.base, row, aliases)
        stamp = _stamp(os.path.join(source.base, row.path), row) if local else generation
        cached = session.fragments.get(key)
        if cached is not None and cached[0] == stamp:
            found[index] = cached[1]
        else:
            todo.append((index, key, stamp))
    if not todo:
        return found
    fresh = [rows[index] for index, _, _ in todo]
    made = [
        source.format.make_fragment(
            os.path.join(source.base, row.path), source.filesystem, partition_expression=term
        )
        for row, term in zip(fresh, _partitions(fresh, meta), strict=True)
    ]
    if local or len(made) == 1:
        for fragment, row in zip(made, fresh, strict=True):
            _check_identity(fragment, row)
    else:
        list(_reader_pool().map(_check_identity, made, fresh))
    if len(session.fragments) + len(made) > _FRAGMENTS_KEPT:
        session.fragments.clear()
    for (index, key, stamp), fragment in zip(todo, made, strict=True):
        found[index] = fragment
        session.fragments[key] = (stamp, fragment)
    return found


def _in_memory_fragments(
    rows: Sequence[FileRow], meta: dict[str, str], source: CatalogSource
) -> list[Any]:
    def read(row: FileRow) -> Any:
        try:
            path = os.path.join(source.base, row.path)
            with source.filesystem.open_input_stream(path, compression=None) as stream:
                return stream.read_buffer()
        except (OSError, pa.ArrowException) as exc:
            raise FileNotFoundError(f"cannot read result file {row.path}: {exc}") from exc

    if not rows:
        return []
    buffers = list(_reader_pool().map(read, rows))
    made = [
        source.format.make_fragment(buffer, partition_expression=term)
        for buffer, term in zip(buffers, _partitions(rows, meta), strict=True)
    ]
    for fragment, row in zip(made, rows, strict=True):
        _check_identity(fragment, row)
    return made


_pool: tuple[int, ThreadPoolExecutor] | None = None


def _reader_pool() -> ThreadPoolExecutor:
    """Threads reading objects, kept: starting them per query cost ~7 ms of a ~35 ms one."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():  # a forked child makes its own
        _pool = (os.getpid(), ThreadPoolExecutor(_REMOTE_READS, "jules_cache-sql-read"))
    return _pool[1]


def _stamp(path: str, row: FileRow) -> tuple[int, int, int]:
    try:
        found = os.stat(path)
    except OSError as exc:
        raise FileNotFoundError(f"cannot read result file {row.path}: {exc}") from exc
    return (found.st_ino, found.st_size, found.st_mtime_ns)


def _check_identity(fragment: Any, row: FileRow) -> None:
    """Parse the file's footer and check the key in its own metadata, as a hit does: a file
    copied or renamed over another key's path is refused (``check --fix`` quarantines it),
    never read as this entry's data."""
    try:
        fragment.ensure_complete_metadata()
    except (OSError, pa.ArrowException) as exc:
        raise FileNotFoundError(f"cannot read result file {row.path}: {exc}") from exc
    raw = (fragment.metadata.metadata or {}).get(METADATA_KEY.encode())
    try:
        found = json.loads(raw)["key"] if raw is not None else None
    except (ValueError, TypeError, KeyError):
        found = None
    if found != row.key:
        raise QueryError(
            f"result file {row.path} holds the result of key {found!r}, not {row.key!r} "
            "(copied or renamed over it?); run `jules-cache check --fix`, which "
            "quarantines it, then retry"
        )


def _partitions(rows: Sequence[FileRow], meta: dict[str, str]) -> list[pc.Expression]:
    """Per row, ``alias == value`` for every metadata column (``is_null`` for None).

    Terms are shared between rows with the same value (symbols, configs and versions repeat):
    building 1000 files' expressions takes ~25 ms instead of ~60 ms.
    """
    terms: dict[tuple[str, Any], pc.Expression] = {}
    fields = {column: pc.field(alias) for column, alias in meta.items()}

    def term(column: str, value: Any) -> pc.Expression:
        found = terms.get((column, value))
        if found is None:
            target = fields[column]
            found = (
                target.is_null()
                if value is None
                else target == pa.scalar(value, _SCALAR_TYPES[column])
            )
            terms[(column, value)] = found
        return found

    columns = list(meta)
    expressions = []
    for row in rows:
        expression = term(columns[0], getattr(row, columns[0]))
        for column in columns[1:]:
            expression = expression & term(column, getattr(row, column))
        expressions.append(expression)
    return expressions


def _schema(session: _Session, rows: Sequence[FileRow], source: CatalogSource) -> pa.Schema:
    """The Arrow schema of the feature's files: the union over its distinct result schemas.

    Read from one footer per result schema (newest file first) and kept per schema; raises
    ``FileNotFoundError`` if no file of a schema can be read (GC got there first).
    """
    schemas = []
    for result_schema in dict.fromkeys(row.result_schema for row in rows):
        found = session.schemas.get(result_schema)
        for row in rows:
            if found is not None:
                break
            if row.result_schema == result_schema:
                try:
                    path = os.path.join(source.base, row.path)
                    found = pq.read_schema(path, filesystem=source.filesystem).remove_metadata()
                except (OSError, pa.ArrowException):
                    continue
        if found is None:
            raise FileNotFoundError(f"no readable file of result schema {result_schema}")
        session.schemas[result_schema] = found
        schemas.append(found)
    if len(schemas) == 1:
        return schemas[0]
    return pa.unify_schemas(schemas, promote_options="permissive")


# -- running a query ---------------------------------------------------------------------------


def run(
    source: CatalogSource,
    query: str,
    params: Any = None,
    filters: Filters | None = None,
) -> pa.Table:
    """Run one read-only query over the cache and return its result as an Arrow table.

    Raises ``QueryError`` for a refused statement, a syntax or catalog error (the message
    lists the available tables and views) or any other failure of the query.
    """
    if not isinstance(query, str) or not query.strip():
        raise QueryError("the SQL query is empty; pass a SELECT statement")
    _require_utf8(query)
    filters = filters or Filters()
    with _session_lock:
        session = _get_session()
        analysis = session.analyses.get(query)
        if analysis is None:
            try:
                analysis = analyse(session.con, query)
            except duckdb.Error as exc:
                raise _query_error(exc, source, session) from exc
            if len(session.analyses) >= _ANALYSES_KEPT:
                session.analyses.clear()
            session.analyses[query] = analysis
        for attempt in (1, 2):
            snapshot = _snapshot(source, analysis.tables, session)
            try:
                _install(session, snapshot, analysis, filters, source)
                return session.execute(analysis.statement, params)
            except (FileNotFoundError, duckdb.IOException, duckdb.InvalidInputException) as exc:
                if not _vanished(exc):
                    raise _query_error(exc, source, session, snapshot) from exc
                if attempt == 1:
                    # A file went away (GC) after the snapshot: retry once from a fresh one,
                    # rebuilding every view in case one was missed by the analysis.
                    session.cache = None
                    analysis = _Analysis(analysis.statement, None, analysis.prune)
                    continue
                raise QueryError(f"{exc}; the cache changed during the query, retry it") from exc
            except duckdb.PermissionException as exc:
                note = (
                    "file access is refused: the SQL session has no file access and reads the "
                    "cache only through its views and tables"
                )
                raise _query_error(exc, source, session, snapshot, note) from exc
            except duckdb.Error as exc:
                raise _query_error(exc, source, session, snapshot) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _require_utf8(query: str) -> None:
    """DuckDB takes UTF-8 text; a str that has none (a lone surrogate) is named, not a
    ``TypeError`` from the binding."""
    try:
        query.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise QueryError(
            f"the SQL query is not valid text: a lone surrogate {query[exc.start]!r} at "
            f"position {exc.start} (decode its bytes with errors='replace' or fix the source)"
        ) from exc


def _vanished(exc: Exception) -> bool:
    """Whether ``exc`` says a result file could not be read (pyarrow's errors arrive in
    DuckDB as 'reading the stream registered as ... failed: IOError: ...')."""
    if isinstance(exc, (FileNotFoundError, duckdb.IOException)):
        return True
    return "registered as" in str(exc) and "IOError" in str(exc)


def _view_names(names: dict[str, str]) -> list[str]:
    """Both views of every feature: ``<name>`` and ``<name>_history``."""
    return [n for view in names.values() for n in (view, catalog.history_name(view))]


def available_names(snapshot_names: Iterable[str], tables: Iterable[str]) -> list[str]:
    return sorted({*snapshot_names, *tables, catalog.CATALOG_VIEW, configs.CONFIGS_VIEW})


def _query_error(
    exc: Exception,
    source: CatalogSource,
    session: _Session,
    snapshot: _Snapshot | None = None,
    note: str | None = None,
) -> QueryError:
    """DuckDB's message (and ``note``), plus the list of tables and views a query can use."""
    if snapshot is None:
        try:
            snapshot = _snapshot(source, frozenset(), session)
        except Exception:  # the listing is a courtesy; the original error matters
            return QueryError(str(exc) if note is None else f"{exc}\n{note}")
    names = available_names(_view_names(snapshot.names), snapshot.manifest_tables)
    message = str(exc) if note is None else f"{exc}\n{note}"
    return QueryError(f"{message}\navailable tables and views: {', '.join(names)}")
