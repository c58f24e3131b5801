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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
# A stored feature view globs the feature's LINK FOLDER ``views/<digest>/``, which holds one hard
# link per entry of the feature: made in the transaction that publishes the entry, removed
# with the entry's file (after the commit that deletes its row; a link without a row is
# harmless, the view's join to ``entries`` drops it). A publish or a GC batch therefore changes
# files, not a catalog: the manifest holds no views at all (every ATTACH/DETACH of it costs
# what it costs without them), and the catalog file ``catalog.duckdb`` — one small view per
# feature over its folder plus copies of the manifest tables — is rebuilt outside the
# manifest lock, only when the manifest changed (``jules_cache.query.catalog_file``).

_FILE_COLUMN = "__jules_cache_file"


def link_folder(layout: Layout, feature: str) -> Path:
    """The folder of hard links a feature's stored view reads (named by a digest of the name)."""
    return layout.views / xxhash.xxh3_64_hexdigest(feature.encode())


def link_path(layout: Layout, feature: str, key: str) -> Path:
    return link_folder(layout, feature) / f"{key}{RESULT_SUFFIX}"


def add_link(layout: Layout, feature: str, key: str) -> None:
    """Link the published result of ``key`` into its feature's folder (replacing a stale link).

    Called under the exclusive manifest lock, which a plain DuckDB reader of the views also
    excludes (DuckDB's own file lock), so unlink-then-link is never observed half done.
    A file system without hard links gets a symbolic link. Through ``rootfs``: a link planted
    in place of ``views/`` or of the feature's folder is refused, never followed.
    """
    rootfs.link(layout.root, layout.result_path(key), link_path(layout, feature, key))


def remove_link(layout: Layout, feature: str, key: str) -> None:
    rootfs.unlink(layout.root, link_path(layout, feature, key), links_ok=True)


def _linked(path: Path, target: Path) -> bool:
    try:
        return os.path.samefile(path, target)
    except OSError:
        return False


def _link_names(layout: Layout, folder: Path) -> list[str]:
    """The names in a link folder that the library could have made (regular files or links
    named ``<key>.parquet``); anything else is never touched."""
    return [
        name
        for name, found in rootfs.listdir(layout.root, folder)
        if KEY_PATTERN.match(name.removesuffix(RESULT_SUFFIX))
        and name.endswith(RESULT_SUFFIX)
        and (stat.S_ISREG(found.st_mode) or stat.S_ISLNK(found.st_mode))
    ]


def clear_link_folder(layout: Layout, folder: Path) -> None:
    """Remove a link folder's links and then the folder if it is empty (never recursively)."""
    for name in _link_names(layout, folder):
        rootfs.unlink(layout.root, folder / name, links_ok=True)
    rootfs.rmdir(layout.root, folder)


def _sync_links(layout: Layout, feature: str, keys: Iterable[str]) -> int:
    """Make the feature's link folder hold exactly ``keys`` (each pointing at its result)."""
    folder = link_folder(layout, feature)
    linked = set(keys)
    missing = set(linked)
    for name in _link_names(layout, folder):
        key = name.removesuffix(RESULT_SUFFIX)
        path = folder / name
        if key in missing and _linked(path, layout.result_path(key)):
            missing.discard(key)
        else:  # stray or stale (a key republished since it was linked)
            rootfs.unlink(layout.root, path, links_ok=True)
    for key in missing:
        add_link(layout, feature, key)
    if not linked:
        rootfs.rmdir(layout.root, folder)
    return len(linked)


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
            expected[link_path(layout, row.feature, row.key)] = target
    found = {
        layout.views / folder / name
        for folder, entry in rootfs.listdir(layout.root, layout.views)
        if stat.S_ISDIR(entry.st_mode)
        for name in _link_names(layout, layout.views / folder)
    }
    problems = [(path, "the entry's file is not linked") for path in expected if path not in found]
    for path in found:
        if path not in expected:
            problems.append((path, "no entry of this feature has this key"))
        elif not _linked(path, expected[path]):
            problems.append((path, "links another file than the entry's"))
    return sorted(problems)


def _view_select(folder: Path, meta: dict[str, str], union: bool, history: bool = True) -> str:
    """A feature view: every file of its link folder, joined to ``entries`` for the metadata;
    without ``history`` only the latest entry of each (symbol, input data, config)."""
    pattern = sql_literal(str(folder / f"*{RESULT_SUFFIX}"))
    columns = ", ".join(
        f'e.{column}::{META_COLUMNS[column]} AS "{name}"' for column, name in meta.items()
    )
    latest = "" if history else f"\nWHERE e.key IN ({sqlfiles.load(_SQL_FILE)['latest_keys']})"
    return (
        f"SELECT f.* EXCLUDE ({_FILE_COLUMN}), {columns}\n"
        f"FROM read_parquet({pattern}, union_by_name = {'true' if union else 'false'}, "
        f"filename = '{_FILE_COLUMN}') AS f\n"
        f"JOIN entries AS e ON e.key = parse_filename(f.{_FILE_COLUMN}, true)" + latest
    )


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
            _sync_links(layout, feature, [row.key for row in present])
    return names


def view_published(
    con: duckdb.DuckDBPyConnection, layout: Layout, feature: str, key: str, result_schema: str
) -> None:
    """Add the entry just inserted (same transaction) to its feature's stored view: one link.

    The catalog file picks a new feature or result schema up when it is next rebuilt, after
    the commit and outside the manifest lock.
    """
    del result_schema  # the view follows its folder
    if feature not in _named.get(_manifest_identity(layout), ()):
        assign_view_names(con, feature)
    add_link(layout, feature, key)


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


def views_deleted(con: duckdb.DuckDBPyConnection, layout: Layout, deleted: dict[str, str]) -> None:
    """Update the stored views after the entries ``{key: feature}`` were deleted (same transaction).

    A feature left without entries loses its link folder here. The other links go with
    their files, after the commit (``unlink_links``): a link without a row is harmless, a row
    whose link went in a rolled-back transaction is not.
    """
    statement = sqlfiles.load(_SQL_FILE)["feature_has_entries"]
    emptied = [
        feature
        for feature in sorted(set(deleted.values()))
        if con.execute(statement, {"feature": feature}).fetchall() == [(False,)]
    ]
    if emptied:
        refresh_views(con, layout, emptied, relink=False)


def unlink_links(layout: Layout, keys: dict[str, str | None]) -> None:
    """Remove the links to the results ``{key: feature}`` (feature None: look in every folder).

    Call it where their files are unlinked (after the commit that deleted their rows).
    """
    folders: list[Path] | None = None
    for key, feature in keys.items():
        if feature is not None:
            remove_link(layout, feature, key)
            continue
        if folders is None:
            folders = [
                layout.views / name
                for name, found in rootfs.listdir(layout.root, layout.views)
                if stat.S_ISDIR(found.st_mode)
            ]
        for folder in folders:
            rootfs.unlink(layout.root, folder / f"{key}{RESULT_SUFFIX}", links_ok=True)
