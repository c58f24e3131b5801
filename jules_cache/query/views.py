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
code versions; ``<name>_history`` shows every stored result, of every code version. So that
no query mixes configs silently, a feature also has ``<name>__<config digest>`` per config and
``<name>__all``, and ``<name>`` refuses to be read once the feature has several configs
(``jules_cache.query.configs``; both places below build them).

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

IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # fullmatch only: '$' passes "x\n"
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
        "feature_configs",  # query.configs.CONFIGS_VIEW
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
    config_fingerprint: str = ""  # names the config's own view (``query.configs``)
    bytes: int = 0  # the file's size

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
        require_identifier(name)
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
        new[feature] = require_identifier(history_name(name)).removesuffix(HISTORY_SUFFIX)
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


def require_identifier(name: str) -> str:
    """Return ``name`` if it may be formatted into SQL as an identifier; raise otherwise."""
    if not IDENTIFIER.fullmatch(name):
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


def result_columns(schemas: Iterable[str]) -> set[str]:
    """Every column name of any of the result schemas (the manifest's result_schema JSON)."""
    columns: set[str] = set()
    for schema in set(schemas):
        try:
            columns.update(json.loads(schema))
        except (ValueError, TypeError):
            continue
    return columns


def meta_names(schemas: Iterable[str]) -> dict[str, str]:
    """Metadata column -> its name in a view of results with these result schemas
    (``entry_<name>`` if a result has a column of that name)."""
    taken = {c.lower() for c in result_columns(schemas)}
    return {meta: f"entry_{meta}" if meta in taken else meta for meta in META_COLUMNS}


def meta_column_names(rows: Sequence[FileRow]) -> dict[str, str]:
    """``meta_names`` of the files ``rows``."""
    return meta_names(row.result_schema for row in rows)


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
# A stored feature view reads the feature's LINK FOLDER, one hard link per entry:
#
#     views/<feature digest>/schema-<result schema digest>/__jules_symbol=<symbol>/<key>.parquet
#
# A folder per result schema: the view is one read per schema folder (each binds one footer),
# combined UNION ALL BY NAME; a single read with ``union_by_name`` would read the footer of every
# file on every query once a feature's schema changed (~13 s at 100k results). Inside, a folder
# per symbol, named the way DuckDB's hive partitioning reads it: the view takes its ``symbol``
# column from the folder name, so ``WHERE symbol = 'AAPL'`` in a plain DuckDB client opens
# AAPL's files only instead of every file of the feature. A symbol too long for a folder name
# (over ~80 characters of lower case) has its links in the schema folder itself, and a root made
# before these folders has them in the feature folder itself: each read by an unpruned part of
# the view (``check --fix`` or ``refresh_views()`` relinks the old ones).
#
# Links are made in the transaction that publishes the entry, removed with the entry's file
# (after the commit that deletes its row; a link without a row is harmless, the view's join to
# the entries drops it). A publish or a GC batch therefore changes files, not a catalog: the
# manifest holds no views at all (every ATTACH/DETACH of it costs what it costs without them),
# and the catalog file ``catalog.duckdb`` — views over the folders plus copies of the manifest
# tables — is rebuilt outside the manifest lock, only when the manifest changed
# (``jules_cache.query.catalog_file``).

_FILE_COLUMN = "__jules_cache_file"
SYMBOL_PARTITION = "__jules_symbol"  # the hive partition column of a symbol folder
_SYMBOL_PREFIX = f"{SYMBOL_PARTITION}="
_SCHEMA_PREFIX = "schema-"
# Kept as they are in a symbol folder's name; every other byte of the UTF-8 symbol is %XX. Lower
# case letters are encoded so that no two symbols ("AAPL", "aapl") share a folder on a
# case-insensitive file system, and "_" so that no symbol reads as DuckDB's NULL partition
# (``__HIVE_DEFAULT_PARTITION__``).
_UNENCODED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
_MAX_NAME_BYTES = 255  # NAME_MAX of every supported file system
VIEW_ENTRIES = "jules_cache_view_entries"  # catalog.duckdb: the metadata the views join


class LinkOwner(NamedTuple):
    """Where an entry's link is (``unlink_links`` then needs no search)."""

    feature: str
    symbol: str
    result_schema: str


def symbol_folder_name(symbol: str) -> str | None:
    """The folder of a symbol's links, ``__jules_symbol=<percent-encoded symbol>`` (DuckDB
    decodes it back to the symbol); None if that is too long for a file name."""
    encoded = "".join(chr(b) if b in _UNENCODED else f"%{b:02X}" for b in symbol.encode())
    name = _SYMBOL_PREFIX + encoded
    return name if len(name) <= _MAX_NAME_BYTES else None


def schema_folder_name(result_schema: str) -> str:
    """The folder of one result schema's links (the manifest's ``result_schema`` JSON)."""
    return _SCHEMA_PREFIX + xxhash.xxh3_64_hexdigest(result_schema.encode())


def link_folder(layout: Layout, feature: str) -> Path:
    """The folder of hard links a feature's stored view reads (named by a digest of the name)."""
    return layout.views / xxhash.xxh3_64_hexdigest(feature.encode())


def link_path(layout: Layout, feature: str, key: str, symbol: str, result_schema: str) -> Path:
    """Where the link to ``key``'s result is: in its schema's and its symbol's folder."""
    folder = link_folder(layout, feature) / schema_folder_name(result_schema)
    name = symbol_folder_name(symbol)
    return (folder / name if name is not None else folder) / f"{key}{RESULT_SUFFIX}"


def link_paths(layout: Layout, owners: Iterable[tuple[str, str, str, str]]) -> list[str]:
    """``link_path`` as text for many ``(key, feature, symbol, result_schema)``, with each
    folder's name made once (a catalog build names every entry's link: 100k of them)."""
    folders: dict[tuple[str, str], str] = {}
    symbols: dict[str, str | None] = {}
    paths = []
    for key, feature, symbol, result_schema in owners:
        folder = folders.get((feature, result_schema))
        if folder is None:
            folder = str(link_folder(layout, feature) / schema_folder_name(result_schema))
            folders[(feature, result_schema)] = folder
        if symbol not in symbols:
            symbols[symbol] = symbol_folder_name(symbol)
        name = symbols[symbol]
        place = f"{folder}/{name}" if name is not None else folder
        paths.append(f"{place}/{key}{RESULT_SUFFIX}")
    return paths


def entry_link(layout: Layout, entry: Any) -> Path:
    """``link_path`` of an ``Entry``, a ``FileRow`` or a ``LinkOwner`` with a ``key``."""
    return link_path(layout, entry.feature, entry.key, entry.symbol, entry.result_schema)


def add_link(layout: Layout, owner: LinkOwner, key: str) -> None:
    """Link the published result of ``key`` into its feature's folder (replacing a stale link).

    Called under the exclusive manifest lock; links are removed and emptied folders deleted
    only under the manifest lock too, so a folder never goes between its creation and the
    link made in it. A file system without hard links gets a symbolic link. Through
    ``rootfs``: a link planted in place of ``views/`` or of any folder below is refused,
    never followed.
    """
    path = link_path(layout, owner.feature, key, owner.symbol, owner.result_schema)
    rootfs.link(layout.root, layout.result_path(key), path)


def remove_link(layout: Layout, feature: str, key: str) -> None:
    """Remove the link to ``key``'s result, wherever it is in the feature's folder.

    Safe without the manifest lock (a publish rolling back): it leaves the folders, which a
    publish holding the lock may be about to link into; an empty folder is harmless.
    """
    unlink_links(layout, {key: feature}, prune=False)


def _linked(path: Path, target: Path) -> bool:
    try:
        return os.path.samefile(path, target)
    except OSError:
        return False


def _is_link_name(name: str, found: os.stat_result) -> bool:
    """A name the library could have made for a link (``<key>.parquet``, a file or a link)."""
    return (
        name.endswith(RESULT_SUFFIX)
        and KEY_PATTERN.fullmatch(name.removesuffix(RESULT_SUFFIX)) is not None
        and (stat.S_ISREG(found.st_mode) or stat.S_ISLNK(found.st_mode))
    )


def _subfolders(layout: Layout, folder: Path, prefix: str) -> list[Path]:
    """The real folders named ``prefix…`` in ``folder`` (a planted link is not followed)."""
    return [
        folder / name
        for name, found in rootfs.listdir(layout.root, folder)
        if name.startswith(prefix) and stat.S_ISDIR(found.st_mode)
    ]


def _places(layout: Layout, folder: Path) -> list[Path]:
    """Every folder of a feature's link folder that can hold links, deepest first: symbol
    folders, schema folders, the feature folder itself (the layout before them)."""
    places: list[Path] = []
    for schema in _subfolders(layout, folder, _SCHEMA_PREFIX):
        places += _subfolders(layout, schema, _SYMBOL_PREFIX)
        places.append(schema)
    places.append(folder)
    return places


def _links(layout: Layout, folder: Path) -> list[Path]:
    """Every link in a feature's link folder that the library could have made; anything else
    is never touched."""
    return [
        place / name
        for place in _places(layout, folder)
        for name, found in rootfs.listdir(layout.root, place)
        if _is_link_name(name, found)
    ]


def _key_of_link(path: Path) -> str:
    return path.name.removesuffix(RESULT_SUFFIX)


def _remove_empty_folders(layout: Layout, folder: Path) -> None:
    """Remove the emptied symbol and schema folders of a feature's folder (only empty, real
    ones: ``rmdir``), and the feature folder itself if it is empty too."""
    for place in _places(layout, folder):
        rootfs.rmdir(layout.root, place)


def clear_link_folder(layout: Layout, folder: Path) -> None:
    """Remove a link folder's links and then its folders (never recursively)."""
    for path in _links(layout, folder):
        rootfs.unlink(layout.root, path, links_ok=True)
    _remove_empty_folders(layout, folder)


def _sync_links(layout: Layout, feature: str, rows: Sequence[FileRow]) -> int:
    """Make the feature's link folder hold exactly the links of ``rows`` (each in its schema's
    and symbol's folder, pointing at its result)."""
    folder = link_folder(layout, feature)
    missing = {entry_link(layout, row): row.key for row in rows}
    for path in _links(layout, folder):
        key = _key_of_link(path)
        if missing.get(path) == key and _linked(path, layout.result_path(key)):
            del missing[path]
        else:  # stray, stale (a key republished since it was linked) or in the old layout
            rootfs.unlink(layout.root, path, links_ok=True)
    for path, key in missing.items():
        rootfs.link(layout.root, layout.result_path(key), path)
    _remove_empty_folders(layout, folder)
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
            expected[entry_link(layout, row)] = target
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


@dataclass(frozen=True)
class ViewPart:
    """One read of a feature view: the links of one folder (``by_symbol``: of its symbol
    folders, read with hive partitioning), with ``union_by_name`` if it mixes schemas."""

    folder: Path
    by_symbol: bool
    union: bool = False


def view_parts(folder: Path) -> list[ViewPart]:
    """What a feature's link folder holds, as the reads of its stored view (none: no view).

    Looks without following a link: per schema folder, its symbol folders and its own links;
    then the feature folder's own links (the layout before schema folders: mixed schemas).
    """
    parts: list[ViewPart] = []
    try:
        with os.scandir(folder) as entries:
            listed = sorted(entries, key=lambda entry: entry.name)
    except OSError:
        return parts
    for entry in listed:
        if entry.name.startswith(_SCHEMA_PREFIX) and entry.is_dir(follow_symlinks=False):
            by_symbol, own = _schema_parts(Path(entry.path))
            parts += [ViewPart(Path(entry.path), True)] if by_symbol else []
            parts += [ViewPart(Path(entry.path), False)] if own else []
    if any(entry.name.endswith(RESULT_SUFFIX) for entry in listed):
        parts.append(ViewPart(folder, False, union=True))
    return parts


def _schema_parts(folder: Path) -> tuple[bool, bool]:
    """Whether a schema folder has links in symbol folders, and links of its own."""
    by_symbol = own = False
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(_SYMBOL_PREFIX):
                    if not by_symbol and entry.is_dir(follow_symlinks=False):
                        by_symbol = _has_result(Path(entry.path))
                elif entry.name.endswith(RESULT_SUFFIX):
                    own = True
                if by_symbol and own:
                    break
    except OSError:
        pass
    return by_symbol, own


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
    part: ViewPart, meta: dict[str, str], history: bool, config: str | None = None
) -> str:
    """One read of a feature view (see ``ViewPart``), joined to the catalog's copy of the
    entries for the metadata columns; without ``history`` only the latest entries; with
    ``config`` (a config fingerprint) only that config's."""
    union_flag = "true" if part.union else "false"
    options = f"union_by_name = {union_flag}, filename = '{_FILE_COLUMN}'"
    if part.by_symbol:
        pattern = sql_literal(str(part.folder / f"*/*{RESULT_SUFFIX}"))
        options += (
            f", hive_partitioning = true, hive_types = {{'{SYMBOL_PARTITION}': VARCHAR}}"
            ", hive_types_autocast = false"
        )
        source = f"read_parquet({pattern}, {options})"
        foreign = [sql_literal(name) for name in _path_partitions(part.folder)]
        if foreign:  # a root path like /data/year=2024/cache: hide those columns
            source = f"(SELECT COLUMNS(lambda c: c NOT IN ({', '.join(foreign)})) FROM {source})"
        hidden = f"{_FILE_COLUMN}, {SYMBOL_PARTITION}"
    else:
        pattern = sql_literal(str(part.folder / f"*{RESULT_SUFFIX}"))
        source = f"read_parquet({pattern}, {options}, hive_partitioning = false)"
        hidden = _FILE_COLUMN
    columns = ", ".join(
        (
            f'f.{SYMBOL_PARTITION} AS "{name}"'
            if part.by_symbol and column == "symbol"
            else f'e.{column}::{META_COLUMNS[column]} AS "{name}"'
        )
        for column, name in meta.items()
    )
    # Joined by the md5 of the link's path (``view_entries`` in catalog.sql): a link moved by
    # hand to another symbol's folder is left out, never shown under another symbol. The
    # feature folder's own links (the layout before schema folders) are joined by key.
    file = f"f.{_FILE_COLUMN}"
    joined = (
        f"e.key = parse_filename({file}, true)" if part.union else f"e.link = md5_number({file})"
    )
    conditions = ([] if history else ["e.latest"]) + (
        [] if config is None else [f"e.config_fingerprint = {sql_literal(config)}"]
    )
    latest = f"\nWHERE {' AND '.join(conditions)}" if conditions else ""
    return (
        f"SELECT f.* EXCLUDE ({hidden}), {columns}\n"
        f"FROM {source} AS f\n"
        f"JOIN {VIEW_ENTRIES} AS e ON {joined}{latest}"
    )


def view_select(
    parts: Sequence[ViewPart],
    meta: dict[str, str],
    history: bool = True,
    config: str | None = None,
) -> str:
    """A feature view: its reads (``view_parts``) combined by column name (``config``: only
    the latest results of that config fingerprint)."""
    return "\nUNION ALL BY NAME\n".join(_view_part(part, meta, history, config) for part in parts)


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
    in the folders of its result schema and its ``symbol`` (looked up in the row if not given).

    Nothing here grows with the number of entries: the catalog file picks a new feature or
    result schema up when it is next rebuilt, after the commit and outside the manifest lock.
    """
    if feature not in _named.get(_manifest_identity(layout), ()):
        assign_view_names(con, feature)
    if symbol is None:
        rows = con.execute(sqlfiles.load(_SQL_FILE)["symbol_of"], {"key": key}).fetchall()
        symbol = rows[0][0]
    add_link(layout, LinkOwner(feature, symbol, result_schema), key)


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


def unlink_links(
    layout: Layout, keys: Mapping[str, LinkOwner | str | None], *, prune: bool = True
) -> None:
    """Remove the links to the results ``{key: owner}`` and (``prune``) the folders they empty.

    The owner is a ``LinkOwner`` (the link's place is known), a feature (its folder is
    searched) or None (every feature's folder is searched); a search lists each folder once
    per call, however many keys. A link in the layout before schema folders is removed too.
    Call it where their files are unlinked (after the commit that deleted their rows), under
    the manifest lock (shared or exclusive: a publish, which makes folders, holds it
    exclusively, so no folder goes between its creation and the link made in it).
    """
    places: list[Path] = []
    folders: dict[Path, set[str]] = {}  # feature folder to search -> link names to remove
    everything: set[str] = set()  # names to search for in every feature's folder
    for key, owner in keys.items():
        name = f"{key}{RESULT_SUFFIX}"
        if isinstance(owner, LinkOwner):
            places.append(link_path(layout, owner.feature, key, owner.symbol, owner.result_schema))
            places.append(link_folder(layout, owner.feature) / name)
        elif owner is not None:
            folders.setdefault(link_folder(layout, owner), set()).add(name)
        else:
            everything.add(name)
    if everything:
        for entry, found in rootfs.listdir(layout.root, layout.views):
            if stat.S_ISDIR(found.st_mode):
                folders.setdefault(layout.views / entry, set()).update(everything)
    for folder, names in folders.items():
        for place in _places(layout, folder):
            places += [place / name for name in sorted(rootfs.names(layout.root, place) & names)]
    emptied: set[Path] = set()
    for path in dict.fromkeys(places):
        if rootfs.unlink(layout.root, path, links_ok=True) and prune:
            emptied.add(path.parent)
    for folder in sorted(emptied, key=lambda path: len(path.parts), reverse=True):
        if folder.name.startswith(_SYMBOL_PREFIX) and rootfs.rmdir(layout.root, folder):
            rootfs.rmdir(layout.root, folder.parent)  # the schema folder, if emptied too
        elif folder.name.startswith(_SCHEMA_PREFIX):
            rootfs.rmdir(layout.root, folder)
