"""``<root>/catalog.duckdb``: the file plain DuckDB clients open, which never blocks the cache.

The manifest is private: DuckDB lets a file be open read-write by one process or read-only by
several, never both, so a notebook holding ``manifest.duckdb`` open would stop every publish,
hit flush, GC and check. The catalog file is a COPY for SQL clients: the manifest's tables
(``entries``, ``counters``, ``gc_runs``, ...), ``feature_views`` and one view per feature over
its folder of hard links (``views/<digest>/__jules_symbol=<symbol>/*.parquet``, read with hive
partitioning so a filter on ``symbol`` opens that symbol's files only), joined to
``jules_cache_view_entries``: the copied entries' metadata columns, the md5 of each entry's link
path (the join key: DuckDB computes it once per file) and which entry is the latest of its
(symbol, input data, config), computed once per build instead of on every query.

It is only ever written as a new file (``catalog.duckdb.<pid>.<id>.tmp``) and renamed over
the old one (``os.replace``), never opened read-write in place: a client holding the old file
keeps a consistent snapshot for as long as it likes, and blocks nobody. To see a newer build, a
client ATTACHes the file (``ATTACH '<root>/catalog.duckdb' AS cache (READ_ONLY); USE cache``)
and attaches it again (after ``USE memory; DETACH cache``): an ATTACH opens the path anew,
while ``duckdb.connect(path)`` returns the database DuckDB already holds for that path as long
as any connection to it is open in the process -- the old file, whatever was renamed over it
(``tests/sql/test_sql_answers.py`` shows both). Its rows are a snapshot; the views read the link
folders live, so a result deleted since disappears from them and one published since appears
once the catalog is rebuilt.

When: after a committed manifest write, by the process that wrote, OUTSIDE the manifest lock
(``duckdb`` work of ~10–100 ms must not lengthen a ~13 ms publish), only if the manifest changed
since the catalog was built and the catalog is at least ``catalog_refresh_seconds`` old; the
``flush()`` of a store that wrote (also ``close()`` and interpreter exit), ``check(fix=True)``
and ``refresh_views()`` bring it up to date at once; a store that only read never writes it.
One process builds at a time (``catalog.lock``); the others skip.

Staleness costs two ``stat`` calls: the catalog file's mtime is set to the manifest's mtime at
the moment its tables were copied (under the shared manifest lock), and every committed write
changes the manifest's mtime; the catalog's ctime (set by the rename) is when it was built.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from jules_cache.errors import JulesCacheError, LockTimeout
from jules_cache.query import configs
from jules_cache.query.views import (
    CATALOG_VIEW,
    CatalogWarning,
    ViewPart,
    catalog_view_select,
    current_view_names,
    history_name,
    link_folder,
    link_paths,
    meta_names,
    require_identifier,
    sql_keywords,
    sql_literal,
    view_parts,
    view_select,
)
from jules_cache.storage import sqlfiles
from jules_cache.storage.layout import Layout
from jules_cache.storage.locks import file_lock
from jules_cache.storage.manifest import Manifest, utc_now

if TYPE_CHECKING:  # imported where the catalog is built: a hit never loads DuckDB
    import duckdb

CATALOG_NAME = "catalog.duckdb"
CATALOG_LOCK_NAME = "catalog.lock"
DEFAULT_REFRESH_SECONDS = 10.0
INFO_TABLE = "jules_cache_catalog"  # when it was built and which views could not be
_ALIAS = "jules_catalog"
_PREVIOUS = "jules_catalog_previous"
_SNAPSHOT = "jules_manifest_snapshot"
_SMALL_BLOCK_SIZE = 16384  # DuckDB's smallest (the default is 256 KiB)
_SMALL_MANIFEST_BYTES = 16 * 1024 * 1024
_LEFTOVER_SECONDS = 3600.0
_UNREADABLE = "a file it reads is damaged or unreadable: "
_log = logging.getLogger("jules_cache")
_warned: set[tuple[str, str, str]] = set()  # (root, feature, cause) warned in this process


def catalog_path(layout: Layout) -> Path:
    return layout.root / CATALOG_NAME


def is_stale(layout: Layout, min_age: float = 0.0) -> bool:
    """Whether the manifest changed since the catalog was built, and it is ``min_age`` s old."""
    try:
        manifest = os.stat(layout.manifest)
    except OSError:
        return False  # nothing to copy
    try:
        catalog = os.stat(catalog_path(layout))
    except OSError:
        return True
    if catalog.st_mtime_ns == manifest.st_mtime_ns:
        return False
    return time.time() - catalog.st_ctime >= min_age


def refresh(manifest: Manifest, *, min_age: float = 0.0, wait: bool = False) -> bool:
    """Rebuild the catalog file if stale (see ``is_stale``); return whether it was rebuilt.

    ``wait`` waits for another process's build (then rebuilds only if still stale); without
    it a build in progress elsewhere means skip. Raises ``ManifestError``/``OSError`` when
    the build fails.
    """
    layout = manifest.layout
    if not is_stale(layout, min_age):
        return False
    timeout = manifest.lock_timeout if wait else 0.0
    try:
        with file_lock(layout.root / CATALOG_LOCK_NAME, timeout):
            if not is_stale(layout, min_age):
                return False  # another process built it while we waited
            build(manifest, wait=wait)
    except LockTimeout:
        if wait:
            raise
        return False
    return True


def refresh_quietly(manifest: Manifest, min_age: float, *, wait: bool = False) -> None:
    """``refresh`` for the hooks after a write: a failure is one ``CatalogWarning`` per cause.

    The write it follows has committed, so the caller must not fail for the catalog's sake.
    """
    import duckdb

    try:
        refresh(manifest, min_age=min_age, wait=wait)
    except LockTimeout:
        pass  # the manifest is in use: whoever writes next refreshes the catalog
    except (JulesCacheError, duckdb.Error, OSError) as exc:
        _warn_once(manifest.layout, "", f"the SQL catalog file could not be rebuilt: {exc}")


def build(manifest: Manifest, *, wait: bool = True) -> dict[str, str]:
    """Write a new catalog file from the manifest and rename it into place.

    Call it holding ``catalog.lock``. Writers wait only for a file copy: the manifest is
    copied, under the shared manifest lock, to a private temp file (``Manifest.copy_to``,
    ~10 ms at 100k entries; in the system temp folder, so the root's disk never holds two
    manifests), and the catalog is built from that copy after the lock is released: the
    tables copied in, ``jules_cache_view_entries`` and the views added (binding a view lists
    its folders and reads a footer per part), on a DuckDB connection of its own, so a slow
    build holds up no publish of another thread either. Without ``wait`` a manifest in use
    raises ``LockTimeout`` instead of waiting. A view that cannot be bound is left out and
    reported once per feature and cause (also across processes: the causes are kept in the
    catalog; see ``_warn_once``). Returns ``{feature: view name}``.
    """
    layout = manifest.layout
    _remove_leftovers(layout)
    target = catalog_path(layout)
    # Next to its target (same file system, and no dependence on tmp/ being usable).
    new = target.with_name(f"{target.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    statements = sqlfiles.load("catalog.sql")
    problems: list[tuple[str, str]] = []
    descriptor, name = tempfile.mkstemp(prefix="jules-manifest-", suffix=".duckdb")  # mode 0600
    os.close(descriptor)
    snapshot = Path(name)
    try:
        source_mtime = manifest.copy_to(snapshot, wait=wait)
        # Small blocks: a catalog of a small cache is ~0.1 MB, not ~1 MB; a big one copies
        # its tables ~3x faster in the default blocks.
        small = snapshot.stat().st_size < _SMALL_MANIFEST_BYTES
        block = f" (BLOCK_SIZE {_SMALL_BLOCK_SIZE})" if small else ""
        with _build_guard:
            con = _build_connection()
            con.execute(f"ATTACH ? AS {_SNAPSHOT} (READ_ONLY)", [str(snapshot)])
            try:
                con.execute(f"ATTACH ? AS {_ALIAS}{block}", [str(new)])
                try:
                    built = _fill(con, layout, statements, problems)
                    con.execute(f"CHECKPOINT {_ALIAS}")
                finally:
                    con.execute(f"DETACH {_ALIAS}")
            finally:
                con.execute(f"DETACH {_SNAPSHOT}")
            previous = _previous_problems(con, target)  # warned about by whoever built that
        os.utime(new, ns=(source_mtime, source_mtime))
        os.replace(new, target)
        # Only a client that opened the catalog read-WRITE leaves a log at this name; it
        # belongs to the file just replaced and must never be replayed onto the new one.
        target.with_name(target.name + ".wal").unlink(missing_ok=True)
    finally:
        for leftover in (new, snapshot):
            leftover.unlink(missing_ok=True)
            leftover.with_name(leftover.name + ".wal").unlink(missing_ok=True)
    for feature, cause in problems:
        if (feature, cause) not in previous:
            _warn_once(layout, feature, cause)
    return built


def _fill(
    con: duckdb.DuckDBPyConnection,
    layout: Layout,
    statements: dict[str, str],
    problems: list[tuple[str, str]],
) -> dict[str, str]:
    """Copy the snapshot's tables into the new catalog and add the views; return them."""
    con.execute(f"USE {_SNAPSHOT}")
    try:
        listed = con.execute(statements["manifest_tables"]).fetchall()
        tables = [require_identifier(row[0]) for row in listed]
        features = [row[0] for row in con.execute(statements["feature_names"]).fetchall()]
        names = current_view_names(con, features, sql_keywords(con))
        schemas = dict(con.execute(statements["feature_schemas"]).fetchall())
        found: dict[str, dict[str, str]] = {}  # feature -> {config fingerprint: config_json}
        for feature, fingerprint, text in con.execute(statements["feature_configs"]).fetchall():
            found.setdefault(feature, {})[fingerprint] = text
    finally:
        con.execute("USE memory")
    for table in tables:
        con.execute(f'CREATE TABLE {_ALIAS}.main."{table}" AS SELECT * FROM {_SNAPSHOT}."{table}"')
    con.execute(f"USE {_ALIAS}")
    try:
        owners = con.execute(statements["link_owners"]).fetchall()
        links = {"keys": [row[0] for row in owners], "links": link_paths(layout, owners)}
        con.execute(statements["view_entries"], links)
        built = _create_views(con, layout, names, schemas, found, problems)
        con.execute(f"CREATE VIEW {CATALOG_VIEW} AS {catalog_view_select(built)}")
        con.execute(f"CREATE VIEW {configs.CONFIGS_VIEW} AS {configs.configs_view_select(built)}")
        con.execute(
            f"CREATE TABLE {INFO_TABLE} AS SELECT "
            f"{sql_literal(utc_now())}::TIMESTAMP AS built_at, "
            f"{sql_literal(json.dumps(problems))} AS problems"
        )
    finally:
        con.execute("USE memory")
    return built


_build_guard = threading.Lock()  # one build at a time per process: it has one connection
_connection: duckdb.DuckDBPyConnection | None = None
_connection_pid: int | None = None


def _build_connection() -> duckdb.DuckDBPyConnection:
    """The process's in-memory DuckDB for catalog builds (not the manifest's: see ``build``)."""
    global _connection, _connection_pid
    if _connection is None or _connection_pid != os.getpid():
        import duckdb

        _connection = duckdb.connect(":memory:")
        _connection_pid = os.getpid()
    return _connection


def _create_views(
    con: duckdb.DuckDBPyConnection,
    layout: Layout,
    names: dict[str, str],
    schemas: dict[str, list[str]],
    found: dict[str, dict[str, str]],
    problems: list[tuple[str, str]],
) -> dict[str, str]:
    """The views of each feature whose link folder has links; the others go to ``problems``.

    ``schemas`` holds each feature's result schemas, which name its metadata columns;
    ``found`` its configs, which name its config views (``query.configs``).
    """
    import duckdb  # loaded already: ``con`` is a DuckDB connection

    taken = {n for view in names.values() for n in (view, history_name(view))}
    built: dict[str, str] = {}
    for feature, view in sorted(names.items()):
        parts = view_parts(link_folder(layout, feature))
        if not parts:
            continue  # nothing linked (yet): no view, nothing to warn about
        meta = meta_names(schemas.get(feature, []))
        try:
            for name, select in _feature_selects(view, parts, meta, found.get(feature, {}), taken):
                con.execute(f'CREATE VIEW "{require_identifier(name)}" AS {select}')
        except (duckdb.IOException, duckdb.InvalidInputException) as exc:
            problems.append((feature, _UNREADABLE + _cause(exc)))
            continue
        except duckdb.Error as exc:
            problems.append((feature, _cause(exc)))
            continue
        built[feature] = view
    return built


def _feature_selects(
    view: str,
    parts: list[ViewPart],
    meta: dict[str, str],
    held: dict[str, str],
    taken: set[str],
) -> list[tuple[str, str]]:
    """``(name, SELECT)`` of a feature's stored views: history first (a refusing view reads
    it), ``<view>__all``, one per config and the bare view, which refuses when read if the
    feature has several configs -- the views ``store.sql`` gives (``query.configs``)."""
    history = history_name(view)
    selects = [(history, view_select(parts, meta, history=True))]
    every = configs.all_configs_view(view)
    if every not in taken:
        selects.append((every, view_select(parts, meta, history=False)))
    by_short: dict[str, dict[str, str]] = {}
    for fingerprint, text in held.items():
        by_short.setdefault(configs.digest(fingerprint), {})[fingerprint] = text
    picks = [(view, held)] + [
        (configs.config_view(view, short), group)
        for short, group in by_short.items()
        if configs.config_view(view, short) not in taken
    ]
    for name, group in picks:
        if len(group) > 1:  # error() runs only if a row is read: a query returning no rows
            refused = sql_literal(configs.refusal(name, group))  # mixes nothing
            selects.append((name, f'SELECT * FROM "{history}" WHERE error({refused})'))
        else:
            config = next(iter(group)) if group and name != view else None
            selects.append((name, view_select(parts, meta, history=False, config=config)))
    return selects


def _cause(exc: BaseException) -> str:
    """The error without what varies between two builds (file names listed after a colon)."""
    return str(exc).splitlines()[0][:300]


def _previous_problems(con: duckdb.DuckDBPyConnection, target: Path) -> set[tuple[str, str]]:
    """The problems the current catalog file recorded (already warned about by someone)."""
    if not target.exists():
        return set()
    import duckdb

    try:
        con.execute(f"ATTACH ? AS {_PREVIOUS} (READ_ONLY)", [str(target)])
    except duckdb.Error:
        return set()  # damaged, or held read-write by a client: warn again, harmlessly
    try:
        rows = con.execute(f"SELECT problems FROM {_PREVIOUS}.main.{INFO_TABLE}").fetchall()
        return {tuple(item) for item in json.loads(rows[0][0])} if rows else set()
    except (duckdb.Error, ValueError, TypeError):
        return set()
    finally:
        con.execute(f"DETACH {_PREVIOUS}")


def _warn_once(layout: Layout, feature: str, cause: str) -> None:
    """One ``CatalogWarning`` per root, feature and cause; a damaged result file is logged.

    A view that cannot read one of its files (damaged on disk) is the cache's own damage
    handling's business: the next hit quarantines and recomputes it, ``check`` reports it,
    and the caller's features are correct meanwhile, so, as for a quarantine, it is logged on
    the ``jules_cache`` logger rather than warned (users and pytest turn warnings into errors).
    """
    marker = (str(layout.root), feature, cause)
    if marker in _warned:
        return
    _warned.add(marker)
    subject = f"no SQL view for {feature}" if feature else "catalog.duckdb"
    if cause.startswith(_UNREADABLE):
        _log.warning("%s: %s (run `jules-cache check`)", subject, cause)
        return
    warnings.warn(f"jules_cache: {subject}: {cause}", CatalogWarning, stacklevel=2)


def _remove_leftovers(layout: Layout) -> None:
    """Delete what builds killed midway left (temp files and their write-ahead logs)."""
    now = time.time()
    for path in layout.root.glob(f"{CATALOG_NAME}.*.tmp*"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > _LEFTOVER_SECONDS:
                path.unlink()


__all__ = [
    "CATALOG_NAME",
    "DEFAULT_REFRESH_SECONDS",
    "build",
    "catalog_path",
    "is_stale",
    "refresh",
    "refresh_quietly",
]
