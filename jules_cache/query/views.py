"""The SQL catalog: one view per feature over exactly the files the manifest references.

Two places hold feature views. ``store.sql`` builds its own in a private DuckDB session that
has no file access (``jules_cache.query.sql``): each view is a pyarrow dataset over an explicit,
absolute file list, the entry's immutable metadata given as per-file partition values, which
pyarrow fills in as columns and uses to skip the files a pushed-down filter excludes
(``WHERE symbol = 'AAPL'`` opens AAPL's files only). A feature whose schema changed between code
versions stays queryable: a column missing from older files reads as NULL.

The views for a plain DuckDB client are stored in ``<root>/catalog.duckdb`` (built by
``jules_cache.query.catalog_file``, never in the private manifest); they read the feature's
folder of hard links instead (see the section below) and hold ABSOLUTE paths: a root that is
moved or mounted elsewhere needs ``FeatureStore.refresh_views()``.

View names: the last dotted component of the feature name, lower-cased, with every character
outside ``[a-z0-9_]`` replaced by ``_``. A name, once given, is kept for good (the manifest's
``view_names`` table, written in the transaction that publishes a feature's first entry), so a
saved query never breaks: a later feature whose name collides takes more components
(``pkg.a.bars`` then ``pkg.b.bars`` → ``bars`` and ``b_bars``) and, if still taken, a short hash
of the full name. A name that is a manifest table, ``feature_views`` or an SQL keyword gets a
``_view`` suffix.

Each feature has two views: ``<name>`` shows one result per (symbol, input data, config) --
the one computed last, i.e. by the latest code version -- so an aggregate never counts two
code versions; ``<name>_history`` shows every stored result, of every code version.

Names are validated against ``IDENTIFIER`` before any DDL is formatted; every
other value in generated SQL is a quoted literal (``sql_literal``). The ``feature_views`` view
maps each view name to its feature.

Metadata columns: ``symbol``, ``key``, ``code_fingerprint``, ``code_version``, ``config_json``
(JSON: ``config_json->>'freq'``) and ``created_at``. If a feature's own result has a column
of the same name, the result keeps it and the metadata column becomes ``entry_<name>``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import xxhash

from jules_cache.storage import rootfs, sqlfiles
from jules_cache.storage.layout import KEY_PATTERN, RESULT_SUFFIX, Layout
from jules_cache.storage.manifest import utc_now

if TYPE_CHECKING:  # callers pass connections: ``import jules_cache`` (and a hit) loads no DuckDB
    import duckdb

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
CATALOG_VIEW = "feature_views"
# Tables of the manifest (present or planned) a feature view must never shadow.
RESERVED = frozenset(
    {
        "entries",
        "entry_inputs",
        "counters",
        "call_counters",
        "counter_symbols",
        "view_names",
        "file_fingerprints",
        "schema_version",
        "gc_runs",
        CATALOG_VIEW,
        "jules_cache_view_entries",  # VIEW_ENTRIES, in catalog.duckdb
    }
)
HISTORY_SUFFIX = "_history"  # <view>_history: every code version's results
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
    data_fingerprint: str = ""

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> list[FileRow]:
        return [cls(*row) for row in rows]


class CatalogWarning(UserWarning):
    """A feature view (or the catalog file) could not be built; warned once per cause."""


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
        return f"{_sanitise(parts[-1])[:40]}_{digest}"  # room for the history suffix
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


def history_name(view: str) -> str:
    """The name of the view over every code version's results of the feature ``view`` shows."""
    return f"{view}{HISTORY_SUFFIX}"


def stable_view_names(
    assigned: dict[str, str], features: Iterable[str], keywords: frozenset[str] = frozenset()
) -> tuple[dict[str, str], dict[str, str]]:
    """Map each of ``features`` to its view name, keeping every name in ``assigned``.

    ``assigned`` is every name ever given (``view_names`` table), also to features that
    have no entries now: those names stay taken. A feature without a name gets what
    ``view_names`` would give it among the unnamed ones (so a root older than the table keeps
    its names), or, if that or its history name is taken, the first free candidate with more
    components. Returns ``({feature: name}, {feature: newly given name})``.
    """
    taken: set[str] = set()
    for name in assigned.values():
        taken.update((name, history_name(name)))
    wanted = sorted(set(features))
    unnamed = [feature for feature in wanted if feature not in assigned]
    preferred = view_names(unnamed, keywords) if unnamed else {}
    new: dict[str, str] = {}
    for feature in unnamed:
        candidates = itertools.chain(
            [preferred[feature]],
            (_candidate(feature, depth, keywords) for depth in range(1, 64)),
            (f"{_candidate(feature, 64, keywords)}_{n}" for n in itertools.count(2)),
        )
        name = next(c for c in candidates if c not in taken and history_name(c) not in taken)
        new[feature] = check_identifier(history_name(name)).removesuffix(HISTORY_SUFFIX)
        taken.update((name, history_name(name)))
    names = {feature: assigned.get(feature) or new[feature] for feature in wanted}
    return names, new


def current_view_names(
    con: duckdb.DuckDBPyConnection, features: Iterable[str], keywords: frozenset[str]
) -> dict[str, str]:
    """``{feature: view name}`` for ``features``, as the attached manifest assigns them."""
    rows = con.execute(sqlfiles.load(_SQL_FILE)["assigned_view_names"]).fetchall()
    return stable_view_names(dict(rows), features, keywords)[0]


def assign_view_names(con: duckdb.DuckDBPyConnection, feature: str | None = None) -> None:
    """Give each feature that has entries and no view name one, for good (in the caller's
    write transaction). With ``feature`` (just published): nothing to do if it has one,
    which is the cheap lookup on every publish; the scan for unnamed features runs once per
    new feature."""
    statements = sqlfiles.load(_SQL_FILE)
    if (
        feature is not None
        and con.execute(statements["view_name_of"], {"feature": feature}).fetchall()
    ):
        return
    unnamed = [row[0] for row in con.execute(statements["unnamed_features"]).fetchall()]
    if not unnamed:
        return
    assigned = dict(con.execute(statements["assigned_view_names"]).fetchall())
    _, new = stable_view_names(assigned, unnamed, sql_keywords(con))
    con.execute(
        statements["assign_view_names"],
        {"features": list(new), "names": list(new.values()), "assigned_at": utc_now()},
    )


def latest_rows(rows: Sequence[FileRow]) -> list[FileRow]:
    """Of each (symbol, input data, config), the entry computed last (the latest code
    version): what a feature's default view shows. Keeps the order of ``rows``."""
    latest: dict[tuple[str, str, str], FileRow] = {}
    for row in rows:
        group = (row.symbol, row.data_fingerprint, row.config_json)
        found = latest.get(group)
        if found is None or (row.created_at, row.key) > (found.created_at, found.key):
            latest[group] = row
    kept = {id(row) for row in latest.values()}
    return [row for row in rows if id(row) in kept]


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
            f"({sql_literal(name)}, {sql_literal(feature)}, {sql_literal(history_name(name))})"
            for feature, name in sorted(names.items(), key=lambda item: item[1])
        )
        source = f"(VALUES {values}) AS v(view_name, feature, history_view)"
    else:
        source = (
            "(SELECT NULL::VARCHAR AS view_name, NULL::VARCHAR AS feature, "
            "NULL::VARCHAR AS history_view WHERE false) AS v"
        )
    return (
        "SELECT v.view_name, v.feature, v.history_view, count(e.key) AS entries,\n"
        "       count(DISTINCT e.symbol) AS symbols, coalesce(sum(e.bytes), 0)::BIGINT AS bytes,\n"
        "       min(e.min_time) AS min_time, max(e.max_time) AS max_time\n"
        f"FROM {source}\n"
        "LEFT JOIN entries AS e ON e.feature = v.feature\n"
        "GROUP BY v.view_name, v.feature, v.history_view\n"
        "ORDER BY v.view_name"
    )


# -- link folders: what the views of catalog.duckdb read -------------------------------------------
#
# A stored feature view reads the feature's LINK FOLDER ``views/<digest>/``, which holds one hard
# link per entry of the feature, in a folder per symbol named the way DuckDB's hive partitioning
# reads it: ``views/<digest>/__jules_symbol=<percent-encoded symbol>/<key>.parquet``. The view
# takes its ``symbol`` column from that folder name, so ``WHERE symbol = 'AAPL'`` in a plain
# DuckDB client opens AAPL's files only (hive partition pruning) instead of every file of the
# feature. A symbol too long for a folder name (over ~80 characters of lower case) has its links
# in the feature's folder itself, read by a second, unpruned part of the view; so do the links of
# a root made before symbol folders existed, until ``check --fix`` or ``refresh_views()`` relinks
# them.
#
# Links are made in the transaction that publishes the entry, removed with the entry's file
# (after the commit that deletes its row; a link without a row is harmless, the view's join to
# the entries drops it). A publish or a GC batch therefore changes files, not a catalog: the
# manifest holds no views at all (every ATTACH/DETACH of it costs what it costs without them),
# and the catalog file ``catalog.duckdb`` — one small view per feature over its folder plus
# copies of the manifest tables — is rebuilt outside the manifest lock, only when the manifest
# changed (``jules_cache.query.catalog_file``).

_FILE_COLUMN = "__jules_cache_file"
SYMBOL_PARTITION = "__jules_symbol"  # the hive partition column of a symbol folder
_SYMBOL_PREFIX = f"{SYMBOL_PARTITION}="
# Kept as they are in a symbol folder's name; every other byte of the UTF-8 symbol is %XX. Lower
# case letters are encoded so that no two symbols ("AAPL", "aapl") share a folder on a
# case-insensitive file system, and "_" so that no symbol reads as DuckDB's NULL partition
# (``__HIVE_DEFAULT_PARTITION__``).
_UNENCODED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
_MAX_NAME_BYTES = 255  # NAME_MAX of every supported file system
VIEW_ENTRIES = "jules_cache_view_entries"  # catalog.duckdb: the metadata the views join


class LinkOwner(NamedTuple):
    """Whose link a deleted entry had: where ``unlink_links`` finds it without searching."""

    feature: str
    symbol: str


def symbol_folder_name(symbol: str) -> str | None:
    """The folder of a symbol's links, ``__jules_symbol=<percent-encoded symbol>`` (DuckDB
    decodes it back to the symbol); None if that is too long for a file name."""
    encoded = "".join(chr(b) if b in _UNENCODED else f"%{b:02X}" for b in symbol.encode())
    name = _SYMBOL_PREFIX + encoded
    return name if len(name) <= _MAX_NAME_BYTES else None


def link_folder(layout: Layout, feature: str) -> Path:
    """The folder of hard links a feature's stored view reads (named by a digest of the name)."""
    return layout.views / xxhash.xxh3_64_hexdigest(feature.encode())


def link_path(layout: Layout, feature: str, key: str, symbol: str) -> Path:
    """Where the link to ``key``'s result is: in its symbol's folder of the feature's folder."""
    folder = link_folder(layout, feature)
    name = symbol_folder_name(symbol)
    return (folder / name if name is not None else folder) / f"{key}{RESULT_SUFFIX}"


def _flat_path(layout: Layout, feature: str, key: str) -> Path:
    """Where a link sits in a root made before symbol folders (or for a very long symbol)."""
    return link_folder(layout, feature) / f"{key}{RESULT_SUFFIX}"


def add_link(layout: Layout, feature: str, key: str, symbol: str) -> None:
    """Link the published result of ``key`` into its feature's folder (replacing a stale link).

    Called under the exclusive manifest lock; links are removed and emptied symbol folders
    deleted only under the manifest lock too, so a folder never goes between its creation and
    the link made in it. A file system without hard links gets a symbolic link. Through
    ``rootfs``: a link planted in place of ``views/``, the feature's folder or a symbol's
    folder is refused, never followed.
    """
    rootfs.link(layout.root, layout.result_path(key), link_path(layout, feature, key, symbol))


def remove_link(layout: Layout, feature: str, key: str, symbol: str | None = None) -> None:
    """Remove the link to ``key``'s result (``symbol`` None: look in every symbol folder)."""
    unlink_links(layout, {key: LinkOwner(feature, symbol) if symbol is not None else feature})


def _linked(path: Path, target: Path) -> bool:
    try:
        return os.path.samefile(path, target)
    except OSError:
        return False


def _is_link_name(name: str, found: os.stat_result) -> bool:
    """A name the library could have made for a link (``<key>.parquet``, a file or a link)."""
    return (
        name.endswith(RESULT_SUFFIX)
        and KEY_PATTERN.match(name.removesuffix(RESULT_SUFFIX)) is not None
        and (stat.S_ISREG(found.st_mode) or stat.S_ISLNK(found.st_mode))
    )


def _symbol_folders(layout: Layout, folder: Path) -> list[Path]:
    """The real symbol folders of a feature's link folder (a planted link is not followed)."""
    return [
        folder / name
        for name, found in rootfs.listdir(layout.root, folder)
        if name.startswith(_SYMBOL_PREFIX) and stat.S_ISDIR(found.st_mode)
    ]


def _links(layout: Layout, folder: Path) -> list[Path]:
    """Every link in a feature's link folder and its symbol folders that the library could
    have made; anything else is never touched."""
    found: list[Path] = []
    for name, entry in rootfs.listdir(layout.root, folder):
        if name.startswith(_SYMBOL_PREFIX) and stat.S_ISDIR(entry.st_mode):
            found += [
                folder / name / inner
                for inner, item in rootfs.listdir(layout.root, folder / name)
                if _is_link_name(inner, item)
            ]
        elif _is_link_name(name, entry):
            found.append(folder / name)
    return found


def _key_of_link(path: Path) -> str:
    return path.name.removesuffix(RESULT_SUFFIX)


def _remove_empty_symbol_folders(layout: Layout, folders: Iterable[Path]) -> None:
    for folder in folders:
        rootfs.rmdir(layout.root, folder)  # only if empty and real


def clear_link_folder(layout: Layout, folder: Path) -> None:
    """Remove a link folder's links, its emptied symbol folders and then the folder if it is
    empty (never recursively)."""
    for path in _links(layout, folder):
        rootfs.unlink(layout.root, path, links_ok=True)
    _remove_empty_symbol_folders(layout, _symbol_folders(layout, folder))
    rootfs.rmdir(layout.root, folder)


def _sync_links(layout: Layout, feature: str, rows: Sequence[FileRow]) -> int:
    """Make the feature's link folder hold exactly the links of ``rows`` (each in its symbol's
    folder, pointing at its result)."""
    folder = link_folder(layout, feature)
    missing = {link_path(layout, feature, row.key, row.symbol): row.key for row in rows}
    for path in _links(layout, folder):
        key = _key_of_link(path)
        if missing.get(path) == key and _linked(path, layout.result_path(key)):
            del missing[path]
        else:  # stray, stale (a key republished since it was linked) or in the old layout
            rootfs.unlink(layout.root, path, links_ok=True)
    for path, key in missing.items():
        rootfs.link(layout.root, layout.result_path(key), path)
    _remove_empty_symbol_folders(layout, _symbol_folders(layout, folder))
    if not rows:
        rootfs.rmdir(layout.root, folder)
    return len(rows)


def stray_link_folders(layout: Layout, features: Iterable[str]) -> list[Path]:
    """Link folders (real ones: a planted link is not ours) that belong to no feature."""
    known = {link_folder(layout, feature).name for feature in features}
    return sorted(
        layout.views / name
        for name, found in rootfs.listdir(layout.root, layout.views)
        if name not in known and stat.S_ISDIR(found.st_mode)
    )


def link_problems(layout: Layout, rows: Sequence[FileRow]) -> list[tuple[Path, str]]:
    """Where the link folders disagree with the manifest ``rows``: (link path, what is wrong)."""
    expected: dict[Path, Path] = {}
    for row in rows:
        target = layout.root / row.path
        if target.is_file():
            expected[link_path(layout, row.feature, row.key, row.symbol)] = target
    found = {
        path
        for folder, entry in rootfs.listdir(layout.root, layout.views)
        if stat.S_ISDIR(entry.st_mode)
        for path in _links(layout, layout.views / folder)
    }
    problems = [(path, "the entry's file is not linked") for path in expected if path not in found]
    for path in found:
        if path not in expected:
            problems.append((path, "no entry of this feature has this key in this folder"))
        elif not _linked(path, expected[path]):
            problems.append((path, "links another file than the entry's"))
    return sorted(problems)


def linked_parts(folder: Path) -> tuple[bool, bool]:
    """Whether a feature's link folder holds links in symbol folders, and links of its own
    (without following a link): which parts its stored view reads."""
    nested = flat = False
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(_SYMBOL_PREFIX):
                    if not nested and entry.is_dir(follow_symlinks=False):
                        nested = _has_result(Path(entry.path))
                elif not flat and entry.name.endswith(RESULT_SUFFIX):
                    flat = True
                if nested and flat:
                    break
    except OSError:
        pass
    return nested, flat


def _has_result(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(entry.name.endswith(RESULT_SUFFIX) for entry in entries)
    except OSError:
        return False


def _path_partitions(folder: Path) -> list[str]:
    """Column names DuckDB's hive partitioning could take from ``key=value`` components of
    the root's own path (it parses every component): left out of a view's columns."""
    names: set[str] = set()
    for part in folder.parts:
        pieces = part.split("=")
        names.update("=".join(pieces[:i]) for i in range(1, len(pieces)))
    return sorted(name for name in names if name)


def _view_part(
    folder: Path, meta: dict[str, str], union: bool, history: bool, *, by_symbol: bool
) -> str:
    """One part of a feature view: the links in symbol folders (``by_symbol``, read with hive
    partitioning so a filter on ``symbol`` opens only that symbol's files), or the links in the
    folder itself; joined to the copied entries for the metadata columns."""
    union_flag = "true" if union else "false"
    options = f"union_by_name = {union_flag}, filename = '{_FILE_COLUMN}'"
    if by_symbol:
        pattern = sql_literal(str(folder / f"*/*{RESULT_SUFFIX}"))
        options += (
            f", hive_partitioning = true, hive_types = {{'{SYMBOL_PARTITION}': VARCHAR}}"
            ", hive_types_autocast = false"
        )
        source = f"read_parquet({pattern}, {options})"
        foreign = [sql_literal(name) for name in _path_partitions(folder)]
        if foreign:  # a root path like /data/year=2024/cache: hide those columns
            source = f"(SELECT COLUMNS(lambda c: c NOT IN ({', '.join(foreign)})) FROM {source})"
        hidden = f"{_FILE_COLUMN}, {SYMBOL_PARTITION}"
    else:
        pattern = sql_literal(str(folder / f"*{RESULT_SUFFIX}"))
        source = f"read_parquet({pattern}, {options}, hive_partitioning = false)"
        hidden = _FILE_COLUMN
    columns = ", ".join(
        (
            f'f.{SYMBOL_PARTITION} AS "{name}"'
            if by_symbol and column == "symbol"
            else f'e.{column}::{META_COLUMNS[column]} AS "{name}"'
        )
        for column, name in meta.items()
    )
    # The symbol's folder must be the entry's (a link moved by hand is left out, never shown
    # under another symbol); the filter on it is what prunes the other symbols' files.
    same_symbol = f" AND e.symbol = f.{SYMBOL_PARTITION}" if by_symbol else ""
    latest = "" if history else "\nWHERE e.latest"
    return (
        f"SELECT f.* EXCLUDE ({hidden}), {columns}\n"
        f"FROM {source} AS f\n"
        f"JOIN {VIEW_ENTRIES} AS e ON e.key = parse_filename(f.{_FILE_COLUMN}, true)"
        f"{same_symbol}{latest}"
    )


def _view_select(
    folder: Path,
    meta: dict[str, str],
    union: bool,
    history: bool = True,
    *,
    by_symbol: bool = True,
    flat: bool = False,
) -> str:
    """A feature view over the links of its folder (see ``_view_part``); without ``history``
    only the latest entry of each (symbol, input data, config)."""
    parts = [
        _view_part(folder, meta, union, history, by_symbol=nested)
        for nested, present in ((True, by_symbol), (False, flat))
        if present
    ]
    return "\nUNION ALL BY NAME\n".join(parts)


def existing_files(rows: Sequence[FileRow], root: Path) -> list[FileRow]:
    """The rows whose file is on disk (a dangling row must not break a whole view)."""
    base = str(root)
    return [row for row in rows if os.path.isfile(os.path.join(base, row.path))]


def refresh_views(
    con: duckdb.DuckDBPyConnection,
    layout: Layout,
    features: Iterable[str] | None = None,
    *,
    relink: bool = True,
) -> dict[str, str]:
    """Make the link folders the stored views read agree with the attached manifest.

    Call it inside an open manifest write transaction (``with store.manifest.write() as con:``)
    after rows changed in a way ``view_published``/``views_deleted`` do not cover: rows
    registered or dropped by ``check``, a moved root (``features=None`` relinks every feature
    and removes folders of features that are gone). A feature without entries loses its
    folder. The views themselves live in ``catalog.duckdb``, rebuilt after the commit
    (``jules_cache.query.catalog_file``). ``relink=False`` only removes the folders of emptied
    features. Returns ``{feature: view name}``.
    """
    statements = sqlfiles.load(_SQL_FILE)
    assign_view_names(con)
    features_now = [row[0] for row in con.execute(statements["feature_names"]).fetchall()]
    names = current_view_names(con, features_now, sql_keywords(con))
    wanted = set(names) if features is None else set(features)
    if features is None:
        for folder in stray_link_folders(layout, features_now):
            clear_link_folder(layout, folder)
    rows = FileRow.from_rows(
        con.execute(statements["catalog_files"], {"features": sorted(wanted)}).fetchall()
    )
    by_feature: dict[str, list[FileRow]] = {}
    for row in rows:
        by_feature.setdefault(row.feature, []).append(row)
    for feature in sorted(wanted):
        if feature not in names:
            clear_link_folder(layout, link_folder(layout, feature))
        elif relink:
            present = existing_files(by_feature.get(feature, []), layout.root)
            _sync_links(layout, feature, present)
    return names


def view_published(
    con: duckdb.DuckDBPyConnection,
    layout: Layout,
    feature: str,
    key: str,
    result_schema: str,
    symbol: str | None = None,
) -> None:
    """Add the entry just inserted (same transaction) to its feature's stored view: one link,
    in the folder of its ``symbol`` (looked up in the row when not given).

    The catalog file picks a new feature or result schema up when it is next rebuilt, after
    the commit and outside the manifest lock: nothing here grows with the number of entries.
    """
    del result_schema  # the view follows its folder
    if feature not in _named.get(_manifest_identity(layout), ()):
        assign_view_names(con, feature)
    if symbol is None:
        rows = con.execute(sqlfiles.load(_SQL_FILE)["symbol_of"], {"key": key}).fetchall()
        symbol = rows[0][0]
    add_link(layout, feature, key, symbol)


# Features known to have a view name, per manifest file (path, inode): names are never taken
# back, so once a publish of a feature has committed, later publishes skip the lookup (~1 ms
# of a ~10 ms publish). A rebuilt manifest is a new file, and its rebuild names every feature.
_named: dict[tuple[str, int] | None, set[str]] = {}


def _manifest_identity(layout: Layout) -> tuple[str, int] | None:
    try:
        return (str(layout.manifest), os.stat(layout.manifest).st_ino)
    except OSError:
        return None


def remember_named(layout: Layout, feature: str) -> None:
    """Record, after its publish committed, that ``feature`` has a view name for good."""
    identity = _manifest_identity(layout)
    if identity is not None:
        _named.setdefault(identity, set()).add(feature)


def views_deleted(
    con: duckdb.DuckDBPyConnection, layout: Layout, deleted: Mapping[str, LinkOwner]
) -> None:
    """Update the stored views after the entries ``{key: owner}`` were deleted (same
    transaction).

    A feature left without entries loses its link folder here. The other links go with
    their files, after the commit (``unlink_links``): a link without a row is harmless, a row
    whose link went in a rolled-back transaction is not.
    """
    statement = sqlfiles.load(_SQL_FILE)["feature_has_entries"]
    emptied = [
        feature
        for feature in sorted({owner.feature for owner in deleted.values()})
        if con.execute(statement, {"feature": feature}).fetchall() == [(False,)]
    ]
    if emptied:
        refresh_views(con, layout, emptied, relink=False)


def unlink_links(layout: Layout, keys: Mapping[str, LinkOwner | str | None]) -> None:
    """Remove the links to the results ``{key: owner}`` and the symbol folders they empty.

    The owner is a ``LinkOwner`` (feature and symbol: the link's place is known), a feature
    (its folder is searched) or None (every feature's folder is searched); a search lists the
    folders once per call, however many keys. A link in the layout before symbol folders is
    removed too. Call it where their files are unlinked (after the commit that deleted their
    rows), under the manifest lock.
    """
    places: list[Path] = []
    folders: dict[Path, set[str]] = {}  # folder to search -> link names to remove there
    everything: set[str] = set()  # names to search for in every feature's folder
    for key, owner in keys.items():
        if isinstance(owner, LinkOwner):
            places.append(link_path(layout, owner.feature, key, owner.symbol))
            places.append(_flat_path(layout, owner.feature, key))
        elif owner is not None:
            folders.setdefault(link_folder(layout, owner), set()).add(f"{key}{RESULT_SUFFIX}")
        else:
            everything.add(f"{key}{RESULT_SUFFIX}")
    if folders or everything:
        if everything:
            for name, found in rootfs.listdir(layout.root, layout.views):
                if stat.S_ISDIR(found.st_mode):
                    folders.setdefault(layout.views / name, set()).update(everything)
        for folder, names in folders.items():
            for place in (folder, *_symbol_folders(layout, folder)):
                places += [place / name for name in rootfs.names(layout.root, place) & names]
    emptied: set[Path] = set()
    for path in dict.fromkeys(places):
        removed = rootfs.unlink(layout.root, path, links_ok=True)
        if removed and path.parent.name.startswith(_SYMBOL_PREFIX):
            emptied.add(path.parent)
    _remove_empty_symbol_folders(layout, sorted(emptied))
