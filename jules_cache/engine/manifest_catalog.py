"""``ManifestCatalog``: a local root's ``manifest.duckdb`` as a ``storage.catalog.Catalog``.

Every transaction runs under the manifest's exclusive file lock (``Manifest.write``), so a
``transaction(lock=...)`` needs no lock of its own; keys are held with ``flock`` on
``<root>/locks/``. ``drop_entries`` deletes files before their rows, under that lock, with
``maintenance.removal.drop_rows`` (every per-key table, the SQL view rows), and their view links
once the rows committed. A row ``publish``-ed here is listed at once; the SQL views list it once
its view link is made (``query.views.view_published``, part of the local engine's publish).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jules_cache.errors import JulesCacheError, PartialRemoval
from jules_cache.fingerprints.inputs import input_rows
from jules_cache.maintenance.removal import drop_rows
from jules_cache.query.views import LinkOwner, link_path, unlink_links
from jules_cache.storage.catalog import CatalogChanges, Rows, Run
from jules_cache.storage.crash_points import crash_point
from jules_cache.storage.layout import Layout
from jules_cache.storage.locks import file_lock
from jules_cache.storage.manifest import Manifest

if TYPE_CHECKING:
    import duckdb


class ManifestCatalog:
    """The rows of a local root, in its DuckDB manifest."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.address = str(manifest.path)

    def __repr__(self) -> str:
        return f"ManifestCatalog({self.address!r})"

    def migrate(self) -> int:
        return self.manifest.migrate()

    def read(self, filename: str, name: str, params: Mapping[str, Any] | None = None) -> Rows:
        with self.manifest.read() as con:
            return _rows(self.manifest.execute(con, filename, name, params))

    def write(self, filename: str, name: str, params: Mapping[str, Any] | None = None) -> Rows:
        with self.manifest.write() as con:
            return _rows(self.manifest.execute(con, filename, name, params))

    @contextmanager
    def transaction(self, lock: str | None = None) -> Iterator[Run]:
        """``lock`` is moot: every write holds the manifest's exclusive lock."""
        with self.manifest.write() as con:
            yield runner(self.manifest, con)

    def key_lock(self, key: str, timeout: float) -> AbstractContextManager[None]:
        return file_lock(self.manifest.layout.key_lock_path(key), timeout)

    def publish(
        self,
        row: Mapping[str, Any],
        *,
        input_method: str | None = None,
        input_files: Sequence[Any] = (),
    ) -> None:
        with self.manifest.write() as con:
            insert_entry(runner(self.manifest, con), row, input_method or "", input_files)
            crash_point("commit")

    def flush_counts(
        self,
        *,
        hits: Mapping[str, tuple[int, datetime]] | None = None,
        misses: int = 0,
        calls: Mapping[str, tuple[str, str, int, int]] | None = None,
        wait: bool = True,
    ) -> None:
        if not hits and not misses and not calls:
            return
        with self.manifest.write(wait=wait, notify=False) as con:
            add_counts(runner(self.manifest, con), hits or {}, misses, calls or {})

    def drop_entries(
        self,
        keys: Sequence[str],
        delete_objects: Callable[[list[str]], list[str]],
        last_accessed: Sequence[datetime | None] | None = None,
    ) -> list[str]:
        """Files are deleted under the manifest's exclusive lock, before their rows: a hit's
        count flush (which registers a file found without a row) can never bring one back.
        Their SQL view links go once the rows committed, still under the lock; raises
        ``PartialRemoval`` naming links that could not be deleted (the entries are gone)."""
        if not keys:
            return []
        times = list(last_accessed) if last_accessed is not None else [None] * len(keys)
        layout = self.manifest.layout
        links_left: list[tuple[Path, str]] = []
        with self.manifest.write() as con:
            params = {"keys": list(keys), "last_accessed": times}
            run = runner(self.manifest, con)
            removable = {key for (key,) in run("removal.sql", "removable", params)}
            if not removable:
                return []
            gone = set(delete_objects([key for key in keys if key in removable]))
            chosen = [(key, time) for key, time in zip(keys, times, strict=True) if key in gone]
            dropped = drop_rows(
                self.manifest, con, [key for key, _ in chosen], [time for _, time in chosen]
            )
            self.manifest.after_commit(lambda: links_left.extend(_unlink_links(layout, dropped)))
        if links_left:
            shown = "; ".join(f"{path}: {why}" for path, why in links_left[:3])
            message = f"{len(links_left)} SQL view link(s) could not be deleted: {shown}"
            raise PartialRemoval(message, [], [path for path, _ in links_left])
        return list(dropped)

    def delete_entries(
        self, keys: Sequence[str], last_accessed: Sequence[datetime | None] | None = None
    ) -> list[tuple[str, str]]:
        if not keys:
            return []
        with self.manifest.write() as con:
            deleted = drop_rows(self.manifest, con, keys, last_accessed)
        return [(key, owner.feature) for key, owner in deleted.items()]

    def changes_since(
        self, since: int | None, *, exclude: frozenset[str] = frozenset()
    ) -> CatalogChanges:
        """Every table whole, each time: a manifest keeps no notes of what changed."""
        with self.manifest.read() as con:
            run = runner(self.manifest, con)
            tables = [name for (name,) in run("catalog.sql", "manifest_tables")]
            replaced = {
                name: con.sql(f'SELECT * FROM "{name}"').to_arrow_table()
                for name in tables
                if name not in exclude
            }
        return CatalogChanges(watermark=0, replaced=replaced, changed={}, deleted={}, keys={})

    def tidy(self, older_than: float) -> None:
        """Nothing to drop: a manifest keeps no notes for readers (``changes_since`` reads it
        whole)."""

    def close(self) -> None:
        """Nothing is held between calls: each attaches the manifest for its transaction."""


def _unlink_links(layout: Layout, dropped: Mapping[str, LinkOwner]) -> list[tuple[Path, str]]:
    """Unlink the SQL view links of dropped entries (each holds its result's bytes); return
    those left, with why (never raises: it runs after the commit)."""
    left: list[tuple[Path, str]] = []
    for key, owner in dropped.items():
        try:
            unlink_links(layout, {key: owner})
        except (OSError, JulesCacheError) as exc:
            path = link_path(layout, owner.feature, key, owner.symbol, owner.result_schema)
            left.append((path, str(getattr(exc, "strerror", None) or exc)))
    return left


def runner(manifest: Manifest, con: duckdb.DuckDBPyConnection) -> Run:
    """``run(filename, name, params=None) -> Rows`` in the transaction open on ``con``."""

    def run(filename: str, name: str, params: Mapping[str, Any] | None = None) -> Rows:
        return _rows(manifest.execute(con, filename, name, params))

    return run


def _rows(cursor: duckdb.DuckDBPyConnection) -> Rows:
    if cursor.description is None:
        return Rows()
    return Rows(cursor.fetchall(), [column[0] for column in cursor.description])


def insert_entry(run: Run, row: Mapping[str, Any], input_method: str, input_files: Any) -> None:
    """Insert or replace an entry's row and its input files, in the caller's transaction."""
    run("entries.sql", "replace_entry", {"key": row["key"]})
    run("entries.sql", "insert_entry", row)
    record_inputs(run, row["key"], input_method, input_files)


def record_inputs(run: Run, key: str, method: str, files: Sequence[Any]) -> None:
    """Remember which files (as stat() saw them) a file-input entry was keyed from."""
    if not files:
        return
    run("entries.sql", "delete_entry_inputs", {"key": key})
    run("entries.sql", "insert_entry_inputs", input_rows(key, method, files))


def add_counts(
    run: Run,
    hits: Mapping[str, tuple[int, datetime]],
    misses: int,
    calls: Mapping[str, Sequence[Any]],
) -> None:
    """Add hits onto their entries, misses onto the counter, and calls onto the cumulative
    per feature and symbol counters (which rm and GC never touch), in the caller's
    transaction."""
    if hits:
        params = {
            "keys": list(hits),
            "hits": [count for count, _ in hits.values()],
            "times": [when for _, when in hits.values()],
        }
        run("entries.sql", "flush_hits", params)
    if misses:
        run("entries.sql", "bump_counter", {"name": "misses", "delta": misses})
    if calls:
        rows = list(calls.values())
        run("entries.sql", "number_symbols", {"symbols": sorted({str(row[1]) for row in rows})})
        params = {
            "keys": list(calls),
            "features": [row[0] for row in rows],
            "symbols": [row[1] for row in rows],
            "hits": [row[2] for row in rows],
            "misses": [row[3] for row in rows],
        }
        run("entries.sql", "count_calls", params)
