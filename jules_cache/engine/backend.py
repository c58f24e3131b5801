"""The engine over two seams: a ``storage.catalog.Catalog`` (rows, key locks) and a
``storage.objects.ObjectStore`` (result files by name).

``FeatureStore`` (the façade) fingerprints a call and asks its backend four things on the hot
path: ``read`` (a lock-free hit: the result's name is derived from the key), ``key_lock``
(single flight), ``new_temp_path`` + ``publish`` (make a written result visible together with its
catalog row), and ``write_counts`` (hits and misses counted in memory, in batches). Listing,
removing, statistics, GC, check and SQL are backend methods too, so the façade and the CLI
work with either root:

- ``LocalBackend`` (``jules_cache.engine.local``): one directory, its DuckDB manifest
  (``engine.manifest_catalog``), ``flock`` key locks, rows written in batches off the miss.
  The default, and the fastest on one machine.
- ``SharedBackend`` (``jules_cache.engine.shared``): ``open_shared`` pairs a PostgreSQL catalog
  with S3 or with a directory many hosts mount: one cache for many hosts.

Written once, here, over the seams: the hit (a local file read in place, a remote object
fetched), the locked re-read that takes a damaged result out of service, the key lock, temp
files, GC's lock and schedule (a root's own ``GCRun`` lists, plans and deletes), and what is
read of a catalog (entries, input files, statistics, overview, the inputs ``verify``
compares).
"""

from __future__ import annotations

import abc
import contextlib
import errno
import functools
import io
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import polars as pl

from jules_cache.errors import JulesCacheError, LockTimeout
from jules_cache.storage import catalog as catalog_reads
from jules_cache.storage.foreign_errors import storage_errors, translated
from jules_cache.storage.layout import result_name

if TYPE_CHECKING:
    from jules_cache.maintenance.check import CheckReport
    from jules_cache.maintenance.gc import GCOptions, GCReport, GCRun
    from jules_cache.maintenance.verify import VerifyReport
    from jules_cache.models import Entry, FeatureStats, SymbolStats
    from jules_cache.request import Request
    from jules_cache.storage.catalog import Catalog
    from jules_cache.storage.file_digests import FileDigestMemo
    from jules_cache.storage.objects import ObjectStore
    from jules_cache.storage.pending_counts import PendingCounts
    from jules_cache.storage.result_files import ResultInfo

_log = logging.getLogger("jules_cache")
Progress = Callable[[int, int], None]
Frame = pl.DataFrame | pl.LazyFrame

# The seam's methods and what each is doing: whatever a storage library raises in one leaves
# it as ``StoreError`` saying so (``storage.foreign_errors``), so the façade and the CLI catch
# only the package's errors. ``key_lock`` translates its own acquisition (not its block).
_TRANSLATED = {
    "read": "reading a cached result",
    "exists": "looking for a cached result",
    "read_locked": "reading a cached result",
    "new_temp_path": "making a temp file",
    "publish": "publishing a result",
    "open_published": "opening a published result",
    "write_counts": "writing hit and miss counts",
    "flush_later": "writing hit and miss counts",
    "query_entries": "reading the catalog",
    "entry_inputs": "reading the catalog",
    "stats_parts": "reading the catalog",
    "overview_rows": "reading the catalog",
    "remove": "removing entries",
    "check": "checking the cache",
    "gc": "collecting garbage",
    "auto_gc": "collecting garbage",
    "verify": "verifying input files",
    "refresh_views": "refreshing the SQL views",
    "flush": "writing hit and miss counts",
}


def _translating(method: Callable[..., Any], what: str) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: Backend, *args: Any, **kwargs: Any) -> Any:
        with translated(what):
            return method(self, *args, **kwargs)

    return call


def _translate_methods(cls: type) -> None:
    """Wrap the seam's methods ``cls`` defines itself (see ``_TRANSLATED``)."""
    for name, what in _TRANSLATED.items():
        method = cls.__dict__.get(name)
        if method is not None:
            setattr(cls, name, _translating(method, what))


@contextlib.contextmanager
def _held(
    lock: Callable[[str, float], AbstractContextManager[None]], key: str, timeout: float
) -> Iterator[None]:
    """Hold ``lock(key, timeout)``; what its acquisition raises is translated, not what the
    caller's block does."""
    with contextlib.ExitStack() as held:
        with translated(f"locking key {key}"):
            held.enter_context(lock(key, timeout))
        yield


class SharedRoot(Protocol):
    """What a shared root's upkeep and SQL source read of it (``engine.shared.SharedBackend``)."""

    location: str
    lock_timeout: float
    catalog: Catalog
    objects: ObjectStore

    def result_location(self, key: str) -> Path | str: ...


class Backend(abc.ABC):
    """Where results and their rows live. See the module docstring for the two kinds."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _translate_methods(cls)

    #: how the root is shown in messages and ``repr`` (a path, or ``s3://…``)
    location: str
    root: Any  # ``FeatureStore.root``: a Path, or the ``s3://`` URL
    read_only: bool
    pending: PendingCounts
    lock_timeout: float
    # the two seams (see the module)
    catalog: Catalog  # the rows
    objects: ObjectStore  # the result files
    _memo: FileDigestMemo  # input files' digests: the manifest's memo, or one in memory

    # -- the hot path ------------------------------------------------------------------------

    def result_location(self, key: str) -> Path | str:
        """Where ``key``'s result lives (``CacheResult.path``): a Path or an ``s3://`` URL."""
        return self.objects.where(result_name(key))

    def read(self, key: str, lazy: bool) -> Frame | None:
        """The cached value of ``key``, or None if it is missing, damaged or another key's
        (the key in the result's own metadata is checked on every read). Takes no lock.

        Damage, or a service that cannot be reached, is no error for the caller: the miss
        path reads again under the key's lock, quarantines a damaged result and recomputes
        (``read_locked``), or reports the service."""
        from jules_cache.storage.result_files import READ_ERRORS

        try:
            return self._read(key, lazy)
        except (*READ_ERRORS, JulesCacheError):
            return None

    def _read(self, key: str, lazy: bool, *, fresh: bool = True) -> Frame | None:
        """A local file is read in place (a lazy hit scans it); a remote object is fetched."""
        from jules_cache.storage.result_files import read_result, scan_result

        name = result_name(key)
        path = self.objects.path(name)
        if path is not None:
            return (
                scan_result(path, key, fresh=fresh) if lazy else read_result(path, key, fresh=fresh)
            )
        data = self.objects.get(name)
        if data is None:
            return None
        frame = read_result(io.BytesIO(data), key, fresh=fresh)
        return frame.lazy() if lazy else frame

    def exists(self, key: str) -> bool:
        """Whether ``key``'s result is stored (not read, not verified: for ``explain``)."""
        return self.objects.head(result_name(key)) is not None

    def key_lock(self, key: str) -> AbstractContextManager[None]:
        """Hold ``key`` while computing it, so one process computes and the others wait and
        then hit. Raises ``LockTimeout``; an ``OSError`` means "cannot lock: compute, do not
        store"."""
        return _held(self.catalog.key_lock, key, self.lock_timeout)

    def read_locked(self, request: Request) -> Frame | None:
        """Like ``read``, holding the key's lock: a damaged result is taken out of service
        with its row (quarantined where the objects have room for it) and counted in
        ``corrupt_files``. The caller gets correct features, so damage is no warning (pytest
        and users turn those into errors): it is logged on the ``jules_cache`` logger."""
        from jules_cache.storage.result_files import READ_ERRORS, Expired

        key = request.key
        try:
            return self._read(key, request.lazy)
        except (FileNotFoundError, Expired):
            return None  # expired: not damage; the publish replaces the result and its row
        except READ_ERRORS as exc:
            if isinstance(exc, JulesCacheError):
                raise  # the service, not the result: let the caller decide
            if isinstance(exc, OSError) and exc.errno not in (None, errno.EIO):
                return None  # cannot open it (permissions, fd limit): not evidence of damage
            _log.warning("cached result %s is damaged (%s); recomputing it", request.location, exc)
            from jules_cache.engine.removal import drop_whole

            try:  # the key's lock is held: no publish of this key can interleave
                if not drop_whole(self.catalog, self.objects, [key], quarantine=True):
                    self.objects.delete([result_name(key)], quarantine=True)  # no row: an orphan
                catalog_reads.bump_counter(self.catalog, "corrupt_files")
            except storage_errors() as error:  # the publish replaces it
                _log.warning("could not quarantine %s: %s", request.location, error)
            return None

    def new_temp_path(self, key: str) -> Path:
        """A local path to write ``key``'s result to before ``publish``."""
        return self.objects.new_temp_path(key)

    def discard_temp(self, temp: Path) -> None:
        """Delete a temp file this process wrote (after a failure); never raises."""
        self.objects.discard_temp(temp)

    def open_published(self, request: Request) -> Frame:
        """The value just published, as later hits will read it (for a lazy miss), even if
        it expires at once."""
        value = self._read(request.key, request.lazy, fresh=False)
        if value is None:
            raise FileNotFoundError(f"{request.location} vanished after publish")
        return value

    @abc.abstractmethod
    def publish(
        self, request: Request, temp: Path, info: ResultInfo, compute_seconds: float
    ) -> None:
        """Make the written ``temp`` file ``key``'s result together with its catalog row, or
        leave neither (the row is the truth). Holds the key's lock. Counts the miss."""

    def write_temp(
        self, request: Request, result: Frame, compression: str
    ) -> tuple[Path, pl.DataFrame | None]:
        """Write ``result`` to a new temp file (fsynced; deleted again if the write fails).

        Returns the path and, when the write had the table in hand, that table converted as
        a hit converts it (``write_result``); a LazyFrame is computed here, as it is sunk.
        """
        from jules_cache.storage.crash_points import crash_point
        from jules_cache.storage.result_files import write_result

        with translated("writing the result file"):
            temp = self.new_temp_path(request.key)
            try:
                in_hand = write_result(
                    result,
                    temp,
                    request.file_metadata(),
                    compression,
                    on_partial=functools.partial(crash_point, "write"),
                )
            except BaseException:
                self.discard_temp(temp)
                raise
        crash_point("fsynced")
        return temp, in_hand

    def describe_temp(
        self, request: Request, temp: Path, in_hand: pl.DataFrame | None, time_column: str | None
    ) -> tuple[pl.DataFrame | None, ResultInfo]:
        """What a miss returns (None for a lazy one: it is opened once published) and what its
        row records (rows, schema, time range).

        A miss returns what every hit will: the table written, converted as a hit converts,
        else the file read back (checksums verified), so nothing is read twice.
        """
        from jules_cache.storage.result_files import describe_frame, describe_result, read_result

        with translated("reading the result file back"):
            frame = None
            if not request.lazy:  # even a tiny expire: read back fresh=False
                frame = (
                    in_hand if in_hand is not None else read_result(temp, request.key, fresh=False)
                )
            described = in_hand if in_hand is not None else frame
            if described is None:
                return frame, describe_result(temp, time_column)
            return frame, describe_frame(described, temp, time_column)

    @abc.abstractmethod
    def write_counts(self, *, wait: bool = True, rows_only: bool = False) -> None:
        """Write the hits and misses counted in memory (``pending``) in one transaction
        (``rows_only``: only if rows wait to be written, what a read of the catalog needs)."""

    def flush_later(self) -> None:
        """Write the counts soon without making the caller wait (a hit calls it when they are
        due). Default: now, unless the lock is busy."""
        with contextlib.suppress(LockTimeout):
            self.write_counts(wait=False)

    def take_error(self) -> BaseException | None:
        """The error of a background flush that failed since last asked (once), or None."""
        return None

    @abc.abstractmethod
    def count_store_failure(self) -> None:
        """Count a result that could not be stored (best effort; never raises)."""

    def digest_memo(self) -> FileDigestMemo:
        """The memo of input files' digests (a Parquet path is hashed once per stat())."""
        return self._memo

    # -- inspection --------------------------------------------------------------------------

    def query_entries(self, name: str, params: dict[str, Any]) -> list[Entry]:
        """Run ``list_entries`` or ``match_entries`` (filters: key prefix, feature, symbol)."""
        return catalog_reads.entries(self.catalog, name, params)

    def entry_inputs(self, keys: list[str]) -> dict[str, list[tuple[Any, ...]]]:
        """The input files each of ``keys`` was keyed from (for ``explain``)."""
        return catalog_reads.entry_inputs(self.catalog, keys)

    def stats_parts(
        self, symbol_limit: int
    ) -> tuple[list[FeatureStats], list[SymbolStats], dict[str, int]]:
        """Per-feature and per-symbol statistics and the named counters (``Stats``)."""
        return catalog_reads.statistics(self.catalog, symbol_limit)

    def overview_rows(
        self,
    ) -> tuple[tuple[Any, ...], list[tuple[Any, ...]], dict[str, Any] | None]:
        """``overview.sql``'s totals and per feature/symbol rows, and the last GC run."""
        return catalog_reads.overview(self.catalog)

    def verify(self) -> VerifyReport:
        """Footer-keyed entries whose input file, as seen from this host, changed under an
        identical footer (paths are recorded as the computing host saw them)."""
        from jules_cache.maintenance.verify import judge_footer_inputs

        return judge_footer_inputs(catalog_reads.footer_inputs(self.catalog))

    # -- changes and upkeep ------------------------------------------------------------------

    def remove(self, filters: dict[str, Any]) -> list[Entry]:
        """Remove the entries matching ``filters``, each whole or not at all
        (``engine.removal``); raises ``PartialRemoval`` naming the objects left, whose
        entries are still listed and served."""
        from jules_cache.engine.removal import remove_entries

        matched = catalog_reads.entries(self.catalog, "match_entries", filters)
        done = remove_entries(self.catalog, self.objects, matched, lock_timeout=self.lock_timeout)
        error = done.error(len(matched))
        if error is not None:
            raise error
        return done.removed

    @abc.abstractmethod
    def check(
        self,
        *,
        fix: bool,
        deep: bool,
        rebuild: bool,
        grace_seconds: float,
        progress: Progress | None,
    ) -> CheckReport:
        """Compare rows with results and report (``fix``: repair) problems by kind."""

    def gc(self, options: GCOptions, progress: Progress | None) -> GCReport:
        """Run the GC plan: orphans, dangling rows, expired and over-budget entries."""
        self.flush()  # this process's recent hits count as accesses
        report = self._collect_garbage(options, progress)
        assert report is not None
        return report

    def auto_gc(self, limit: int, interval: float) -> GCReport | None:
        """A bounded GC step unless one started within ``interval`` seconds."""
        from jules_cache.maintenance.gc import GCOptions

        options = GCOptions.build(limit=limit)
        return self._collect_garbage(options, None, skip_if_ran_within=interval)

    def _collect_garbage(
        self,
        options: GCOptions,
        progress: Progress | None,
        *,
        skip_if_ran_within: float | None = None,
    ) -> GCReport | None:
        """Plan, then (unless a dry run) delete, holding the cache's GC lock for the whole run:
        ``LockTimeout`` at once if another GC holds it. Raises ``GCError`` if a step failed."""
        from jules_cache.storage.manifest import utc_now

        with self.catalog.key_lock(catalog_reads.GC_LOCK, 0.0):
            if skip_if_ran_within is not None:
                last = catalog_reads.last_gc_run(self.catalog)
                if last and (utc_now() - last["started_at"]).total_seconds() < skip_if_ran_within:
                    return None
            return self._gc_run(options, progress).execute()

    @abc.abstractmethod
    def _gc_run(self, options: GCOptions, progress: Progress | None) -> GCRun:
        """This root's GC run: how it lists, plans and deletes."""

    @abc.abstractmethod
    def sql_arrow(self, query: str, params: Any, filters: Any) -> Any:
        """Run one read-only statement over the results; return a ``pyarrow.Table``."""

    @abc.abstractmethod
    def refresh_views(self) -> dict[str, str]:
        """Rebuild what plain SQL clients read; return ``{feature: view name}``."""

    @abc.abstractmethod
    def flush(self, *, closing: bool = False) -> None:
        """Write pending counts and bring derived files (the SQL catalog) up to date
        (``closing``: the store's last flush, where the cheapest durable way will do)."""

    def close(self) -> None:  # noqa: B027 - most backends hold nothing between calls
        """Release what the backend holds between calls (it stays usable)."""


_translate_methods(Backend)  # the methods written once, here
