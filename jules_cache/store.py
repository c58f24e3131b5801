"""``FeatureStore``: the façade that makes a feature computation free the second time.

A hit needs neither a lock nor DuckDB: the result's path is derived from the key, so a hit is
one Parquet read. A miss takes a per-key lock (one process computes, the others wait and then
hit), writes a temp file, and publishes it — rename and manifest row — in one exclusive manifest
transaction. Hits and misses are counted in memory and flushed to the manifest in batches.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import errno
import functools
import logging
import numbers
import os
import signal
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import polars as pl

from jules_cache.errors import (
    CacheWriteWarning,
    InvalidInput,
    JulesCacheError,
    LockTimeout,
    ManifestError,
    PartialRemoval,
    StoreError,
)
from jules_cache.explain import CallComponents, Explanation, explain
from jules_cache.fingerprints.code import code_fingerprint, feature_name
from jules_cache.fingerprints.config import canonical_config
from jules_cache.fingerprints.inputs import (
    FingerprintMode,
    InputFile,
    as_result_frame,
    prepare_data,
)
from jules_cache.fingerprints.keys import KEY_SCHEMA, KeyParts, require_utf8, validate_symbol
from jules_cache.fingerprints.memo import FileDigestMemo
from jules_cache.maintenance.check import (
    DEFAULT_GRACE_SECONDS,
    CheckReport,
    recover,
    register_orphans,
    run_check,
)
from jules_cache.maintenance.check import rebuild as _rebuild
from jules_cache.maintenance.gc import GCOptions, GCReport, collect_garbage
from jules_cache.maintenance.verify import VerifyReport, find_stale_footer_entries
from jules_cache.models import CacheResult, Entry, FeatureStats, Stats, SymbolStats
from jules_cache.query.catalog_file import CATALOG_LOCK_NAME, DEFAULT_REFRESH_SECONDS, catalog_path
from jules_cache.query.catalog_file import build as build_catalog
from jules_cache.query.catalog_file import refresh_quietly as refresh_catalog
from jules_cache.query.views import refresh_views, remember_named, remove_link, view_published
from jules_cache.storage import rootfs
from jules_cache.storage.layout import Layout
from jules_cache.storage.locks import file_lock
from jules_cache.storage.manifest import Manifest, utc_now
from jules_cache.storage.removal import describe_failures, discard_files, drop_rows
from jules_cache.storage.result_files import (
    READ_ERRORS,
    ResultInfo,
    describe_frame,
    describe_result,
    entry_row,
    fsync_dir,
    read_result,
    scan_result,
    write_result,
)
from jules_cache.version import __version__

if TYPE_CHECKING:  # DuckDB loads on first manifest use: a hit needs none of it
    import duckdb

    from jules_cache.decorator import Feature

ComputeFunc = Callable[[pl.LazyFrame, Any], Any]


def _store_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "the result could not be stored", as opposed to "the compute failed".

    Evaluated only when an exception reaches the handler, so DuckDB is imported only then.
    """
    import duckdb

    return (OSError, pl.exceptions.PolarsError, duckdb.Error, JulesCacheError)


_COMPRESSIONS = ("lz4", "zstd", "snappy", "gzip", "uncompressed")
_live_stores: weakref.WeakSet[FeatureStore] = weakref.WeakSet()
# The library's one logger (README: Logging). DEBUG: one line per hit / miss / compute /
# publish; INFO: computes longer than ``log_compute_seconds`` and GC summaries.
_log = logging.getLogger("jules_cache")
DEFAULT_LOG_COMPUTE_SECONDS = 10.0


@dataclass(frozen=True)
class _Request:
    """One call's key and everything needed to compute and publish it on a miss."""

    parts: KeyParts
    key: str
    path: Path
    frame: pl.LazyFrame
    data_method: str
    config: Any
    config_json: str
    code_version: str | None
    code_functions: dict[str, str]
    code_unfollowed: tuple[str, ...]
    files: tuple[InputFile, ...]
    compute_func: ComputeFunc
    lazy: bool
    started: float

    def result(
        self, value: pl.DataFrame | pl.LazyFrame, *, hit: bool = False, stored: bool = True
    ) -> CacheResult[Any]:
        seconds = time.perf_counter() - self.started
        if hit:
            _log_event("hit", self, seconds)
        return CacheResult(
            value, hit, self.key, self.path, self.parts.feature, self.parts.symbol, seconds, stored
        )


# Symbols with a label of their own in ``stats()`` (and Prometheus); later ones are __other__.
DEFAULT_SYMBOL_LIMIT = 100


def _log_event(event: str, request: _Request, seconds: float) -> None:
    """One DEBUG line: ``<event> feature=… symbol=… key=<8 hex> ms=…``; nothing is formatted
    (not even the key prefix) unless DEBUG is on for the ``jules_cache`` logger."""
    if _log.isEnabledFor(logging.DEBUG):
        _log.debug(
            "%s feature=%s symbol=%s key=%s ms=%.1f",
            event,
            request.parts.feature,
            request.parts.symbol,
            request.key[:8],
            seconds * 1000,
        )


class FeatureStore:
    """A cache of feature results under one root directory, shared by every process.

    Args:
        root: the cache directory (created if missing). Default: ``$JULES_CACHE_ROOT``, else
            ``$FEATURE_STORE_PATH``, else the user cache directory.
        lock_timeout: seconds to wait for the manifest lock or for another process computing
            the same key before raising ``LockTimeout``.
        strict: raise ``StoreError`` when a computed result cannot be stored, instead of
            returning it with a ``CacheWriteWarning``.
        tick_data_threshold_mb: frames larger than this are fingerprinted on all cores.
        fingerprint: ``"content"`` (exact, default) or ``"footer"`` (Parquet file inputs keyed
            by footer + size only: fast but NOT exact; for immutable vendor files).
        compression: Parquet codec of result files (lz4 reads back fastest).
        time_column: the column whose min/max the manifest records (default: guessed).
        hit_flush_seconds: how often hits and misses counted in memory are written to the
            manifest (also on ``close()`` and at exit).
        auto_gc: off (None, the default) or an interval in seconds: after publishing a result,
            this writer runs a bounded GC step (at most ``auto_gc_limit`` deletions, default
            retention) if no GC started on this root within the interval. Never on import,
            in a destructor or at exit.
        catalog_refresh_seconds: how stale ``<root>/catalog.duckdb`` (the file plain DuckDB
            clients open) may get while this process writes: it is rebuilt after a write once
            it is this old, and at once by ``flush()``/``close()`` of a store that wrote,
            ``check(fix=True)`` and ``refresh_views()``.
        rebuild: rebuild the manifest from the result files before opening it (what
            ``jules-cache check --rebuild`` does; for a manifest reported damaged).
        log_compute_seconds: computes that take longer are logged at INFO on the
            ``jules_cache`` logger (default 10 s).
        read_only: serve an existing cache without writing anything under the root (for
            monitoring and serving processes, and read-only mounts): hits, ``entries``,
            ``entry``, ``explain``, ``stats``, ``sql`` and ``check()`` work; no lock or catalog
            file is created; hits are counted in memory only (never written, so they are not
            in ``stats``); a MISS COMPUTES AND RETURNS THE VALUE WITHOUT STORING IT
            (``CacheResult.stored`` is False, no warning). ``gc``, ``remove``, ``check(fix=True)``,
            ``refresh_views`` and ``verify(fix=True)`` raise ``InvalidInput``. A root without a
            cache raises ``InvalidInput`` ("no jules_cache at ...") and is not created.

    A missing manifest, one whose creation never completed (a crash or a full disk), and a
    rebuild interrupted midway are repaired here on their own (``check.recover``).
    """

    # Code that mentions a store (``@store.feature`` above a function) is fingerprinted with
    # this constant in its place: the store's root and state must not enter any key.
    __jules_cache_stand_in__ = "_code_identity"
    _code_identity = "jules_cache.FeatureStore"

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        lock_timeout: float = 600.0,
        strict: bool = False,
        tick_data_threshold_mb: float = 100.0,
        fingerprint: FingerprintMode = "content",
        compression: str = "lz4",
        time_column: str | None = None,
        hit_flush_seconds: float = 30.0,
        auto_gc: float | None = None,
        auto_gc_limit: int = 1000,
        catalog_refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
        rebuild: bool = False,
        log_compute_seconds: float = DEFAULT_LOG_COMPUTE_SECONDS,
        read_only: bool = False,
    ):
        for setting, number in (
            ("lock_timeout", lock_timeout),
            ("tick_data_threshold_mb", tick_data_threshold_mb),
            ("hit_flush_seconds", hit_flush_seconds),
            ("catalog_refresh_seconds", catalog_refresh_seconds),
            ("log_compute_seconds", log_compute_seconds),
        ):  # a str or bool here would fail later with a confusing TypeError
            _require(
                isinstance(number, numbers.Real) and not isinstance(number, bool),
                f"{setting} must be a number, not {type(number).__name__} {number!r}",
            )
        _require(isinstance(strict, bool), f"strict must be True or False, not {strict!r}")
        _require(
            tick_data_threshold_mb < 2**40,
            f"tick_data_threshold_mb must be below 2**40, not {tick_data_threshold_mb}",
        )
        _require(lock_timeout >= 0, f"lock_timeout must be >= 0 seconds, not {lock_timeout}")
        _require(
            tick_data_threshold_mb >= 0,
            f"tick_data_threshold_mb must be >= 0, not {tick_data_threshold_mb}",
        )
        _require(hit_flush_seconds >= 0, f"hit_flush_seconds must be >= 0, not {hit_flush_seconds}")
        _require(
            catalog_refresh_seconds >= 0,
            f"catalog_refresh_seconds must be >= 0, not {catalog_refresh_seconds}",
        )
        _require(isinstance(rebuild, bool), f"rebuild must be True or False, not {rebuild!r}")
        _require(isinstance(read_only, bool), f"read_only must be True or False, not {read_only!r}")
        _require(not (read_only and rebuild), "a read_only store cannot rebuild the manifest")
        _require(
            log_compute_seconds >= 0,
            f"log_compute_seconds must be >= 0 seconds, not {log_compute_seconds}",
        )
        _require(
            fingerprint in ("content", "footer"),
            f"fingerprint must be 'content' or 'footer', not {fingerprint!r}",
        )
        _require(
            compression in _COMPRESSIONS,
            f"compression must be one of {', '.join(_COMPRESSIONS)}, not {compression!r}",
        )
        self.read_only = read_only
        self.log_compute_seconds = float(log_compute_seconds)
        self.layout = Layout.open_existing(root) if read_only else Layout.create(root)
        self.root = self.layout.root
        self.lock_timeout = float(lock_timeout)
        self.strict = strict
        self.tick_data_threshold_bytes = int(tick_data_threshold_mb * 1024 * 1024)
        self.fingerprint_mode: FingerprintMode = fingerprint
        self.compression = compression
        self.time_column = time_column
        self.hit_flush_seconds = float(hit_flush_seconds)
        self.catalog_refresh_seconds = float(catalog_refresh_seconds)
        if read_only:  # no recovery, migration or catalog: each would write
            self.manifest = Manifest(self.layout, self.lock_timeout, read_only=True)
            self.manifest.require_current()
        else:
            if rebuild:
                _rebuild(self.layout, self.lock_timeout)
            else:
                recover(self.layout, self.lock_timeout)
            self.manifest = Manifest(self.layout, self.lock_timeout)
            self.manifest.open()
        self._wrote = False  # this store changed the manifest since it refreshed the catalog
        self.manifest.on_change = self._after_write
        if not read_only and not catalog_path(self.layout).exists():  # a new root, or older
            refresh_catalog(self.manifest, 0.0)
        self._file_memo = FileDigestMemo(self.manifest)
        self._pending_hits: dict[str, tuple[int, Any]] = {}
        self._pending_misses = 0
        # key -> [feature, symbol, hits, misses]: the cumulative per-feature/symbol counters.
        self._pending_calls: dict[str, list[Any]] = {}
        self._pending_lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._flush_failing = False  # warned about this failure episode already
        _require(auto_gc is None or auto_gc > 0, f"auto_gc must be None or > 0 s, not {auto_gc}")
        _require(auto_gc_limit >= 1, f"auto_gc_limit must be >= 1, not {auto_gc_limit}")
        self.auto_gc = auto_gc
        self.auto_gc_limit = auto_gc_limit
        self._next_auto_gc = 0.0
        _live_stores.add(self)

    def __repr__(self) -> str:
        if self.read_only:
            return f"FeatureStore({str(self.root)!r}, read_only=True)"
        return f"FeatureStore({str(self.root)!r})"

    def _writable(self, what: str) -> None:
        """Raise ``InvalidInput`` if this store was opened ``read_only`` (``what`` would write)."""
        if self.read_only:
            raise InvalidInput(
                f"{what} changes the cache, but this store of {self.root} is read-only: open "
                "FeatureStore(root) without read_only=True (in a process allowed to write) "
                "for that"
            )

    # -- the decorator -------------------------------------------------------------------------

    @overload
    def feature(self, compute_func: ComputeFunc, /) -> Feature: ...

    @overload
    def feature(
        self, compute_func: None = None, /, *, name: str | None = None, version: str | None = None
    ) -> Callable[[ComputeFunc], Feature]: ...

    def feature(
        self,
        compute_func: ComputeFunc | None = None,
        /,
        *,
        name: str | None = None,
        version: str | None = None,
    ) -> Feature | Callable[[ComputeFunc], Feature]:
        """Decorate ``compute_func(lazy_frame, config)`` into ``f(symbol, data, config, *,
        lazy=False)`` served by this store, as ``get_or_compute`` would (see
        ``jules_cache.decorator``). Use bare (``@store.feature``) or with ``name=`` /
        ``version=``.
        """
        from jules_cache.decorator import decorate

        return decorate(self, compute_func, name=name, version=version)

    # -- the main call -----------------------------------------------------------------------

    @overload
    def get_or_compute(
        self,
        symbol: str,
        data: Any,
        config: Any,
        compute_func: ComputeFunc,
        *,
        name: str | None = None,
        version: str | None = None,
        lazy: Literal[False] = False,
    ) -> pl.DataFrame: ...

    @overload
    def get_or_compute(
        self,
        symbol: str,
        data: Any,
        config: Any,
        compute_func: ComputeFunc,
        *,
        name: str | None = None,
        version: str | None = None,
        lazy: Literal[True],
    ) -> pl.LazyFrame: ...

    @overload
    def get_or_compute(
        self,
        symbol: str,
        data: Any,
        config: Any,
        compute_func: ComputeFunc,
        *,
        name: str | None = None,
        version: str | None = None,
        lazy: bool,
    ) -> pl.DataFrame | pl.LazyFrame: ...

    def get_or_compute(
        self,
        symbol: str,
        data: Any,
        config: Any,
        compute_func: ComputeFunc,
        *,
        name: str | None = None,
        version: str | None = None,
        lazy: bool = False,
    ) -> pl.DataFrame | pl.LazyFrame:
        """Return ``compute_func(data, config)`` for ``symbol``, from the cache when possible.

        ``data`` is a Polars DataFrame/LazyFrame, pyarrow Table, pandas DataFrame, or Parquet
        path(s). ``name`` overrides the feature name (default: the function's qualified name);
        ``version`` replaces the code fingerprint. With ``lazy=True`` a LazyFrame over the
        cached file is returned. Use ``fetch`` to also learn whether it was a hit.
        """
        value: pl.DataFrame | pl.LazyFrame = self.fetch(
            symbol, data, config, compute_func, name=name, version=version, lazy=lazy
        ).value
        return value

    @overload
    def fetch(
        self,
        symbol: str,
        data: Any,
        config: Any,
        compute_func: ComputeFunc,
        *,
        name: str | None = None,
        version: str | None = None,
        lazy: Literal[False] = False,
    ) -> CacheResult[pl.DataFrame]: ...

    @overload
    def fetch(
        self,
        symbol: str,
        data: Any,
        config: Any,
        compute_func: ComputeFunc,
        *,
        name: str | None = None,
        version: str | None = None,
        lazy: Literal[True],
    ) -> CacheResult[pl.LazyFrame]: ...

    @overload
    def fetch(
        self,
        symbol: str,
        data: Any,
        config: Any,
        compute_func: ComputeFunc,
        *,
        name: str | None = None,
        version: str | None = None,
        lazy: bool,
    ) -> CacheResult[Any]: ...

    def fetch(
        self,
        symbol: str,
        data: Any,
        config: Any,
        compute_func: ComputeFunc,
        *,
        name: str | None = None,
        version: str | None = None,
        lazy: bool = False,
    ) -> CacheResult[Any]:
        """Like ``get_or_compute``, but return a ``CacheResult``: value, hit/miss, key, path."""
        request = self._request(symbol, data, config, compute_func, name, version, lazy)
        value = self._read(request.path, request.key, lazy)
        if value is not None:
            self._record_hit(request.key, request.parts)
            return request.result(value, hit=True)
        _log_event("miss", request, time.perf_counter() - request.started)
        if self.read_only:
            return self._compute_unstored(request)
        return self._miss(request)

    def _compute_unstored(self, request: _Request) -> CacheResult[Any]:
        """A read-only store's miss: compute and return the value, store nothing."""
        started = time.perf_counter()
        output = request.compute_func(request.frame, request.config)
        value = as_result_frame(output, request.parts.feature)
        if isinstance(value, pl.LazyFrame):
            value = value.collect()
        self._computed(request, time.perf_counter() - started)
        return request.result(value.lazy() if request.lazy else value, stored=False)

    def _computed(self, request: _Request, seconds: float) -> None:
        """Log a compute: DEBUG always, INFO when it took longer than ``log_compute_seconds``."""
        _log_event("compute", request, seconds)
        if seconds >= self.log_compute_seconds and _log.isEnabledFor(logging.INFO):
            _log.info(
                "long compute feature=%s symbol=%s key=%s s=%.1f",
                request.parts.feature,
                request.parts.symbol,
                request.key[:8],
                seconds,
            )

    def _request(
        self,
        symbol: Any,
        data: Any,
        config: Any,
        compute_func: ComputeFunc,
        name: str | None,
        version: str | None,
        lazy: bool,
    ) -> _Request:
        """Fingerprint every input, cheapest (and likeliest to be wrong) first."""
        started = time.perf_counter()
        symbol = validate_symbol(symbol)
        if not callable(compute_func):
            raise InvalidInput(
                f"compute_func must be callable, not {type(compute_func).__name__}; pass a "
                "function (lazy_frame, config) -> frame"
            )
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise InvalidInput(f"name must be a non-empty str, not {name!r}")
        if version is not None and not isinstance(version, str):
            raise InvalidInput(f"version must be a str, not {type(version).__name__}")
        if version is not None:
            require_utf8(version, "version")
        feature = name or feature_name(compute_func)
        config_fp = canonical_config(config)
        code_fp = code_fingerprint(compute_func, version)
        prepared = prepare_data(
            data,
            mode=self.fingerprint_mode,
            threads=None if _frame_bytes(data) > self.tick_data_threshold_bytes else 1,
            memo=self._file_memo,
        )
        parts = KeyParts(feature, symbol, prepared.fingerprint, config_fp.digest, code_fp.digest)
        key = parts.key()
        return _Request(
            parts=parts,
            key=key,
            path=self.layout.result_path(key),
            frame=prepared.frame,
            data_method=prepared.method,
            config=config,
            config_json=config_fp.json,
            code_version=version,
            code_functions=code_fp.functions,
            code_unfollowed=code_fp.unfollowed,
            files=prepared.files,
            compute_func=compute_func,
            lazy=lazy,
            started=started,
        )

    # -- hits ----------------------------------------------------------------------------------

    def _read(self, path: Path, key: str, lazy: bool) -> pl.DataFrame | pl.LazyFrame | None:
        """The cached value of ``key`` at ``path``, or None if missing, damaged or another
        key's file (the key in the file's own metadata is checked on every read).

        A damaged file is not an error for the caller: the miss path reads it again under the
        key's lock, quarantines it, and recomputes (``_read_or_quarantine``).
        """
        try:
            return scan_result(path, key) if lazy else read_result(path, key)
        except READ_ERRORS:
            return None

    def _read_or_quarantine(self, request: _Request) -> pl.DataFrame | pl.LazyFrame | None:
        """Like ``_read``, under the key's lock: a damaged file is moved aside and counted.

        The caller gets correct features, so this is no warning (pytest and users turn those
        into errors): it is logged on the ``jules_cache`` logger and counted in the manifest
        (``corrupt_files``); the file is kept in ``<root>/quarantine/`` for inspection.
        """
        key = request.key
        try:
            if request.lazy:
                return scan_result(request.path, key)
            return read_result(request.path, key)
        except FileNotFoundError:
            return None
        except READ_ERRORS as exc:
            if isinstance(exc, OSError) and exc.errno not in (None, errno.EIO):
                return None  # cannot open it (permissions, fd limit): not evidence of damage
            _log.warning("cached file %s is damaged (%s); recomputing it", request.path, exc)
            try:  # the key's lock is held: no publish of this key can interleave
                with self.manifest.write() as con:
                    drop_rows(self.manifest, con, [key])
                    params = {"name": "corrupt_files", "delta": 1}
                    self.manifest.execute(con, "check.sql", "bump_counter", params)
                with self.manifest.read() as con:
                    discard_files(self.manifest, con, {key: request.parts.feature}, quarantine=True)
            except _store_errors() as error:  # the publish replaces the file anyway
                _log.warning("could not quarantine %s: %s", request.path, error)
            return None

    def _record_hit(self, key: str, parts: KeyParts) -> None:
        now = utc_now()
        with self._pending_lock:
            count, _ = self._pending_hits.get(key, (0, now))
            self._pending_hits[key] = (count + 1, now)
            self._count_call(key, parts, hit=True)
        if not self.read_only and self._flush_due():
            try:
                with self.manifest.write(wait=False) as con:
                    self._flush_pending(con)
            except LockTimeout:
                pass  # busy: the next write or hit flushes them
            except _store_errors() as exc:
                # Missing, damaged, unwritable or held by another program: the hit is still
                # correct, so it is served; the counts stay in memory for the next try, one
                # flush interval later, not on every hit.
                self._last_flush = time.monotonic()
                self._warn_flush_failed(exc)
            else:
                self._flush_failing = False

    def _warn_flush_failed(self, exc: BaseException) -> None:
        """One ``CacheWriteWarning`` per failure episode (until a flush succeeds again)."""
        if self._flush_failing:
            return
        self._flush_failing = True
        warnings.warn(
            f"jules_cache: could not record hits in the manifest of {self.root}: {exc}. Hits "
            "are still served; the counts are kept in memory and written once it works again",
            CacheWriteWarning,
            stacklevel=4,
        )

    def _count_call(self, key: str, parts: KeyParts, *, hit: bool) -> None:
        """Count a hit or miss for the cumulative counters (hold ``_pending_lock``)."""
        calls = self._pending_calls.setdefault(key, [parts.feature, parts.symbol, 0, 0])
        calls[2 if hit else 3] += 1

    def _flush_due(self) -> bool:
        return time.monotonic() - self._last_flush >= self.hit_flush_seconds

    def _flush_pending(self, con: duckdb.DuckDBPyConnection) -> None:
        """Write the hits and misses counted in memory inside the caller's transaction.

        Counting them in memory keeps two statements out of every hit and publish (a publish
        that bumped the miss counter and flushed hits each time cost ~4 ms more).
        """
        with self._pending_lock:
            hits, self._pending_hits = self._pending_hits, {}
            misses, self._pending_misses = self._pending_misses, 0
            calls, self._pending_calls = self._pending_calls, {}
            self._last_flush = time.monotonic()
        try:
            if hits:
                # A hit on a file without a row (its rm or GC was killed before the unlink)
                # registers it again: the file is valid and verified, and now in use.
                register_orphans(self.manifest, con, list(hits))
                self.manifest.execute(
                    con,
                    "entries.sql",
                    "flush_hits",
                    {
                        "keys": list(hits),
                        "hits": [count for count, _ in hits.values()],
                        "times": [when for _, when in hits.values()],
                    },
                )

            if misses:
                params = {"name": "misses", "delta": misses}
                self.manifest.execute(con, "entries.sql", "bump_counter", params)
            if calls:
                self._flush_calls(con, calls)
        except BaseException:
            with self._pending_lock:  # keep them for the next attempt
                for key, (count, when) in hits.items():
                    old_count, _ = self._pending_hits.get(key, (0, when))
                    self._pending_hits[key] = (old_count + count, when)
                self._pending_misses += misses
                for key, (feature, symbol, hit_count, miss_count) in calls.items():
                    kept = self._pending_calls.setdefault(key, [feature, symbol, 0, 0])
                    kept[2] += hit_count
                    kept[3] += miss_count
            raise

    def _flush_calls(self, con: duckdb.DuckDBPyConnection, calls: dict[str, list[Any]]) -> None:
        """Add counted calls to the cumulative counters, which rm and GC never touch."""
        rows = list(calls.values())
        params = {"symbols": sorted({row[1] for row in rows})}
        self.manifest.execute(con, "entries.sql", "number_symbols", params)
        params = {
            "keys": list(calls),
            "features": [row[0] for row in rows],
            "symbols": [row[1] for row in rows],
            "hits": [row[2] for row in rows],
            "misses": [row[3] for row in rows],
        }
        self.manifest.execute(con, "entries.sql", "count_calls", params)

    def flush(self) -> None:
        """Write the hits and misses counted in memory to the manifest now, and, if this store
        changed the manifest since, bring ``catalog.duckdb`` up to date."""
        self._flush_counts()
        if self._wrote:  # a store that only read leaves every file as it found it
            self._wrote = False
            refresh_catalog(self.manifest, 0.0, wait=True)

    def _after_write(self) -> None:
        """After each committed manifest write: refresh the catalog if it is due (debounced)."""
        self._wrote = True
        refresh_catalog(self.manifest, self.catalog_refresh_seconds)

    def _flush_counts(self) -> None:
        if self.read_only:  # its hits stay in memory: it may not write the manifest
            return
        with self._pending_lock:
            if not self._pending_hits and not self._pending_misses and not self._pending_calls:
                return
        self.manifest.on_change = None  # the caller refreshes the catalog (or need not)
        try:
            with self.manifest.write() as con:
                self._flush_pending(con)
        finally:
            self.manifest.on_change = self._after_write
        self._wrote = True
        self._flush_failing = False

    # -- misses --------------------------------------------------------------------------------

    def _miss(self, request: _Request) -> CacheResult[Any]:
        """Compute under the key's lock (single flight), write a temp file, publish it.

        The opportunistic GC step runs first, so it can never delete the result this call
        is about to return (a lazy result is a scan of that file).
        """
        self._maybe_auto_gc()
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(
                    file_lock(self.layout.key_lock_path(request.key), self.lock_timeout)
                )
            except OSError as exc:  # e.g. locks/ not writable: computed, but never stored
                compute_started = time.perf_counter()
                output = request.compute_func(request.frame, request.config)
                result = as_result_frame(output, request.parts.feature)
                self._computed(request, time.perf_counter() - compute_started)
                return request.result(self._unstored(result, request, exc), stored=False)
            value = self._read_or_quarantine(request)  # published while we waited?
            if value is not None:
                self._record_hit(request.key, request.parts)
                return request.result(value, hit=True)
            compute_started = time.perf_counter()
            _crash_point("compute")
            output = request.compute_func(request.frame, request.config)
            result = as_result_frame(output, request.parts.feature)
            temp: Path | None = None
            try:
                temp = self.layout.new_temp_path(request.key)
                in_hand = write_result(
                    result,
                    temp,
                    self._file_metadata(request),
                    self.compression,
                    on_partial=functools.partial(_crash_point, "write"),
                )
                _crash_point("fsynced")
                # A LazyFrame was computed while it was sunk: its time includes the write.
                compute_seconds = time.perf_counter() - compute_started
                self._computed(request, compute_seconds)
                # A miss returns what every hit will: the table written, converted as a hit
                # converts (see write_result), else the file read back (checksums verified).
                # A lazy result is scanned once it is in place (a scan verifies the file).
                frame = None
                if not request.lazy:
                    frame = in_hand if in_hand is not None else read_result(temp, request.key)
                described = in_hand if in_hand is not None else frame
                if described is None:
                    info = describe_result(temp, self.time_column)
                else:  # no second read of the file: rows, schema and time range are in hand
                    info = describe_frame(described, temp, self.time_column)
                publish_started = time.perf_counter()
                self._publish(request, temp, info, compute_seconds)
                _log_event("publish", request, time.perf_counter() - publish_started)
            except _store_errors() as exc:
                if temp is not None:
                    self._remove(temp)
                return request.result(self._unstored(result, request, exc), stored=False)
        return request.result(scan_result(request.path, request.key) if frame is None else frame)

    def _publish(
        self, request: _Request, temp: Path, info: ResultInfo, compute_seconds: float
    ) -> None:
        """Rename the temp file into place and insert its entry in one manifest transaction."""
        now = utc_now()
        row = entry_row(
            self._file_metadata(request),
            self.layout.relative_result_path(request.key),
            info,
            compute_seconds=compute_seconds,
            created_at=now,
            last_accessed_at=now,
        )
        renamed = False
        try:
            with self.manifest.write() as con:
                rootfs.rename(self.root, temp, request.path)
                renamed = True
                _crash_point("renamed")
                self._insert_entry(con, row)
                view_published(
                    con, self.layout, request.parts.feature, request.key, row["result_schema"]
                )
                self._record_inputs(con, request)
                if self._flush_due():
                    self._flush_pending(con)
                _crash_point("commit")
        except BaseException:
            # Rolled back, or the COMMIT itself failed (a full disk): no file without its row.
            # The key's lock is still held, so no other publish of this key can be undone here.
            if renamed and not self._committed(request.key):
                self._remove(request.path)
                with contextlib.suppress(OSError, JulesCacheError):
                    remove_link(self.layout, request.parts.feature, request.key)
            raise
        remember_named(self.layout, request.parts.feature)
        with self._pending_lock:
            self._pending_misses += 1
            self._count_call(request.key, request.parts, hit=False)
        fsync_dir(request.path.parent)

    def _committed(self, key: str) -> bool:
        """Whether ``key`` has a row after a publish raised: a failure after the COMMIT (the
        checkpoint at detach) leaves the row committed, and then the file must stay."""
        import duckdb

        try:
            with self.manifest.read() as con:
                params = {"keys": [key]}
                return bool(
                    self.manifest.execute(con, "removal.sql", "keys_with_rows", params).fetchall()
                )
        except (JulesCacheError, OSError, duckdb.Error):
            return False

    def _remove(self, path: Path) -> None:
        """Delete a file we created, if it is there; failing to is never worse than not trying."""
        with contextlib.suppress(OSError, JulesCacheError):
            rootfs.unlink(self.root, path)

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

    def _unstored(
        self, result: pl.DataFrame | pl.LazyFrame, request: _Request, exc: BaseException
    ) -> pl.DataFrame | pl.LazyFrame:
        """The computed value when storing it failed: raise (strict) or warn and return it."""
        if isinstance(result, pl.LazyFrame):
            # Sinking failed: collect in memory. A broken plan raises here, as a compute error.
            result = result.collect()
        advice = "" if isinstance(exc, JulesCacheError) else ". Free disk space or fix permissions"
        message = (
            f"could not store {request.parts.feature} for {request.parts.symbol!r} in "
            f"{self.root}: {exc}{advice}"
        )
        if self.strict:
            raise StoreError(message) from exc
        warnings.warn(
            message + "; returning the computed result uncached", CacheWriteWarning, stacklevel=4
        )
        try:
            with self.manifest.write(wait=False) as con:
                self._bump(con, "store_failures")
        except _store_errors():
            pass  # the manifest may be what failed; the warning has told the caller
        return result.lazy() if request.lazy else result

    def _record_inputs(self, con: duckdb.DuckDBPyConnection, request: _Request) -> None:
        """Remember which files (as stat() saw them) a file-input entry was keyed from."""
        if not request.files:
            return
        files = request.files
        self.manifest.execute(con, "entries.sql", "delete_entry_inputs", {"key": request.key})
        self.manifest.execute(
            con,
            "entries.sql",
            "insert_entry_inputs",
            {
                "key": request.key,
                "method": request.data_method,
                "positions": list(range(len(files))),
                "paths": [f.path for f in files],
                "sizes": [f.size for f in files],
                "mtimes": [f.mtime_ns for f in files],
                "inodes": [f.inode for f in files],
                "ctimes": [f.ctime_ns for f in files],
                "digests": [f.digest for f in files],
            },
        )

    def _bump(self, con: duckdb.DuckDBPyConnection, counter: str) -> None:
        self.manifest.execute(con, "entries.sql", "bump_counter", {"name": counter, "delta": 1})

    def _file_metadata(self, request: _Request) -> dict[str, Any]:
        """The entry's identity, stored in the file so the manifest can be rebuilt from it."""
        parts = request.parts
        return {
            "key": request.key,
            "key_schema": KEY_SCHEMA,
            "feature": parts.feature,
            "symbol": parts.symbol,
            "data_fingerprint": parts.data_fingerprint,
            "data_method": request.data_method,
            "config_fingerprint": parts.config_fingerprint,
            "config_json": request.config_json,
            "code_fingerprint": parts.code_fingerprint,
            "code_version": request.code_version,
            "code_functions": request.code_functions,
            "library_versions": library_versions(),
        }

    # -- inspection ----------------------------------------------------------------------------

    def entry(self, key: str) -> Entry | None:
        """The manifest entry for ``key`` or a unique prefix of 6+ characters (as ``ls`` prints
        and ``rm --key`` takes), or None; an ambiguous prefix raises ``InvalidInput``."""
        if len(key) < 6:
            raise InvalidInput(f"key prefix {key!r} is too short; give at least 6 characters")
        filters = {"key": key, "feature": None, "symbol": None}
        entries = self._query_entries("match_entries", filters)
        if len(entries) > 1:
            raise InvalidInput(
                f"key prefix {key!r} matches {len(entries)} entries; give more characters"
            )
        return entries[0] if entries else None

    def entries(
        self, *, feature: str | None = None, symbol: str | None = None, since: Any = None
    ) -> list[Entry]:
        """Manifest entries, newest first, optionally filtered."""
        return self._query_entries(
            "list_entries", {"feature": feature, "symbol": symbol, "since": since}
        )

    def _query_entries(self, name: str, params: dict[str, Any]) -> list[Entry]:
        with self.manifest.read() as con:
            cursor = self.manifest.execute(con, "entries.sql", name, params)
            columns = [d[0] for d in cursor.description]
            return [Entry.from_row(columns, row) for row in cursor.fetchall()]

    def explain(
        self,
        symbol: str,
        data: Any,
        config: Any,
        compute_func: ComputeFunc,
        *,
        name: str | None = None,
        version: str | None = None,
    ) -> Explanation:
        """Say whether this call would hit and, if not, what differs from the closest entry.

        Nothing is computed: the call is fingerprinted and compared, component by component
        (data, config key by key, code function by function, symbol, key scheme), with the
        cached entries of the same feature.
        """
        request = self._request(symbol, data, config, compute_func, name, version, False)
        parts = request.parts
        call = CallComponents(
            key=request.key,
            feature=parts.feature,
            symbol=parts.symbol,
            data_fingerprint=parts.data_fingerprint,
            files=request.files,
            config_fingerprint=parts.config_fingerprint,
            config_json=request.config_json,
            code_fingerprint=parts.code_fingerprint,
            code_version=request.code_version,
            code_functions=request.code_functions,
            code_unfollowed=request.code_unfollowed,
        )
        candidates = self.entries(feature=parts.feature)
        with self.manifest.read() as con:
            inputs = {
                entry.key: self.manifest.execute(
                    con, "entries.sql", "entry_inputs", {"key": entry.key}
                ).fetchall()
                for entry in candidates
                if entry.data_method != "frame"
            }
        return explain(call, request.path.exists(), candidates, inputs)

    def check(
        self,
        *,
        fix: bool = False,
        deep: bool = False,
        rebuild: bool = False,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        progress: Callable[[int, int], None] | None = None,
    ) -> CheckReport:
        """Compare the manifest with the files on disk; report problems by kind.

        ``fix`` repairs them (drops rows whose file is gone, registers valid orphan files,
        quarantines damaged files, deletes temp and lock files older than ``grace_seconds``);
        ``deep`` also re-reads every page with its checksum verified; ``rebuild`` moves the
        manifest aside and rebuilds it from the files' own metadata (implies ``fix``).
        """
        if fix or rebuild:
            self._writable("check(fix=True)")
        if rebuild:  # counts kept in memory go to the rebuilt manifest
            report = _rebuild(
                self.layout,
                self.lock_timeout,
                deep=deep,
                grace_seconds=grace_seconds,
                progress=progress,
            )
            self.flush()
            return report
        self._flush_counts()
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

    def remove(
        self,
        *,
        key: str | None = None,
        feature: str | None = None,
        symbol: str | None = None,
        dry_run: bool = False,
        all: bool = False,
    ) -> list[Entry]:
        """Delete the entries matching every given filter (``key`` may be a prefix), or with
        ``all=True`` (and no filter) every entry.

        Rows are deleted and committed first, files unlinked after, so a crash in between
        leaves orphan files (which GC removes), never rows pointing at nothing. Returns the
        entries removed (or that would be, with ``dry_run``).
        """
        unfiltered = key is None and feature is None and symbol is None
        if all and not unfiltered:
            raise InvalidInput("all=True removes every entry: pass no key, feature or symbol")
        if unfiltered and not all:
            raise InvalidInput(
                "name a key, feature or symbol to remove (or all=True); nothing was removed"
            )
        if key is not None and len(key) < 6:
            raise InvalidInput(f"key prefix {key!r} is too short; give at least 6 characters")
        filters = {"key": key, "feature": feature, "symbol": symbol}
        if dry_run:
            return self._query_entries("match_entries", filters)
        self._writable("remove")
        with self.manifest.write() as con:
            cursor = self.manifest.execute(con, "entries.sql", "match_entries", filters)
            columns = [d[0] for d in cursor.description]
            matched = [Entry.from_row(columns, row) for row in cursor.fetchall()]
            deleted = drop_rows(self.manifest, con, [entry.key for entry in matched])
        with self.manifest.read() as con:
            outcome = discard_files(self.manifest, con, deleted)
        if outcome.errors:
            message = f"removed {len(deleted)} entries, but {describe_failures(outcome)}"
            raise PartialRemoval(message, matched, list(outcome.not_deleted))
        return matched

    def verify(self, *, fix: bool = False) -> VerifyReport:
        """Find footer-keyed entries whose input file was rewritten under an identical footer.

        With ``fix=True`` those entries are removed (as by ``remove``: rows, views, then
        files), so the next call recomputes them.
        """
        if fix:
            self._writable("verify(fix=True)")
        report = find_stale_footer_entries(self.manifest)
        if not fix:
            return report
        removed = sum(len(self.remove(key=key)) for key in report.stale)
        return dataclasses.replace(report, removed=removed)

    def stats(self, *, symbol_limit: int = DEFAULT_SYMBOL_LIMIT) -> Stats:
        """Entries and bytes stored now; hits, misses and compute time saved since the cache
        was created (never going down), in total, per feature and per symbol.

        ``symbol_limit`` caps the per-symbol list (and so the Prometheus label set): the first
        ``symbol_limit`` symbols ever counted are listed by name, all later ones summed as
        ``__other__``. Counts this process holds in memory are flushed first; other
        processes' may lag by up to their ``hit_flush_seconds``.
        """
        _require(
            isinstance(symbol_limit, int) and symbol_limit >= 0,
            f"symbol_limit must be an int >= 0, not {symbol_limit!r}",
        )
        self.flush()
        with self.manifest.read() as con:
            rows = self.manifest.execute(con, "entries.sql", "stats_by_feature").fetchall()
            params = {"limit": symbol_limit}
            by_symbol = self.manifest.execute(con, "entries.sql", "stats_by_symbol", params)
            symbols = tuple(SymbolStats(*row) for row in by_symbol.fetchall())
            counters = dict(self.manifest.execute(con, "entries.sql", "counters").fetchall())
        features = tuple(FeatureStats(*row) for row in rows)
        return Stats(
            root=str(self.root),
            entries=sum(f.entries for f in features),
            bytes=sum(f.bytes for f in features),
            hits=sum(f.hits for f in features),
            misses=counters.get("misses", 0),
            store_failures=counters.get("store_failures", 0),
            seconds_saved=sum(f.seconds_saved for f in features),
            features=features,
            symbols=symbols,
        )

    # -- SQL -----------------------------------------------------------------------------------

    def sql(
        self,
        query: str,
        params: Any = None,
        *,
        symbols: Any = None,
        versions: Any = None,
        since: Any = None,
        until: Any = None,
    ) -> pl.DataFrame:
        """Run one read-only SQL query over the cache and return a DataFrame.

        The query sees the manifest tables (``entries``, ``counters``, ...), ``feature_views``
        and one view per feature (see ``jules_cache.query.views``). ``params`` are bound (``?`` /
        ``$name``). ``symbols``, ``versions`` (code version or fingerprint), ``since`` and
        ``until`` restrict every feature view to the files that can match. Raises
        ``QueryError`` for a write statement, an SQL error (listing the available views) or a
        failed query.
        """
        return pl.from_arrow(
            self.sql_arrow(
                query, params, symbols=symbols, versions=versions, since=since, until=until
            )
        )

    def sql_arrow(
        self,
        query: str,
        params: Any = None,
        *,
        symbols: Any = None,
        versions: Any = None,
        since: Any = None,
        until: Any = None,
    ) -> Any:
        """Like ``sql`` but return a ``pyarrow.Table`` (no conversion; for big results)."""
        from jules_cache.query.sql import Filters, run

        filters = Filters.build(symbols, versions, since, until)
        return run(self.manifest, self.layout, query, params, filters)

    def refresh_views(self) -> dict[str, str]:
        """Relink every feature's folder and rebuild ``catalog.duckdb`` now.

        For a moved root (the stored views hold absolute paths) or to see the latest results
        from a plain DuckDB session at once. Returns ``{feature: view name}``.
        """
        self._writable("refresh_views")
        with self.manifest.write() as con:
            names = refresh_views(con, self.layout)
        with file_lock(self.layout.root / CATALOG_LOCK_NAME, self.lock_timeout):
            build_catalog(self.manifest)
        return names

    # -- garbage collection --------------------------------------------------------------------

    def gc(
        self,
        *,
        retention_weeks: float | None = None,
        max_size: int | str | None = None,
        grace: float | str | timedelta | None = None,
        dry_run: bool = False,
        limit: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> GCReport:
        """Delete orphans, dangling rows, expired and over-budget entries, stale temp/lock files.

        ``retention_weeks``: entries not accessed for this long go (default
        ``$FEATURE_STORE_GC_RETENTION_WEEKS``, else 4); ``max_size`` (bytes or '50GB'): least
        recently used entries beyond it go; ``grace`` (seconds or '6h', default 6 h): temp and
        lock files younger than this stay. ``dry_run`` deletes nothing and reports what would
        go. Raises ``LockTimeout`` if another GC is running, ``GCError`` if a step failed.
        """
        self._writable("gc")
        options = GCOptions.build(retention_weeks, max_size, grace, dry_run, limit)
        self.flush()  # this process's recent hits count as accesses
        report = collect_garbage(self.manifest, self.layout, options, progress=progress)
        assert report is not None
        _log_gc(report)
        return report

    def _maybe_auto_gc(self) -> None:
        """The opportunistic mode: a bounded GC step, at most once per ``auto_gc`` seconds."""
        if self.auto_gc is None or time.monotonic() < self._next_auto_gc:
            return
        self._next_auto_gc = time.monotonic() + self.auto_gc
        try:
            options = GCOptions.build(limit=self.auto_gc_limit)
            report = collect_garbage(
                self.manifest, self.layout, options, skip_if_ran_within=self.auto_gc
            )
            if report is not None:
                _log_gc(report)
        except LockTimeout:
            pass  # another GC is running: nothing to do
        except _store_errors() as exc:
            warnings.warn(
                f"automatic GC of {self.root} failed: {exc}", CacheWriteWarning, stacklevel=4
            )

    def close(self) -> None:
        """Flush recorded hits. The store stays usable; closing again is harmless."""
        self.flush()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


CRASH_ENV = "JULES_CACHE_CRASH_AT"


def _crash_point(stage: str) -> None:
    """Fault-injection hook for the crash tests (tests/test_faults.py, tests/test_attack_store.py):
    if the environment variable ``JULES_CACHE_CRASH_AT`` names ``stage``, SIGKILL this process
    right here; if it names ``fill-disk:<stage>``, fill the root's file system here instead
    (a file ``tmp/fill-disk`` written until ENOSPC) so the next write fails for real.

    Stages of a put, in order: ``compute`` (key lock held, nothing written), ``write`` (temp
    file half written, no footer), ``fsynced`` (temp complete, not published), ``renamed``
    (file in objects/, row not inserted), ``commit`` (row inserted, transaction not committed).
    Of a manifest's creation: ``manifest-creating`` (temp file attached, no tables). Of a
    rebuild (``check --rebuild`` or ``FeatureStore()`` recovering): ``rebuild-started`` (new
    manifest created under a temp name, nothing registered), ``rebuild-registered`` (every file
    registered, not yet renamed), ``rebuild-moved-aside`` (old manifest moved aside, the new
    one not yet in place). Never set it outside tests.
    """
    wanted = os.environ.get(CRASH_ENV)
    if wanted == stage:
        os.kill(os.getpid(), signal.SIGKILL)
    if wanted == f"fill-disk:{stage}":
        _fill_disk(Path(os.environ[CRASH_ENV + "_ROOT"]) / "tmp" / "fill-disk")


def _fill_disk(path: Path) -> None:
    chunk = b"\0" * (1 << 16)
    with contextlib.suppress(OSError), open(path, "ab", buffering=0) as sink:
        while True:
            sink.write(chunk)
    with contextlib.suppress(OSError), open(path, "ab", buffering=0) as sink:
        while True:  # the last partial chunk
            sink.write(b"\0" * 512)


def _log_gc(report: GCReport) -> None:
    """One INFO line per GC run: what it deleted, per reason, and how long it took."""
    if not _log.isEnabledFor(logging.INFO):
        return
    reasons = ", ".join(f"{t.reason} {t.count}" for t in report.totals if t.count) or "none"
    _log.info(
        "gc %s%s: deleted %d files and rows (%s), %d bytes, %s in %.1f s",
        report.root,
        " (dry run: would have)" if report.dry_run else "",
        report.files,
        reasons,
        report.bytes,
        report.status,
        report.duration_seconds,
    )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidInput(message)


def _frame_bytes(data: Any) -> int:
    """Approximate in-memory size of a frame argument (0 for paths and unknown types)."""
    for attribute in ("estimated_size", "nbytes"):
        size = getattr(data, attribute, None)
        if callable(size):
            return int(size())
        if isinstance(size, int):
            return size
    return 0


@functools.cache
def library_versions() -> dict[str, str]:
    """Versions of the libraries that shaped a result file (recorded in every entry)."""
    from importlib import metadata as importlib_metadata  # ~15 ms: only when publishing

    versions = {"jules_cache": __version__}
    for package in ("polars", "pyarrow", "duckdb"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


@atexit.register
def _flush_live_stores() -> None:
    """Write pending hits of every open store at interpreter exit (never GC: only counters)."""
    for store in list(_live_stores):
        try:
            store.flush()
        except Exception as exc:  # exiting: report, never raise
            warnings.warn(f"jules_cache: could not flush hits of {store}: {exc}", stacklevel=1)
