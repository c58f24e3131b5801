"""The SQL catalog: one view per feature over exactly the files the manifest references.

A feature view is a single ``read_parquet`` over an explicit, absolute file list (DuckDB table
functions take no subqueries, so the list is written into the view), plus the entry's
immutable metadata as extra columns, looked up by DuckDB's ``file_index`` virtual column::

    SELECT *, (['AAPL', 'MSFT', ...]::VARCHAR[])[file_index::BIGINT + 1] AS symbol, ...
    FROM read_parquet(['/root/objects/ab/ab….parquet', ...], union_by_name = false)

Why this shape (measured in benchmarks/bench_sql.py): joining the files to ``entries`` on the
file name costs ~40% on a full scan, because the join cannot be dropped; a list lookup on
``file_index`` is a projection that DuckDB removes when the query does not use it, and a filter
on it (``WHERE symbol = 'AAPL'``) is still pushed into the reader, which then opens only the
matching files. ``union_by_name`` is switched on only when the files' schemas differ (it makes
DuckDB open every footer to bind), so a feature whose schema changed between code versions
stays queryable: a column missing from older files reads as NULL.

View names: the last dotted component of the feature name, lower-cased, with every character
outside ``[a-z0-9_]`` replaced by ``_``. Features whose names collide take more components
(``pkg.a.bars`` / ``pkg.b.bars`` → ``a_bars`` / ``b_bars``) and, if still equal, a short hash of
the full name. A name that is a manifest table, ``feature_views`` or an SQL keyword gets a
``_view`` suffix. Names are validated against ``IDENTIFIER`` before any DDL is formatted; every
other value in generated SQL is a quoted literal (``sql_literal``). The ``feature_views`` view
maps each view name to its feature.

Metadata columns: ``symbol``, ``key``, ``code_fingerprint``, ``code_version``, ``config_json``
(JSON: ``config_json->>'freq'``) and ``created_at``. If a feature's own result has a column
of the same name, the result keeps it and the metadata column becomes ``entry_<name>``.

Persistent views in ``manifest.duckdb`` (what a plain DuckDB client sees) are split into
buckets to keep a publish cheap: ``<view>`` is the ``UNION ALL BY NAME`` of bucket views
``jules_cache_parts.<view>__NNNN`` of up to ~``2 * CHUNK_FILES`` files each (entries bucketed by
key), and a publish rewrites one bucket (``view_published``) instead of a view over every file
(see the section below). They hold ABSOLUTE paths: a root that is moved or mounted elsewhere
needs ``FeatureStore.refresh_views()``. ``store.sql`` never uses them: its session builds its own
views, with the file list and metadata in session variables (``jules_cache.query``).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import xxhash

from . import sqlfiles
from .layout import Layout

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
CATALOG_VIEW = "feature_views"
# Tables of the manifest (present or planned) a feature view must never shadow.
RESERVED = frozenset(
    {"entries", "counters", "file_fingerprints", "schema_version", "gc_runs", CATALOG_VIEW}
)
# Entry metadata exposed as view columns: name -> DuckDB type of the literal list.
META_COLUMNS = {
    "symbol": "VARCHAR",
    "key": "VARCHAR",
    "code_fingerprint": "VARCHAR",
    "code_version": "VARCHAR",
    "config_json": "JSON",
    "created_at": "TIMESTAMP",
}
_SQL_FILE = "catalog.sql"


@dataclass(frozen=True)
class FileRow:
    """One manifest entry as a feature view needs it (all immutable for a key)."""

    key: str
    feature: str
    symbol: str
    path: str  # relative to the root, '/'-separated
    code_fingerprint: str
    code_version: str | None
    config_json: str
    created_at: datetime
    result_schema: str
    time_column: str | None
    min_time: datetime | None
    max_time: datetime | None

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> list[FileRow]:
        return [cls(*row) for row in rows]


class CatalogWarning(UserWarning):
    """A feature view could not be rebuilt; the feature is left without a view until next time."""


# -- names ---------------------------------------------------------------------------------------


_keywords: frozenset[str] | None = None


def sql_keywords(con: duckdb.DuckDBPyConnection) -> frozenset[str]:
    """DuckDB's reserved keywords (a view must not need quoting to be queried)."""
    global _keywords
    if _keywords is None:
        rows = con.execute(
            "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category = 'reserved'"
        ).fetchall()
        _keywords = frozenset(row[0].lower() for row in rows)
    return _keywords


def _sanitise(text: str) -> str:
    name = re.sub(r"[^a-z0-9_]", "_", text.lower()).strip("_") or "feature"
    if name[0].isdigit():
        name = f"f_{name}"
    return name[:50]


def _candidate(feature: str, depth: int, keywords: frozenset[str]) -> str:
    parts = [p for p in re.split(r"[.:]", feature) if p and p != "<locals>"] or [feature]
    if depth > len(parts):
        digest = xxhash.xxh3_64_hexdigest(feature.encode())[:8]
        return f"{_sanitise(parts[-1])}_{digest}"
    name = _sanitise("_".join(parts[-depth:]))
    if name in RESERVED or name in keywords:
        name = f"{name}_view"
    return name


def view_names(features: Iterable[str], keywords: frozenset[str] = frozenset()) -> dict[str, str]:
    """Map each feature to its view name, deterministically for a given set of features.

    ``keywords`` (``sql_keywords(con)``) are names that get a ``_view`` suffix.
    """
    ordered = sorted(set(features))
    depth = dict.fromkeys(ordered, 1)
    while True:
        names = {f: _candidate(f, depth[f], keywords) for f in ordered}
        groups: dict[str, list[str]] = {}
        for feature, name in names.items():
            groups.setdefault(name, []).append(feature)
        clashes = [group for group in groups.values() if len(group) > 1]
        if not clashes:
            break
        for group in clashes:
            for feature in group:
                depth[feature] += 1
    for name in names.values():
        check_identifier(name)
    return names


def check_identifier(name: str) -> str:
    """Return ``name`` if it may be formatted into SQL as an identifier; raise otherwise."""
    if not IDENTIFIER.match(name):
        raise ValueError(f"refusing to use {name!r} as an SQL identifier")
    return name


# -- SQL generation ------------------------------------------------------------------------------


def sql_literal(value: Any) -> str:
    """A DuckDB literal for a str/None/number/datetime (for DDL, where nothing can be bound)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (datetime, date)):
        return "'" + value.isoformat() + "'"
    text = str(value)
    if "\x00" in text:
        raise ValueError("NUL characters cannot appear in SQL literals")
    return "'" + text.replace("'", "''") + "'"


def result_columns(rows: Sequence[FileRow]) -> set[str]:
    """Every column name of any of the files' results (from the manifest's result_schema)."""
    columns: set[str] = set()
    for schema in {row.result_schema for row in rows}:
        try:
            columns.update(json.loads(schema))
        except (ValueError, TypeError):
            continue
    return columns


def meta_column_names(rows: Sequence[FileRow]) -> dict[str, str]:
    """Metadata column -> its name in the view (``entry_<name>`` if the result has it)."""
    taken = {c.lower() for c in result_columns(rows)}
    return {meta: f"entry_{meta}" if meta in taken else meta for meta in META_COLUMNS}


def catalog_view_select(names: dict[str, str]) -> str:
    """The SELECT of ``feature_views``: view name, feature and live totals from ``entries``."""
    if names:
        values = ", ".join(
            f"({sql_literal(name)}, {sql_literal(feature)})"
            for feature, name in sorted(names.items(), key=lambda item: item[1])
        )
        source = f"(VALUES {values}) AS v(view_name, feature)"
    else:
        source = "(SELECT NULL::VARCHAR AS view_name, NULL::VARCHAR AS feature WHERE false) AS v"
    return (
        "SELECT v.view_name, v.feature, count(e.key) AS entries,\n"
        "       count(DISTINCT e.symbol) AS symbols, coalesce(sum(e.bytes), 0)::BIGINT AS bytes,\n"
        "       min(e.min_time) AS min_time, max(e.max_time) AS max_time\n"
        f"FROM {source}\n"
        "LEFT JOIN entries AS e ON e.feature = v.feature\n"
        "GROUP BY v.view_name, v.feature\n"
        "ORDER BY v.view_name"
    )


def existing_files(rows: Sequence[FileRow], root: Path) -> list[FileRow]:
    """The rows whose file is on disk (a dangling row must not break a whole view)."""
    base = str(root)
    return [row for row in rows if os.path.isfile(os.path.join(base, row.path))]


# -- persistent views in manifest.duckdb ----------------------------------------------------------
#
# A persisted feature view is the UNION ALL BY NAME of small "bucket" views in the schema
# ``jules_cache_parts``: bucket b of B (B a power of two) holds the entries whose key (hex)
# starts in the b-th of B equal ranges of ``0000``..``ffff``. A publish rewrites ONE bucket view
# (about CHUNK_FILES/2..CHUNK_FILES files), so its cost does not grow with the feature: the
# DDL of a single view over 1000 files costs ~100 ms to parse and bind (measured in
# benchmarks/bench_sql.py), a bucket's ~4 ms. B doubles when the feature outgrows it (a full
# rebuild of that feature, amortised over B * CHUNK_FILES publishes); GC and
# ``refresh_views()`` rebuild and may shrink it. The bookkeeping (feature -> view name,
# buckets, schema digest) is the JSON comment of ``feature_views``.

PARTS_SCHEMA = "jules_cache_parts"
CHUNK_FILES = 32
MAX_BUCKETS = 4096
_STATE_VERSION = 1


def bucket_count(entries: int) -> int:
    """The number of buckets for a feature of ``entries`` results (a power of two)."""
    buckets = 1
    while buckets * CHUNK_FILES < entries and buckets < MAX_BUCKETS:
        buckets *= 2
    return buckets


def bucket_of(key: str, buckets: int) -> int:
    """The bucket of a (lower-case hex) key among ``buckets``."""
    return (int(key[:4], 16) * buckets) >> 16


def bucket_bounds(bucket: int, buckets: int) -> tuple[str, str | None]:
    """The key range ``[low, high)`` of a bucket (``high`` None: no upper bound)."""
    low = f"{(bucket << 16) // buckets:04x}"
    high = None if bucket == buckets - 1 else f"{((bucket + 1) << 16) // buckets:04x}"
    return low, high


def part_name(view: str, bucket: int) -> str:
    return check_identifier(f"{view}__{bucket:04d}")


def _meta_for_schemas(schemas: Iterable[str]) -> dict[str, str]:
    """``meta_column_names`` for a feature whose results have these result_schema JSONs."""
    columns: set[str] = set()
    for schema in schemas:
        try:
            columns.update(c.lower() for c in json.loads(schema))
        except (ValueError, TypeError):
            continue
    return {meta: f"entry_{meta}" if meta in columns else meta for meta in META_COLUMNS}


def _schemas_digest(schemas: Iterable[str]) -> str:
    return xxhash.xxh3_64_hexdigest("\n".join(sorted(set(schemas))).encode())


def _read_state(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    rows = con.execute(sqlfiles.load(_SQL_FILE)["catalog_state"]).fetchall()
    if not rows or not rows[0][0]:
        return None
    try:
        state = json.loads(rows[0][0])
    except ValueError:
        return None
    if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
        return None
    return state


def _write_catalog(
    con: duckdb.DuckDBPyConnection, names: dict[str, str], features: dict[str, Any]
) -> None:
    state = {"version": _STATE_VERSION, "features": features}
    con.execute(f"CREATE OR REPLACE VIEW {CATALOG_VIEW} AS {catalog_view_select(names)}")
    con.execute(f"COMMENT ON VIEW {CATALOG_VIEW} IS {sql_literal(json.dumps(state))}")


def _top_select(view: str, buckets: Iterable[int]) -> str:
    parts = [f"SELECT * FROM {PARTS_SCHEMA}.{part_name(view, b)}" for b in sorted(buckets)]
    return "\nUNION ALL BY NAME\n".join(parts)


_FILE_COLUMN = "__jules_cache_file"


def _probe(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A second cursor on the attached manifest, to bind a view outside the transaction."""
    probe = con.cursor()
    database = con.execute("SELECT current_database()").fetchone()
    probe.execute(f'USE "{check_identifier(database[0])}"' if database else "USE memory")
    return probe


def _part_select(rows: Sequence[FileRow], root: Path, meta: dict[str, str]) -> str:
    """A bucket's rows: its explicit file list, joined to ``entries`` for the metadata.

    Only the paths are spelled out: per-file metadata as literal lists made the stored views
    so large that every ATTACH of the manifest paid for them (measured: 253 ms vs 44 ms per
    attach with 1000 views of 20 files) — and every publish, hit flush and GC step attaches.
    """
    files = ", ".join(sql_literal(str(root / row.path)) for row in rows)
    union = "true" if len({row.result_schema for row in rows}) > 1 else "false"
    columns = ", ".join(
        f'e.{column}::{META_COLUMNS[column]} AS "{name}"' for column, name in meta.items()
    )
    start = len(str(root)) + 2  # 1-based position just past "<root>/"
    return (
        f"SELECT f.* EXCLUDE ({_FILE_COLUMN}), {columns}\n"
        f"FROM read_parquet([{files}], union_by_name = {union}, filename = '{_FILE_COLUMN}')"
        f" AS f\nJOIN entries AS e ON e.path = substr(f.{_FILE_COLUMN}, {start})"
    )


def _drop_feature_views(con: duckdb.DuckDBPyConnection, view: str, parts: Iterable[str]) -> None:
    con.execute(f'DROP VIEW IF EXISTS "{check_identifier(view)}"')
    prefix = f"{view}__"
    for part in parts:
        if part.startswith(prefix) and part[len(prefix) :].isdigit():
            con.execute(f"DROP VIEW IF EXISTS {PARTS_SCHEMA}.{check_identifier(part)}")


def _build_feature(
    con: duckdb.DuckDBPyConnection,
    probe: duckdb.DuckDBPyConnection,
    layout: Layout,
    feature: str,
    view: str,
    rows: Sequence[FileRow],
    parts: Iterable[str],
    min_buckets: int = 1,
) -> dict[str, Any] | None:
    """(Re)build one feature's bucket views and its view; return its state (None: no view)."""
    _drop_feature_views(con, view, parts)
    present = existing_files(rows, layout.root)
    if not present:
        return None
    buckets = max(bucket_count(len(rows)), min(min_buckets, MAX_BUCKETS))
    meta = _meta_for_schemas({row.result_schema for row in rows})
    by_bucket: dict[int, list[FileRow]] = {}
    for row in present:
        by_bucket.setdefault(bucket_of(row.key, buckets), []).append(row)
    selects = {b: _part_select(chunk, layout.root, meta) for b, chunk in by_bucket.items()}
    try:
        for select in selects.values():
            probe.execute(f"DESCRIBE {select}")  # outside the caller's transaction
    except duckdb.Error as exc:
        warnings.warn(
            f"jules_cache: no SQL view for {feature}: {exc}", CatalogWarning, stacklevel=3
        )
        return None
    for bucket, select in sorted(selects.items()):
        con.execute(f"CREATE VIEW {PARTS_SCHEMA}.{part_name(view, bucket)} AS {select}")
    con.execute(f'CREATE VIEW "{view}" AS {_top_select(view, selects)}')
    return {
        "view": view,
        "buckets": buckets,
        "filled": sorted(selects),
        "schemas": sorted({_schemas_digest([row.result_schema]) for row in rows}),
        "meta": meta,
    }


def refresh_views(
    con: duckdb.DuckDBPyConnection,
    layout: Layout,
    features: Iterable[str] | None = None,
    *,
    min_buckets: int = 1,
) -> dict[str, str]:
    """Bring the feature views stored in the attached manifest up to date; return the name map.

    Call it inside an open manifest write transaction (``with store.manifest.write() as con:``),
    after the rows have changed: GC passes the features whose rows it deleted, or None to
    rebuild every view (a publish calls the cheaper ``view_published``). Views of features with
    no entries left are dropped; a feature whose view name changed (a new colliding feature) is
    rebuilt. A view that cannot be bound (e.g. an unreadable file) is dropped with a
    ``CatalogWarning`` instead of aborting the caller's transaction.
    """
    statements = sqlfiles.load(_SQL_FILE)
    features_now = [row[0] for row in con.execute(statements["feature_names"]).fetchall()]
    names = view_names(features_now, sql_keywords(con))
    state = _read_state(con)
    known: dict[str, Any] = {} if state is None else dict(state["features"])
    previous: dict[str, str] = {item["view"]: f for f, item in known.items()}
    if state is None and con.execute(statements["has_feature_views"]).fetchall()[0][0]:
        previous = dict(con.execute(statements["managed_views"]).fetchall())  # older catalog
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {PARTS_SCHEMA}")
    parts = [row[0] for row in con.execute(statements["part_views"]).fetchall()]
    wanted = set(names) if features is None else set(features)
    wanted |= {feature for feature, name in names.items() if previous.get(name) != feature}
    for name, feature in previous.items():
        if names.get(feature) != name:
            _drop_feature_views(con, name, parts)
            known.pop(feature, None)
    rows = FileRow.from_rows(
        con.execute(statements["catalog_files"], {"features": sorted(wanted)}).fetchall()
    )
    by_feature: dict[str, list[FileRow]] = {}
    for row in rows:
        by_feature.setdefault(row.feature, []).append(row)
    probe = _probe(con)  # binds candidate views outside the caller's transaction
    try:
        for feature in sorted(wanted):
            known.pop(feature, None)
            if feature not in names:
                continue
            view = check_identifier(names[feature])
            rows_of = by_feature.get(feature, [])
            built = _build_feature(con, probe, layout, feature, view, rows_of, parts, min_buckets)
            if built is not None:
                known[feature] = built
    finally:
        probe.close()
    _write_catalog(con, {f: item["view"] for f, item in known.items()}, known)
    return names


def view_published(con: duckdb.DuckDBPyConnection, layout: Layout, feature: str, key: str) -> None:
    """Update the persisted views after ``key`` of ``feature`` was inserted (same transaction).

    Rewrites only the key's bucket view (plus the feature view if the bucket was empty); a new
    feature, a new result schema or a bucket grown past ``2 * CHUNK_FILES`` files goes through
    ``refresh_views`` for that feature (which doubles its buckets).
    """
    state = _read_state(con)
    item = None if state is None else state["features"].get(feature)
    if item is None:
        refresh_views(con, layout, [feature])  # a new feature: names may change
        return
    buckets = int(item["buckets"])
    bucket = bucket_of(key, buckets)
    low, high = bucket_bounds(bucket, buckets)
    params = {"feature": feature, "low": low, "high": high}
    rows = FileRow.from_rows(
        con.execute(sqlfiles.load(_SQL_FILE)["bucket_files"], params).fetchall()
    )
    # The new file first: DuckDB binds the view on the first file, and this one was just read.
    rows.sort(key=lambda row: row.key != key)
    grown = len(rows) > 2 * CHUNK_FILES
    if (
        grown
        or not rows
        or rows[0].key != key
        or _schemas_digest([rows[0].result_schema]) not in item["schemas"]
    ):
        refresh_views(con, layout, [feature], min_buckets=2 * buckets if grown else 1)
        return
    present = [rows[0], *existing_files(rows[1:], layout.root)]
    select = _part_select(present, layout.root, item["meta"])
    if len(item["schemas"]) > 1:
        # Mixed schemas: binding opens every file of the bucket; check them first.
        probe = _probe(con)
        try:
            probe.execute(f"DESCRIBE {select}")
        except duckdb.Error:
            refresh_views(con, layout, [feature])  # warns and drops the view if it must
            return
        finally:
            probe.close()
    con.execute(
        f"CREATE OR REPLACE VIEW {PARTS_SCHEMA}.{part_name(view_of(item), bucket)} AS {select}"
    )
    if bucket not in item["filled"]:
        view = view_of(item)
        item["filled"] = sorted([*item["filled"], bucket])
        con.execute(f'CREATE OR REPLACE VIEW "{view}" AS {_top_select(view, item["filled"])}')
        features = state["features"]
        _write_catalog(con, {f: it["view"] for f, it in features.items()}, features)


def views_deleted(con: duckdb.DuckDBPyConnection, layout: Layout, deleted: dict[str, str]) -> None:
    """Update the persisted views after the entries ``{key: feature}`` were deleted.

    Rewrites only the buckets that held a deleted key, so a GC batch costs a few small view
    rewrites whatever the size of the cache; a feature left empty, mixed result schemas or a
    missing catalog fall back to ``refresh_views`` for the features concerned.
    """
    state = _read_state(con)
    by_feature: dict[str, set[str]] = {}
    for key, feature in deleted.items():
        by_feature.setdefault(feature, set()).add(key)
    slow: list[str] = []
    statements = sqlfiles.load(_SQL_FILE)
    for feature, keys in sorted(by_feature.items()):
        item = None if state is None else state["features"].get(feature)
        if item is None or len(item["schemas"]) > 1:
            slow.append(feature)
            continue
        buckets = int(item["buckets"])
        view = view_of(item)
        emptied = set()
        for bucket in sorted({bucket_of(key, buckets) for key in keys}):
            low, high = bucket_bounds(bucket, buckets)
            params = {"feature": feature, "low": low, "high": high}
            rows = FileRow.from_rows(con.execute(statements["bucket_files"], params).fetchall())
            present = existing_files(rows, layout.root)
            part = f"{PARTS_SCHEMA}.{part_name(view, bucket)}"
            if present:
                select = _part_select(present, layout.root, item["meta"])
                con.execute(f"CREATE OR REPLACE VIEW {part} AS {select}")
            else:
                emptied.add(bucket)
        if emptied:
            filled = [b for b in item["filled"] if b not in emptied]
            if not filled:
                slow.append(feature)  # nothing left: refresh_views drops the view
                continue
            con.execute(f'CREATE OR REPLACE VIEW "{view}" AS {_top_select(view, filled)}')
            for bucket in emptied:
                con.execute(f"DROP VIEW IF EXISTS {PARTS_SCHEMA}.{part_name(view, bucket)}")
            item["filled"] = filled
            features = state["features"]
            _write_catalog(con, {f: it["view"] for f, it in features.items()}, features)
    if slow:
        refresh_views(con, layout, slow)


def view_of(item: dict[str, Any]) -> str:
    return check_identifier(str(item["view"]))
