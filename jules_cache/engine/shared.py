"""``SharedBackend``: one cache for many hosts — a PostgreSQL catalog over objects in S3 or in
a directory many hosts mount (``storage.objects``: the pairing is which objects it is given).

The same story as a local root, on shared services (``pip install "jules-cache[shared]"``),
told here for S3 (a directory's objects behave alike: ``storage.directory_objects``):

- a result is an object at the key-derived name ``<prefix>/objects/<k[:2]>/<k>.parquet``. A hit
  GETs it directly (NoSuchKey → miss), checks the key in its footer and every page checksum,
  and needs no catalog round trip; hits are counted in memory and flushed in batches, on a
  background thread that gives up at once on a busy catalog (a hit never waits on a flush);
- a miss holds the key's PostgreSQL advisory lock while it computes (released by the server
  when the process or its connection dies), writes the object with a conditional PUT
  (``If-None-Match: *``) straight to its final name, then commits the row. The row is the
  truth: an object without a row is an orphan (a publish that died between PUT and COMMIT),
  which GC deletes after the grace period;
- GC and check compare the objects listed with the catalog rows by key (the local plan, in
  DuckDB); every delete is re-checked under the key's advisory lock, and an entry's object is
  deleted inside the transaction deleting its row: removal is final or it did not happen;
- SQL reads the objects through ``pyarrow.fs.S3FileSystem`` datasets registered in the same
  sandboxed DuckDB session as a local root's, over a snapshot of the catalog.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import threading
from pathlib import Path
from typing import Any

from jules_cache.engine.backend import Backend, Progress
from jules_cache.errors import (
    InvalidInput,
    LockTimeout,
    StoreError,
)
from jules_cache.maintenance.check import CheckReport
from jules_cache.maintenance.gc import GCOptions, GCRun
from jules_cache.request import Request
from jules_cache.roots import claimed_catalog
from jules_cache.storage.catalog import Catalog, bump_counter, keys_with_rows
from jules_cache.storage.crash_points import crash_point
from jules_cache.storage.directory_objects import DirectoryObjects, require_claimable
from jules_cache.storage.file_digests import FileDigestMemo
from jules_cache.storage.foreign_errors import storage_errors
from jules_cache.storage.layout import result_name
from jules_cache.storage.manifest import utc_now
from jules_cache.storage.objects import ObjectStore
from jules_cache.storage.pending_counts import PendingCounts
from jules_cache.storage.postgres_catalog import DEFAULT_SCHEMA, PostgresCatalog
from jules_cache.storage.result_files import (
    ResultInfo,
    entry_row,
)
from jules_cache.storage.s3_objects import S3ObjectStore, canonical_s3_url

_log = logging.getLogger("jules_cache")
SHARED_SCHEME = "s3://"
CATALOG_ENV = "JULES_CACHE_CATALOG"


def is_shared_root(root: Any) -> bool:
    return isinstance(root, str) and root.startswith(SHARED_SCHEME)


object_name = result_name  # a result's object name under the prefix (the local layout's path)


def open_shared(
    root: str | Path,
    *,
    catalog: str | None,
    catalog_schema: str | None,
    lock_timeout: float,
    pending: PendingCounts,
    read_only: bool = False,
) -> SharedBackend:
    """The engine over a PostgreSQL catalog (``catalog``: its DSN, else ``$JULES_CACHE_CATALOG``)
    and the objects of ``root``: S3 for ``s3://bucket/prefix``, files for a ``Path`` (a
    directory many hosts mount, which belongs to one catalog: ``catalog.json``)."""
    if importlib.util.find_spec("psycopg") is None:
        raise InvalidInput(
            f"the cache root {root} keeps its catalog in PostgreSQL, which needs the "
            'shared extra: pip install "jules-cache[shared]"'
        )
    dsn = catalog or os.environ.get(CATALOG_ENV)
    if not dsn:
        claimed = (
            f" (its catalog.json names {claimed_catalog(root)})" if isinstance(root, Path) else ""
        )
        raise InvalidInput(
            f"the cache root {root}{claimed} needs its PostgreSQL catalog: pass "
            f"catalog='postgresql://user@host/db' or set ${CATALOG_ENV}"
        )
    schema = catalog_schema or os.environ.get(CATALOG_ENV + "_SCHEMA") or DEFAULT_SCHEMA
    directory = root if isinstance(root, Path) else None
    # canonical_s3_url refuses the parts of a URL a parser would drop
    location = str(root) if directory else canonical_s3_url(str(root))
    rows = PostgresCatalog(dsn, schema=schema, root=location, lock_timeout=lock_timeout)
    claim = f"database {rows.address.rsplit('/', 1)[-1]}, schema {schema}"
    if directory:  # refused before the catalog binds itself to the directory
        require_claimable(directory, claim)
    if not read_only:
        rows.migrate()  # fail now, naming the service, not on the first miss
    objects: ObjectStore = (
        DirectoryObjects.claimed(directory, catalog=claim, read_only=read_only)
        if directory
        else S3ObjectStore(location, lock_timeout=lock_timeout)
    )
    return SharedBackend(
        directory or location,
        catalog=rows,
        objects=objects,
        lock_timeout=lock_timeout,
        pending=pending,
        read_only=read_only,
    )


class SharedBackend(Backend):
    """The engine over a ``Catalog`` and an ``ObjectStore`` (``open_shared`` pairs PostgreSQL
    with S3 or with a directory many hosts mount)."""

    def __init__(
        self,
        root: str | Path,
        *,
        catalog: Catalog,
        objects: ObjectStore,
        lock_timeout: float,
        pending: PendingCounts,
        read_only: bool = False,
    ):
        self.read_only = read_only
        self.lock_timeout = lock_timeout
        self.pending = pending
        self.location = str(root)
        self.root: Path | str = root
        self.catalog = catalog
        self.objects = objects
        self._named: set[str] = set()  # features this process knows have a view name
        self._memo = FileDigestMemo(None)  # input files are each host's own: memo in memory
        self._sql_source: Any = None  # made by the first store.sql, kept for the next ones
        self._flusher: threading.Thread | None = None  # a hit's count flush, off its path
        self._flush_failure: Exception | None = None  # of the last background flush

    # -- misses --------------------------------------------------------------------------------

    def publish(
        self, request: Request, temp: Path, info: ResultInfo, compute_seconds: float
    ) -> None:
        """PUT the object if absent, then commit the row; with the key's lock held, an object
        already there has no valid row (an orphan or damaged): it is replaced."""
        key, name = request.key, object_name(request.key)
        now = utc_now()
        row = entry_row(
            request.file_metadata(),
            name,
            info,
            compute_seconds=compute_seconds,
            created_at=now,
            last_accessed_at=now,
        )
        if not self.objects.put_if_absent(name, temp):
            self.objects.delete([name])
            if not self.objects.put_if_absent(name, temp):
                raise StoreError(
                    f"object {self.result_location(key)} was re-created while this process held "
                    "its key's lock: another writer ignores the lock; check that every host "
                    "uses the same catalog"
                )
        crash_point("renamed")
        try:
            self.catalog.publish(row, input_method=request.data_method, input_files=request.files)
        except BaseException:
            with contextlib.suppress(Exception):  # no object without its row
                if not keys_with_rows(self.catalog, [key]):
                    self.objects.delete([name])
            raise
        self.pending.miss(key, request.parts)
        self.discard_temp(temp)
        if request.parts.feature not in self._named:  # once per feature and process
            from jules_cache.engine.shared_sql import view_names

            # Best effort: SQL names an unnamed feature on the fly; the row is committed.
            with contextlib.suppress(*storage_errors()):
                view_names(self, request.parts.feature)
                self._named.add(request.parts.feature)

    # -- counts --------------------------------------------------------------------------------

    def write_counts(self, *, wait: bool = True, rows_only: bool = False) -> None:
        """Write the counts kept in memory.

        ``wait=False`` (a hit) never waits: the flush runs on a background thread, and gives
        up at once when the catalog is busy (the counts stay in memory for the next one). A
        hit must not wait on a catalog that is locked, frozen or unreachable: a synchronous
        flush held hits for as long as another client held a row lock, and for ever on a
        server process that stopped answering. While background flushes fail for another
        reason than a busy catalog, this raises ``StoreError`` saying why (the store warns
        once).
        """
        if self.read_only or rows_only:  # rows are never deferred here
            return
        if wait:  # first: a background flush holds the counts it took until it ends
            self._join_flusher()
        if not self.pending:
            return
        if not wait:
            self._flush_in_background()
            return
        self._write_pending(wait=True)

    def _write_pending(self, *, wait: bool) -> None:
        counts = self.pending.take()
        try:
            calls = {key: tuple(row) for key, row in counts.calls.items()}
            self.catalog.flush_counts(
                hits=counts.hits,
                misses=counts.misses,
                calls=calls,  # type: ignore[arg-type]
                wait=wait,
            )
        except BaseException:
            self.pending.put_back(counts)
            raise

    def _flush_in_background(self) -> None:
        flusher = self._flusher
        if flusher is None or not flusher.is_alive():  # one at a time; a busy one: skip
            flusher = threading.Thread(
                target=self._background_flush, name="jules_cache count flush", daemon=True
            )
            self._flusher = flusher
            flusher.start()
        failure = self._flush_failure
        if failure is not None:
            raise StoreError(f"hit counts not written to the catalog: {failure}") from failure

    def _background_flush(self) -> None:
        try:
            self._write_pending(wait=False)
        except LockTimeout:
            return  # busy: counts kept for the next flush, nothing to report
        except Exception as exc:  # reported by the next hit, on the caller's thread
            self._flush_failure = exc
        else:
            self._flush_failure = None

    def _join_flusher(self) -> None:
        """Let a background flush finish (until it ends, the counts it took are out of memory:
        this flush would miss them), waiting no longer than a catalog statement may take."""
        flusher = self._flusher
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join(self.lock_timeout + 5)

    def count_store_failure(self) -> None:
        with contextlib.suppress(Exception):
            bump_counter(self.catalog, "store_failures")

    def flush(self, *, closing: bool = False) -> None:
        self.write_counts()

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
        from jules_cache.engine.shared_upkeep import check

        self.write_counts()
        return check(self, fix=fix or rebuild, deep=deep, grace_seconds=grace_seconds)

    def _gc_run(self, options: GCOptions, progress: Progress | None) -> GCRun:
        from jules_cache.engine.shared_upkeep import CatalogRun

        return CatalogRun(self, options, progress)

    def sql_arrow(self, query: str, params: Any, filters: Any) -> Any:
        from jules_cache.engine.shared_sql import SharedCatalogSource
        from jules_cache.query.sql import run

        if self._sql_source is None:
            self._sql_source = SharedCatalogSource(self)
        return run(self._sql_source, query, params, filters)

    def refresh_views(self) -> dict[str, str]:
        from jules_cache.engine.shared_sql import view_names

        return view_names(self)

    def close(self) -> None:
        """Remove this process's local temp folder and the SQL catalog copy (the catalog
        connection stays open)."""
        self._join_flusher()
        self.objects.close()
        if self._sql_source is not None:
            self._sql_source.close()
