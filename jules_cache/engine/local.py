"""``LocalBackend``: one cache directory on one machine, shared by every process on it.

A hit is one Parquet read of the path derived from the key: no lock, no DuckDB (the engine's
``read`` over ``DirectoryObjects``). A miss holds the key's ``flock`` while it computes;
publish renames the finished (fsynced) temp file into place and leaves its row, with the counts
kept in memory, to a flush thread that writes them in one exclusive manifest transaction at
once after a quiet second, or for a burst of misses within ``ROW_BATCH_SECONDS``: no miss waits
for the manifest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jules_cache.engine.backend import Backend, Progress
from jules_cache.engine.manifest_catalog import (
    ManifestCatalog,
    add_counts,
    insert_entry,
    record_inputs,
    runner,
)
from jules_cache.errors import (
    CacheWriteWarning,
    JulesCacheError,
    ManifestDamaged,
    ManifestError,
)
from jules_cache.maintenance.check import CheckReport, recover, register_orphans, run_check
from jules_cache.maintenance.check import rebuild as rebuild_manifest
from jules_cache.maintenance.gc import GCOptions, GCRun, LocalRun
from jules_cache.query.catalog_file import CATALOG_LOCK_NAME, catalog_path
from jules_cache.query.catalog_file import build as build_catalog
from jules_cache.query.catalog_file import refresh_quietly as refresh_catalog
from jules_cache.query.views import refresh_views, remember_named, remove_link, view_published
from jules_cache.request import Request
from jules_cache.storage import counts_journal, rootfs
from jules_cache.storage.crash_points import crash_point
from jules_cache.storage.directory_objects import DirectoryObjects
from jules_cache.storage.file_digests import FileDigestMemo
from jules_cache.storage.foreign_errors import storage_errors
from jules_cache.storage.layout import Layout
from jules_cache.storage.locks import file_lock
from jules_cache.storage.manifest import Manifest, utc_now
from jules_cache.storage.pending_counts import Counts, PendingCounts, PendingRow
from jules_cache.storage.result_files import (
    ResultInfo,
    entry_row,
    fsync_dir,
)

if TYPE_CHECKING:  # DuckDB loads on first manifest use: a hit needs none of it
    import duckdb

_log = logging.getLogger("jules_cache")
# Publishes this close after a write leave their row for one batch (see LocalBackend.publish).
ROW_BATCH_SECONDS = 1.0


class LocalBackend(Backend):
    """Results under ``root/objects``, rows in ``root/manifest.duckdb``, ``flock`` locks."""

    def __init__(
        self,
        root: Any,
        *,
        lock_timeout: float,
        pending: PendingCounts,
        catalog_refresh_seconds: float,
        read_only: bool = False,
    ):
        self.read_only = read_only
        self.layout = Layout.open_existing(root) if read_only else Layout.create(root)
        self.root = self.layout.root
        self.location = str(self.root)
        self.lock_timeout = lock_timeout
        self.pending = pending
        self.catalog_refresh_seconds = catalog_refresh_seconds
        damaged = False
        # The rebuild this open did on its own (a missing or never-completed manifest): the
        # first check(rebuild=True) reports it instead of rebuilding a fresh manifest again.
        self._recovered: CheckReport | None = None
        if read_only:  # no recovery, migration or catalog: each would write
            self.manifest = Manifest(self.layout, lock_timeout, read_only=True)
            self.manifest.require_current()
        else:
            self._recovered = recover(self.layout, lock_timeout)
            self.manifest = Manifest(self.layout, lock_timeout)
            try:
                self.manifest.open()
            except ManifestDamaged as error:
                # Open anyway, so that check(rebuild=True) — the one way to rebuild — can run
                # on this very store. Hits need no manifest; what would write one says why.
                message = f"jules_cache: {error}. Until then hits are served, nothing is stored"
                warnings.warn(message, CacheWriteWarning, stacklevel=4)
                damaged = True
        self._wrote = False  # this store changed the manifest since it refreshed the catalog
        self._last_row_write = 0.0  # monotonic time of the last transaction that wrote rows
        self._writing = threading.RLock()
        self._timer_guard = threading.Lock()
        self._timer: threading.Timer | None = None
        self._background_error: BaseException | None = None
        # A write of this store committed, and none failed since: publishes may defer rows.
        self._manifest_works = False
        self._features_written: set[str] = set()  # named once their rows commit
        self.manifest.on_change = self._after_write
        self.catalog = ManifestCatalog(self.manifest)
        self.objects = DirectoryObjects(self.layout)
        if not read_only and not damaged and not catalog_path(self.layout).exists():
            refresh_catalog(self.manifest, 0.0)
        self._memo = FileDigestMemo(self.manifest)

    # -- misses --------------------------------------------------------------------------------

    def publish(
        self, request: Request, temp: Path, info: ResultInfo, compute_seconds: float
    ) -> None:
        """Rename the temp file into place and leave its row to the flush thread
        (``PendingRow``), once this store has written the manifest; until then (and after a
        write failed, and always with ``hit_flush_seconds=0``) insert the row in the same
        manifest transaction as the rename (``_publish_now``), so that a manifest that cannot
        be written (damaged, not writable, a full disk) fails the call and nothing is stored.

        A manifest transaction costs ~15-50 ms (ATTACH, COMMIT, and the checkpoint at DETACH),
        several times what a small feature takes to compute, so no other miss waits for one:
        the first publish after a quiet second has its row written at once by the flush
        thread, and publishes in quick succession have theirs written together within
        ``ROW_BATCH_SECONDS``. Meanwhile the file is served to every process (hits read files,
        not rows), this store's own listings, stats, SQL and GC write the rows first
        (``FeatureStore._write_rows``), ``flush``/``close``/exit write them too, and GC spares
        result files younger than ``leftovers.ORPHAN_GRACE_SECONDS`` that have no row yet.
        """
        now = utc_now()
        row = entry_row(
            request.file_metadata(),
            self.layout.relative_result_path(request.key),
            info,
            compute_seconds=compute_seconds,
            created_at=now,
            last_accessed_at=now,
        )
        if self.pending.flush_seconds == 0 or not self._manifest_works:
            self._publish_now(request, temp, row)
            self._manifest_works = True
            return
        quiet = self._quiet()
        path: Path = request.location
        rootfs.rename(self.root, temp, path)
        crash_point("renamed")
        fsync_dir(path.parent)
        written = os.stat(path)
        pending = PendingRow(
            row, request.data_method, request.files, written.st_ino, written.st_size
        )
        self.pending.published(request.key, pending)
        self.pending.miss(request.key, request.parts)
        self._flush_later(0.0 if quiet else ROW_BATCH_SECONDS)

    def _quiet(self) -> bool:
        """Whether no row is waiting and none was written in the last ``ROW_BATCH_SECONDS``:
        then a publish has its row written at once (off the caller's thread), not batched."""
        if self.pending.rows_waiting():  # a batch is on its way: this row rides along
            return False
        return time.monotonic() - self._last_row_write >= ROW_BATCH_SECONDS

    def _publish_now(self, request: Request, temp: Path, row: dict[str, Any]) -> None:
        """Rename and insert in one manifest transaction (with any rows waiting): the row is
        listed when the call returns, and a manifest that cannot be written fails the call
        (nothing is left behind)."""
        path: Path = request.location
        feature = request.parts.feature
        renamed = False
        try:
            with self.manifest.write() as con:
                rootfs.rename(self.root, temp, path)
                renamed = True
                crash_point("renamed")
                self._insert_entry(con, row)
                schema, symbol = row["result_schema"], request.parts.symbol
                view_published(con, self.layout, feature, request.key, schema, symbol)
                run = runner(self.manifest, con)
                record_inputs(run, request.key, request.data_method, request.files)
                if self.pending.due() or self.pending.rows_waiting():
                    self._write_pending(con)
                crash_point("commit")
        except BaseException:
            # Rolled back, or the COMMIT itself failed (a full disk): no file without its row.
            # The key's lock is still held, so no other publish of this key can be undone here.
            if renamed and not self._committed(request.key):
                self.discard_temp(path)
                with contextlib.suppress(OSError, JulesCacheError):
                    remove_link(self.layout, feature, request.key)
            raise
        self._last_row_write = time.monotonic()
        self._remember_named()
        remember_named(self.layout, feature)
        self.pending.miss(request.key, request.parts)
        fsync_dir(path.parent)

    def _committed(self, key: str) -> bool:
        """Whether ``key`` has a row after a publish raised: a failure after the COMMIT (the
        checkpoint at detach) leaves the row committed, and then the file must stay."""
        import duckdb

        try:
            with self.manifest.read() as con:
                params = {"keys": [key]}
                rows = self.manifest.execute(con, "removal.sql", "keys_with_rows", params)
                return bool(rows.fetchall())
        except (JulesCacheError, OSError, duckdb.Error):
            return False

    def _insert_entry(self, con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
        """Insert a published entry's row, replacing a row left for its key (file lost).

        A plain INSERT costs half of DELETE + INSERT and a third of INSERT OR REPLACE, and a
        leftover row is rare: so it goes first, and only if the key is taken is the
        transaction (nothing else written in it yet) restarted to replace the row.
        """
        import duckdb  # loaded already: ``con`` is a DuckDB connection

        try:
            self.manifest.execute(con, "entries.sql", "insert_entry", row)
        except ManifestError as exc:
            if not isinstance(exc.__cause__, duckdb.ConstraintException):
                raise
            self.manifest.restart(con)
            self.manifest.execute(con, "entries.sql", "replace_entry", {"key": row["key"]})
            self.manifest.execute(con, "entries.sql", "insert_entry", row)

    # -- counts --------------------------------------------------------------------------------

    def write_counts(self, *, wait: bool = True, rows_only: bool = False) -> None:
        """Write the counts kept in memory and those closed stores left (``counts_journal``).
        ``wait=False`` (from a hit) gives up at once if another process holds the lock;
        ``rows_only`` (before a read) writes only if rows or such counts wait."""
        if self.read_only:  # a read-only store's counts stay in memory
            return
        due = self.pending.rows_waiting() if rows_only else self.pending
        if not due and not counts_journal.waiting(self.layout):
            return
        with self._writing:  # the background flush and this thread: one batch at a time
            rows = self.pending.rows_waiting()
            # A flush of counts alone refreshes the catalog only when asked to (flush()).
            try:
                with self.manifest.write(wait=wait, notify=bool(rows)) as con:
                    self._write_pending(con)
            except BaseException:
                self._manifest_works = False  # the next publish finds out why, and says so
                raise
            self._manifest_works = True
            if rows:  # counts alone leave catalog.duckdb as it is (flush rebuilds it)
                self._last_row_write = time.monotonic()
                self._remember_named()
                self._wrote = True

    def flush_later(self) -> None:
        """Write the counts soon, off the caller's thread (a hit never waits on the manifest)."""
        self._flush_later(0.0)

    def _flush_later(self, delay: float) -> None:
        with self._timer_guard:
            self._arm(delay)

    def _arm(self, delay: float) -> None:
        """Start the flush timer unless one is on its way (call holding ``_timer_guard``)."""
        if self._timer is not None and self._timer.is_alive():
            return  # one already armed writes these too (or re-arms for them: see below)
        self._timer = threading.Timer(delay, self._flush_in_background)
        self._timer.name = "jules-flush"
        self._timer.daemon = True
        self._timer.start()

    def _flush_in_background(self) -> None:
        """The timer's flush: waits for the lock up to ``lock_timeout`` (no caller waits on
        it); a failure is kept for the store to report on its next call (``take_error``).

        A row published while this flush was writing found the timer alive and armed none, so
        it is armed again here for such rows (after a failure the next call retries instead).
        """
        failed = False
        try:
            self.write_counts(wait=True)
        except Exception as exc:  # a background thread must not raise: report it later
            _log.warning("could not write pending rows and counts of %s: %s", self.root, exc)
            self._background_error = exc
            failed = True
        with self._timer_guard:
            self._timer = None
            if not failed and self.pending.rows_waiting():
                self._arm(ROW_BATCH_SECONDS)

    def take_error(self) -> BaseException | None:
        """The error of the last background flush that failed (once), or None."""
        error, self._background_error = self._background_error, None
        return error

    def _remember_named(self) -> None:
        for feature in self._features_written:
            remember_named(self.layout, feature)
        self._features_written.clear()

    def _write_pending(self, con: duckdb.DuckDBPyConnection) -> None:
        """Write the counts kept in memory, and those exited processes left, inside the
        caller's transaction (their files are deleted before it commits: at most once)."""
        counts = self.pending.take()
        left = counts_journal.waiting(self.layout)
        try:
            every = counts_journal.collect(self.layout, left)
            every.add(counts)
            self._write(con, every)
            counts_journal.discard(self.layout, left)
            if counts.rows:
                crash_point("commit")
        except BaseException:
            self.pending.put_back(counts)  # kept for the next attempt
            raise

    def _write(self, con: duckdb.DuckDBPyConnection, counts: Counts) -> None:
        for key, pending in counts.rows.items():
            self._insert_pending(con, key, pending)
        if counts.hits:
            # A hit on a file without a row (its rm or GC was killed before the unlink)
            # registers it again: the file is valid and verified, and now in use.
            register_orphans(self.manifest, con, list(counts.hits))
        add_counts(runner(self.manifest, con), counts.hits, counts.misses, counts.calls)

    def _insert_pending(
        self, con: duckdb.DuckDBPyConnection, key: str, pending: PendingRow
    ) -> None:
        """Insert a deferred row, if its very file is still in place (a GC, ``rm`` or
        quarantine in between, or a newer publish of the key, leaves it out)."""
        try:
            found = os.stat(self.layout.result_path(key), follow_symlinks=False)
        except FileNotFoundError:
            return
        if (found.st_ino, found.st_size) != (pending.inode, pending.size):
            return
        row = pending.row
        insert_entry(runner(self.manifest, con), row, pending.input_method, pending.input_files)
        view_published(con, self.layout, row["feature"], key, row["result_schema"], row["symbol"])
        self._features_written.add(row["feature"])

    def count_store_failure(self) -> None:
        try:
            with self.manifest.write(wait=False) as con:
                params = {"name": "store_failures", "delta": 1}
                self.manifest.execute(con, "entries.sql", "bump_counter", params)
        except storage_errors():
            pass  # the manifest may be what failed; the caller has been told

    def flush(self, *, closing: bool = False) -> None:
        """Write the counts, and, if this store changed the manifest since, rebuild
        ``catalog.duckdb`` (a store that only read leaves every file as it found it).

        ``closing`` (``close()``, interpreter exit): counts without rows go to a journal file
        for the next manifest write (``counts_journal``): a process that only hit never loads
        DuckDB.
        """
        if not (closing and self._left_in_journal()):
            self.write_counts()
        if self._wrote:
            self._wrote = False
            refresh_catalog(self.manifest, 0.0, wait=True)

    def _left_in_journal(self) -> bool:
        """Leave the counts (if any) to the next manifest write, unless this process loaded
        DuckDB already (then a transaction costs ~15 ms, not ~200, and every reader sees the
        counts at once), rows wait to be written, or the journal cannot be written."""
        if self.read_only or "duckdb" in sys.modules or self.pending.rows_waiting():
            return False
        with self._writing:
            counts = self.pending.take()
            if not counts:
                return True
            try:
                counts_journal.leave(self.layout, counts)
            except (OSError, JulesCacheError):
                self.pending.put_back(counts)  # written to the manifest, then
                return False
        return True

    def _after_write(self) -> None:
        """After each committed manifest write: refresh the catalog if it is due (debounced)."""
        self._wrote = True
        refresh_catalog(self.manifest, self.catalog_refresh_seconds)

    # -- changes and upkeep --------------------------------------------------------------------

    def check(
        self,
        *,
        fix: bool,
        deep: bool,
        rebuild: bool,
        grace_seconds: float,
        progress: Progress | None,
    ) -> CheckReport:
        recovered, self._recovered = self._recovered, None
        if rebuild and recovered is not None and not deep:
            self.flush()
            return recovered
        if rebuild:  # counts kept in memory go to the rebuilt manifest
            report = rebuild_manifest(
                self.layout,
                self.lock_timeout,
                deep=deep,
                grace_seconds=grace_seconds,
                progress=progress,
            )
            self.flush()
            return report
        self.write_counts()
        report = run_check(
            self.layout,
            self.manifest,
            fix=fix,
            deep=deep,
            grace_seconds=grace_seconds,
            progress=progress,
        )
        if fix:
            self._wrote = False
            refresh_catalog(self.manifest, 0.0, wait=True)
        return report

    def _gc_run(self, options: GCOptions, progress: Progress | None) -> GCRun:
        return LocalRun(self.manifest, self.layout, options, progress)

    def sql_arrow(self, query: str, params: Any, filters: Any) -> Any:
        from jules_cache.query.sql import ManifestSource, run

        return run(ManifestSource(self.manifest, self.layout), query, params, filters)

    def refresh_views(self) -> dict[str, str]:
        with self.manifest.write() as con:
            names = refresh_views(con, self.layout)
        with file_lock(self.layout.root / CATALOG_LOCK_NAME, self.lock_timeout):
            build_catalog(self.manifest)
        return names
