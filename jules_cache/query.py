"""Read-only SQL over the cache: the manifest tables and one view per feature.

``FeatureStore.sql`` runs user SQL on a DuckDB instance of its own, created once per process
and kept (``duckdb.connect`` costs ~40 ms; a query never pays it). The manifest is never
attached to that instance, so user SQL cannot reach it. Each query:

1. is parsed and refused unless it is ONE read-only statement (SELECT, or EXPLAIN of one);
2. takes a snapshot under the shared manifest lock: the entry rows of the feature views it
   references and read-only copies of the manifest tables it names — the lock is released
   before the query runs, and a half-published entry is never seen (a publish holds the
   exclusive lock from rename to commit). The snapshot is cached and reused, without the lock,
   while manifest.duckdb's (inode, size, mtime_ns) is unchanged (see ``_marker``);
3. points the referenced feature views at the snapshot: each view reads
   ``read_parquet(getvariable(...))`` and its metadata from session variables, so a query
   binds no long literal list, and a view or variable set whose content is unchanged is kept.
   Two kinds of pruning: explicit (``symbols=``,
   ``versions=``, ``since=``/``until=`` against the manifest's per-file min/max time) and
   automatic — a top-level ``AND`` of ``symbol``/``key``/``code_version``/``code_fingerprint``
   ``= 'literal'`` or ``IN (...)`` on a view referenced once builds that view from the matching
   files only;
4. runs; if a file vanished under it (a GC committed after the snapshot) it retries once with a
   fresh snapshot.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import duckdb
import pyarrow as pa
import xxhash

from . import catalog, sqlfiles
from .catalog import FileRow
from .errors import InvalidInput, QueryError
from .layout import Layout
from .manifest import Manifest

READ_ONLY_STATEMENTS = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})
PRUNABLE = ("symbol", "key", "code_version", "code_fingerprint")
_SQL_FILE = "catalog.sql"


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


@dataclass
class _Session:
    con: duckdb.DuckDBPyConnection
    views: dict[str, str] = field(default_factory=dict)  # view name -> digest of its SELECT
    variables: dict[str, str] = field(default_factory=dict)  # variable set -> digest of values
    tables: dict[str, int] = field(default_factory=dict)  # manifest table copy -> generation
    cache: _Cache | None = None  # the last snapshot, reused while the manifest is unchanged
    analyses: dict[str, _Analysis] = field(default_factory=dict)  # query text -> analysis
    sources: dict[str, tuple[Sequence[FileRow], Any]] = field(default_factory=dict)


_session_lock = threading.RLock()  # queries of one process run one at a time on the session
_session: _Session | None = None
_session_pid: int | None = None
_ANALYSES_KEPT = 256


def _get_session() -> _Session:
    global _session, _session_pid
    if _session is None or _session_pid != os.getpid():
        _session = _Session(duckdb.connect(":memory:"))
        _session_pid = os.getpid()
    return _session


# -- query analysis ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Analysis:
    tables: frozenset[str] | None  # referenced names; None: unknown, install everything
    prune: dict[str, dict[str, frozenset[str]]]  # view -> column -> allowed literal values


def check_read_only(query: str) -> None:
    """Raise ``QueryError`` unless ``query`` is exactly one SELECT (or EXPLAIN) statement."""
    statements = duckdb.extract_statements(query)
    if len(statements) != 1:
        raise QueryError(
            f"expected exactly one SQL statement, got {len(statements)}; run them one at a time"
        )
    kind = statements[0].type
    if kind not in READ_ONLY_STATEMENTS:
        raise QueryError(
            f"{kind.name} statements are refused: the cache is queried read-only (SELECT or "
            "EXPLAIN only); change the cache with FeatureStore methods or `jules-cache gc`"
        )


def analyse(con: duckdb.DuckDBPyConnection, query: str) -> _Analysis:
    """Which tables ``query`` names, and which literal filters can prune a feature view."""
    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql($1)", [query]).fetchall()[0][0])
    except (duckdb.Error, ValueError, TypeError):
        return _Analysis(None, {})
    if tree.get("error"):
        return _Analysis(None, {})
    references: list[tuple[str, str, str]] = []
    ctes: set[str] = set()
    selects: list[dict[str, Any]] = []
    unknown = False

    def walk(node: Any) -> None:
        nonlocal unknown
        if isinstance(node, dict):
            kind = node.get("type")
            if kind == "BASE_TABLE":
                references.append(
                    (
                        str(node.get("catalog_name") or ""),
                        str(node.get("schema_name") or ""),
                        str(node.get("table_name") or "").lower(),
                    )
                )
            elif kind == "TABLE_FUNCTION":
                unknown = True  # e.g. query_table('bars'): names we cannot see
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
        return _Analysis(None, {})
    names = [name for _, _, name in references]
    prune: dict[str, dict[str, frozenset[str]]] = {}
    for select in selects:
        table = select.get("from_table") or {}
        if (
            table.get("type") != "BASE_TABLE"
            or table.get("catalog_name")
            or table.get("schema_name")
        ):
            continue
        name = str(table.get("table_name", "")).lower()
        if names.count(name) != 1 or name in ctes:
            continue  # pruning is sound only when this SELECT is the view's one use
        qualifiers = {name, str(table.get("alias") or "").lower()} - {""}
        filters = _literal_filters(select.get("where_clause"), qualifiers)
        if filters:
            prune[name] = filters
    return _Analysis(frozenset(names), prune)


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
    stamps = []
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
    marker: _Marker
    trusted: bool  # the marker was old enough when read: an equal marker means no change
    generation: int
    names: dict[str, str]  # feature -> view name
    manifest_tables: tuple[str, ...]
    rows: dict[str, list[FileRow]] = field(default_factory=dict)  # loaded features only
    tables: dict[str, pa.Table] = field(default_factory=dict)  # loaded table copies only

    def covers(self, features: Iterable[str], tables: Iterable[str]) -> bool:
        return all(f in self.rows for f in features) and all(t in self.tables for t in tables)


_generations = iter(range(1, 1 << 62))


@dataclass(frozen=True)
class _Snapshot:
    names: dict[str, str]  # feature -> view name
    rows: dict[str, list[FileRow]]  # feature -> its files (only for referenced views)
    manifest_tables: tuple[str, ...]
    tables: dict[str, pa.Table]  # copies of the referenced manifest tables
    generation: int


def _wanted(cache: _Cache, analysis: _Analysis) -> tuple[list[str], list[str]]:
    if analysis.tables is None:
        return sorted(cache.names), list(cache.manifest_tables)
    tables = analysis.tables | ({"entries"} if catalog.CATALOG_VIEW in analysis.tables else set())
    features = [f for f, name in cache.names.items() if name in analysis.tables]
    return features, [t for t in cache.manifest_tables if t in tables]


def _snapshot(
    manifest: Manifest, layout: Layout, analysis: _Analysis, session: _Session
) -> _Snapshot:
    """Copy what the query needs out of the manifest, under the shared lock, then let go.

    Reuses the session's cached snapshot, without taking the lock, while the manifest's
    change marker is unchanged and trusted.
    """
    cache = session.cache
    if cache is not None and cache.trusted and cache.marker == _marker(layout):
        features, tables = _wanted(cache, analysis)
        if cache.covers(features, tables):
            return _view(cache, features, tables)
    statements = sqlfiles.load(_SQL_FILE)
    with manifest.read() as mcon:
        marker = _marker(layout)  # stable while we hold the shared lock
        if cache is None or not cache.trusted or cache.marker != marker:
            now = time.time_ns()
            newest = max((stamp[2] for stamp in marker if stamp is not None), default=0)
            features_now = [row[0] for row in mcon.execute(statements["feature_names"]).fetchall()]
            available = tuple(
                row[0] for row in mcon.execute(statements["manifest_tables"]).fetchall()
            )
            cache = _Cache(
                marker=marker,
                trusted=now - newest > _RACY_NS,
                generation=next(_generations),
                names=catalog.view_names(features_now, catalog.sql_keywords(session.con)),
                manifest_tables=available,
            )
        features, tables = _wanted(cache, analysis)
        missing = [f for f in features if f not in cache.rows]
        if missing:
            cursor = mcon.execute(statements["catalog_files"], {"features": missing})
            for feature in missing:
                cache.rows[feature] = []
            for row in FileRow.from_rows(cursor.fetchall()):
                cache.rows[row.feature].append(row)
        for table in tables:
            if table not in cache.tables:  # names come from duckdb_tables(): an allow-list
                cache.tables[table] = mcon.sql(f'SELECT * FROM "{table}"').to_arrow_table()
    session.cache = cache
    return _view(cache, features, tables)


def _view(cache: _Cache, features: Iterable[str], tables: Iterable[str]) -> _Snapshot:
    return _Snapshot(
        cache.names,
        {f: cache.rows[f] for f in features},
        cache.manifest_tables,
        {t: cache.tables[t] for t in tables},
        cache.generation,
    )


def _install(session: _Session, snapshot: _Snapshot, analysis: _Analysis, filters: Filters,
             root: Any) -> None:  # fmt: skip
    """Make the session's catalog match the snapshot: table copies and feature views."""
    con = session.con
    for table in sorted(set(session.tables) - set(snapshot.manifest_tables)):
        con.execute(f'DROP TABLE IF EXISTS "{catalog.check_identifier(table)}"')
        del session.tables[table]
    for table, data in snapshot.tables.items():
        if session.tables.get(table) == snapshot.generation:
            continue
        con.register("_jules_snapshot", data)
        try:
            name = catalog.check_identifier(table)
            con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM _jules_snapshot')
        finally:
            con.unregister("_jules_snapshot")
        session.tables[table] = snapshot.generation
    live = set(snapshot.names.values())
    for name in sorted(set(session.views) - live):
        con.execute(f'DROP VIEW IF EXISTS "{catalog.check_identifier(name)}"')
        del session.views[name]
    for feature, rows in snapshot.rows.items():
        name = catalog.check_identifier(snapshot.names[feature])
        select = _pruned_select(session, name, rows, filters, analysis.prune.get(name, {}), root)
        digest = xxhash.xxh3_128_hexdigest(select.encode())
        if session.views.get(name) != digest:
            con.execute(f'CREATE OR REPLACE VIEW "{name}" AS {select}')
            session.views[name] = digest
    if analysis.tables is None or catalog.CATALOG_VIEW in analysis.tables:
        select = catalog.catalog_view_select(snapshot.names)
        digest = xxhash.xxh3_128_hexdigest(select.encode())
        if session.views.get(catalog.CATALOG_VIEW) != digest:
            con.execute(f"CREATE OR REPLACE VIEW {catalog.CATALOG_VIEW} AS {select}")
            session.views[catalog.CATALOG_VIEW] = digest


def _pruned_select(
    session: _Session,
    name: str,
    rows: Sequence[FileRow],
    filters: Filters,
    literal: dict[str, frozenset[str]],
    root: Any,
) -> str:
    """The view over the files that can match; no file left -> an empty view of the same shape.

    The file list and the metadata live in session variables (``SET VARIABLE``), not in the
    view's text: a view is bound on every query, and binding 1000 literal paths plus 6000
    metadata literals costs ~100 ms, a ``getvariable`` nothing. The full list and the pruned
    one are kept in two variable sets, so switching between them re-binds no long list.
    """
    if not rows:
        raise ValueError("a feature view needs at least one file")
    meta = catalog.meta_column_names(rows)
    by_name = {name: column for column, name in meta.items() if column in PRUNABLE}
    checks = {by_name[column]: values for column, values in literal.items() if column in by_name}

    def keep(row: FileRow) -> bool:
        return filters.keep(row) and all(getattr(row, c) in v for c, v in checks.items())

    unfiltered = not checks and filters == Filters()
    kept = list(rows) if unfiltered else [row for row in rows if keep(row)]
    variant = "all" if len(kept) == len(rows) else "some"
    empty = not kept
    if empty:
        kept = list(rows[:1])
    prefix = f"jc_{name}_{variant}"
    source = session.sources.get(prefix)
    if not (variant == "all" and source is not None and source[0] is rows and source[1] == root):
        _set_variables(session, prefix, kept, root)
        session.sources[prefix] = (rows, root)  # the same cached rows: same variables
    union = "true" if len({row.result_schema for row in kept}) > 1 else "false"
    columns = ", ".join(
        f"getvariable('{prefix}_{column}')[file_index::BIGINT + 1] AS \"{alias}\""
        for column, alias in meta.items()
    )
    select = (
        f"SELECT *, {columns}\n"
        f"FROM read_parquet(getvariable('{prefix}_files'), union_by_name = {union})"
    )
    return f"SELECT * FROM ({select}) WHERE false" if empty else select


def _set_variables(session: _Session, prefix: str, rows: Sequence[FileRow], root: Any) -> None:
    """Put ``rows``' paths and metadata into the session variables ``<prefix>_<column>``."""
    catalog.check_identifier(prefix)
    base = str(root)
    files = [os.path.join(base, row.path) for row in rows]
    # Keys are equal across roots (same data, config, code): the paths identify the files.
    # A key deleted and published again keeps its path but not its created_at.
    stamps = (f"{path}\t{row.created_at}" for path, row in zip(files, rows, strict=True))
    digest = xxhash.xxh3_128_hexdigest("\0".join(stamps).encode())
    if session.variables.get(prefix) == digest:
        return
    values: dict[str, tuple[str, list[Any]]] = {"files": ("VARCHAR", files)}
    for column, kind in catalog.META_COLUMNS.items():
        values[column] = (kind, [getattr(row, column) for row in rows])
    for column, (kind, items) in values.items():
        session.con.execute(f"SET VARIABLE {prefix}_{column} = $1::{kind}[]", [items])
    session.variables[prefix] = digest


# -- running a query ---------------------------------------------------------------------------


def run(
    manifest: Manifest,
    layout: Layout,
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
    filters = filters or Filters()
    with _session_lock:
        session = _get_session()
        analysis = session.analyses.get(query)
        if analysis is None:
            try:
                check_read_only(query)
            except duckdb.Error as exc:
                raise _query_error(exc, manifest, layout, session) from exc
            analysis = analyse(session.con, query)
            if len(session.analyses) >= _ANALYSES_KEPT:
                session.analyses.clear()
            session.analyses[query] = analysis
        for attempt in (1, 2):
            snapshot = _snapshot(manifest, layout, analysis, session)
            try:
                _install(session, snapshot, analysis, filters, layout.root)
                return session.con.sql(query, params=params).to_arrow_table()
            except duckdb.IOException as exc:
                if attempt == 1:
                    # A file went away (GC) after the snapshot: retry once from a fresh one,
                    # rebuilding every view in case one was missed by the analysis.
                    session.cache = None
                    analysis = _Analysis(None, analysis.prune)
                    continue
                raise QueryError(f"{exc}; the cache changed during the query, retry it") from exc
            except duckdb.Error as exc:
                raise _query_error(exc, manifest, layout, session, snapshot) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def available_names(snapshot_names: Iterable[str], tables: Iterable[str]) -> list[str]:
    return sorted({*snapshot_names, *tables, catalog.CATALOG_VIEW})


def _query_error(
    exc: duckdb.Error,
    manifest: Manifest,
    layout: Layout,
    session: _Session,
    snapshot: _Snapshot | None = None,
) -> QueryError:
    """DuckDB's message, plus the list of tables and views a query can use."""
    if snapshot is None:
        try:
            snapshot = _snapshot(manifest, layout, _Analysis(frozenset(), {}), session)
        except Exception:  # the listing is a courtesy; the original error matters
            return QueryError(str(exc))
    names = available_names(snapshot.names.values(), snapshot.manifest_tables)
    return QueryError(f"{exc}\navailable tables and views: {', '.join(names)}")
