"""``<root>/catalog.duckdb``: the file plain DuckDB clients open, which never blocks the cache.

The manifest is private: DuckDB lets a file be open read-write by one process or read-only by
several, never both, so a notebook holding ``manifest.duckdb`` open would stop every publish,
hit flush, GC and check. The catalog file is a COPY for SQL clients: the manifest's tables
(``entries``, ``counters``, ``gc_runs``, ...), ``feature_views`` and one view per feature over
its folder of hard links (``views/<digest>/__jules_symbol=<symbol>/*.parquet``, read with hive
partitioning so a filter on ``symbol`` opens that symbol's files only), joined to
``jules_cache_view_entries``: the copied entries' metadata columns and which entry is the latest
of its (symbol, input data, config), computed once per build instead of on every query.

It is only ever written as a new file (``catalog.duckdb.<pid>.<id>.tmp``) and renamed over
the old one (``os.replace``), never opened read-write in place: a client holding the old file
keeps a consistent snapshot for as long as it likes, blocks nobody, and a new connection sees
the new file. Its rows are a snapshot; the views read the link folders live, so a result
deleted since disappears from them and one published since appears once the catalog is
rebuilt.

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
import time
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from jules_cache.errors import JulesCacheError, LockTimeout
from jules_cache.query.views import (
    CATALOG_VIEW,
    CatalogWarning,
    FileRow,
    _view_select,
    catalog_view_select,
    check_identifier,
    current_view_names,
    history_name,
    link_folder,
    linked_parts,
    meta_column_names,
    sql_keywords,
    sql_literal,
)
from jules_cache.storage import sqlfiles
from jules_cache.storage.layout import Layout
from jules_cache.storage.locks import file_lock
from jules_cache.storage.manifest import Manifest, _guard, _process_connection, utc_now

if TYPE_CHECKING:  # imported where the catalog is built: a hit never loads DuckDB
    import duckdb

CATALOG_NAME = "catalog.duckdb"
CATALOG_LOCK_NAME = "catalog.lock"
DEFAULT_REFRESH_SECONDS = 10.0
INFO_TABLE = "jules_cache_catalog"  # when it was built and which views could not be
_ALIAS = "jules_catalog"
_PREVIOUS = "jules_catalog_previous"
_LEFTOVER_SECONDS = 3600.0
_BLOCK_SIZE = 16384  # DuckDB's smallest; the default 256 KiB costs a block per copied table
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

    Call it holding ``catalog.lock``. The tables are copied under the shared manifest lock;
    the views are bound after it is released (binding reads a footer per feature); without
    ``wait`` a manifest in use raises ``LockTimeout`` instead of waiting for it. A view
    that cannot be bound is left out and reported once per feature and cause (also across
    processes: the causes are kept in the catalog; see ``_warn_once``). Returns
    ``{feature: view name}``.
    """
    layout = manifest.layout
    _remove_leftovers(layout)
    target = catalog_path(layout)
    # Next to its target (same file system, and no dependence on tmp/ being usable).
    new = target.with_name(f"{target.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    statements = sqlfiles.load("catalog.sql")
    problems: list[tuple[str, str]] = []
    try:
        with _guard:
            con = _process_connection()
            attached = False
            try:
                with manifest.read(wait=wait) as mcon:  # first: a busy manifest costs nothing
                    source_mtime = os.stat(manifest.path).st_mtime_ns
                    # Small blocks: a catalog of a small cache is ~0.1 MB, not ~1 MB.
                    mcon.execute(f"ATTACH ? AS {_ALIAS} (BLOCK_SIZE {_BLOCK_SIZE})", [str(new)])
                    attached = True
                    for (table,) in mcon.execute(statements["manifest_tables"]).fetchall():
                        name = check_identifier(table)
                        mcon.execute(
                            f'CREATE TABLE {_ALIAS}.main."{name}" AS SELECT * FROM "{name}"'
                        )
                    features = [r[0] for r in mcon.execute(statements["feature_names"]).fetchall()]
                    names = current_view_names(mcon, features, sql_keywords(mcon))
                    cursor = mcon.execute(statements["catalog_files"], {"features": None})
                    rows = FileRow.from_rows(cursor.fetchall())
                con.execute(f"USE {_ALIAS}")
                try:
                    con.execute(statements["view_entries"])
                    built = _create_views(con, layout, names, rows, problems)
                    con.execute(f"CREATE VIEW {CATALOG_VIEW} AS {catalog_view_select(built)}")
                    con.execute(
                        f"CREATE TABLE {INFO_TABLE} AS SELECT "
                        f"{sql_literal(utc_now())}::TIMESTAMP AS built_at, "
                        f"{sql_literal(json.dumps(problems))} AS problems"
                    )
                finally:
                    con.execute("USE memory")
                con.execute(f"CHECKPOINT {_ALIAS}")
            finally:
                if attached:
                    con.execute(f"DETACH {_ALIAS}")
        previous = _previous_problems(target)  # warned about by whoever built that one
        os.utime(new, ns=(source_mtime, source_mtime))
        os.replace(new, target)
        # Only a client that opened the catalog read-WRITE leaves a log at this name; it
        # belongs to the file just replaced and must never be replayed onto the new one.
        target.with_name(target.name + ".wal").unlink(missing_ok=True)
    finally:
        for leftover in (new, new.with_name(new.name + ".wal")):
            leftover.unlink(missing_ok=True)
    for feature, cause in problems:
        if (feature, cause) not in previous:
            _warn_once(layout, feature, cause)
    return built


def _create_views(
    con: duckdb.DuckDBPyConnection,
    layout: Layout,
    names: dict[str, str],
    rows: list[FileRow],
    problems: list[tuple[str, str]],
) -> dict[str, str]:
    """One view per feature whose link folder has files; the others go to ``problems``."""
    import duckdb  # loaded already: ``con`` is a DuckDB connection

    by_feature: dict[str, list[FileRow]] = {}
    for row in rows:
        by_feature.setdefault(row.feature, []).append(row)
    built: dict[str, str] = {}
    for feature, view in sorted(names.items()):
        folder = link_folder(layout, feature)
        by_symbol, flat = linked_parts(folder)
        if not (by_symbol or flat):
            continue  # nothing linked (yet): no view, nothing to warn about
        rows_of = by_feature.get(feature, [])
        schemas = {row.result_schema for row in rows_of}
        meta, union = meta_column_names(rows_of), len(schemas) > 1
        try:
            for name, history in ((view, False), (history_name(view), True)):
                select = _view_select(
                    folder, meta, union, history=history, by_symbol=by_symbol, flat=flat
                )
                con.execute(f'CREATE VIEW "{check_identifier(name)}" AS {select}')
        except (duckdb.IOException, duckdb.InvalidInputException) as exc:
            problems.append((feature, _UNREADABLE + _cause(exc)))
            continue
        except duckdb.Error as exc:
            problems.append((feature, _cause(exc)))
            continue
        built[feature] = view
    return built


def _cause(exc: BaseException) -> str:
    """The error without what varies between two builds (file names listed after a colon)."""
    return str(exc).splitlines()[0][:300]


def _previous_problems(target: Path) -> set[tuple[str, str]]:
    """The problems the current catalog file recorded (already warned about by someone)."""
    if not target.exists():
        return set()
    import duckdb

    with _guard:
        con = _process_connection()
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
