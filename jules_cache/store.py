"""``FeatureStore``: the façade that makes a feature computation free the second time.

The story of a call: fingerprint every input into a key (``_request``); read the key's result
from the backend, lock-free (a hit); else hold the key (one process computes, the others wait
and then hit), compute, write the result to a temp file and publish it with its catalog row
(a miss). Hits and misses are counted in memory and written in batches. Where results and rows
live is the backend's business (``jules_cache.engine.backend``): a local directory by default.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import polars as pl

from jules_cache import _arguments as arguments
from jules_cache._process import require_unforked
from jules_cache.engine.backend import Backend
from jules_cache.errors import (
    CacheWriteWarning,
    ForkedProcess,
    InvalidInput,
    JulesCacheError,
    LockTimeout,
    StoreError,
)
from jules_cache.explain import CallComponents, Explanation, explain
from jules_cache.fingerprints.code import code_fingerprint, feature_name
from jules_cache.fingerprints.config import canonical_config
from jules_cache.fingerprints.inputs import FingerprintMode, as_result_frame, prepare_data
from jules_cache.fingerprints.keys import KeyParts, validate_symbol
from jules_cache.models import CacheResult, Entry, Overview, Stats
from jules_cache.options import DEFAULT_GRACE_SECONDS, StoreOptions
from jules_cache.request import ComputeFunc, Request, log, log_event
from jules_cache.roots import Root, claimed_catalog, resolve_root
from jules_cache.storage.crash_points import crash_point
from jules_cache.storage.manifest import utc_now
from jules_cache.storage.pending_counts import PendingCounts

if TYPE_CHECKING:
    from jules_cache.decorator import Feature
    from jules_cache.maintenance.check import CheckReport
    from jules_cache.maintenance.gc import GCReport
    from jules_cache.maintenance.verify import VerifyReport

__all__ = ["ComputeFunc", "FeatureStore"]

_live_stores: weakref.WeakSet[FeatureStore] = weakref.WeakSet()
DEFAULT_LOG_COMPUTE_SECONDS = 10.0
# Symbols with a label of their own in ``stats()`` (and Prometheus); later ones are __other__.
DEFAULT_SYMBOL_LIMIT = 100
# max_size eviction runs GC's plan for its size cap alone: a retention no entry reaches.
_NO_RETENTION_WEEKS = 10_000
# ... and evicts down to this share of the cap, so a GC run (~0.2 s) is paid once per ~10% of
# the cap's worth of new results, not after every miss of a full cache (diskcache culls so).
_EVICT_TO = 0.9


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
        catalog: a PostgreSQL catalog (``postgresql://user@host/db``): rows live in
            PostgreSQL, keys are locked there, and every host sharing catalog and root shares
            one cache (README: Sharing one cache across machines). With
            ``root="s3://bucket/prefix"`` (default ``$JULES_CACHE_CATALOG``) results are S3
            objects (endpoint and credentials from the standard AWS variables, e.g.
            ``AWS_ENDPOINT_URL``); with a directory, files in it (a file system every host
            mounts at the same path; the directory is then this catalog's only).
        catalog_schema: the PostgreSQL schema of that catalog (default
            ``$JULES_CACHE_CATALOG_SCHEMA``, else ``jules_cache``): one database can hold many
            caches.
        max_size: bytes or '50GB': after a miss publishes, a cache whose recorded size exceeds
            it evicts its least recently used entries down to it (at most ``auto_gc_limit``
            deletions; never on a hit). Default: unbounded (``jules-cache gc`` from cron).

    A missing manifest, one whose creation never completed (a crash or a full disk), and a
    rebuild interrupted midway are repaired here on their own (``check.recover``). A damaged
    one is reported with a ``CacheWriteWarning`` and the store opens anyway (serving hits,
    storing nothing) so that ``check(rebuild=True)``, the one way to rebuild it, can run.
    """

    # Code that mentions a store (``@store.feature`` above a function) is fingerprinted with
    # this constant in its place: the store's root and state must not enter any key.
    __jules_cache_stand_in__ = "_code_identity"
    _code_identity = "jules_cache.FeatureStore"

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        lock_timeout: float = StoreOptions.lock_timeout,
        strict: bool = StoreOptions.strict,
        tick_data_threshold_mb: float = StoreOptions.tick_data_threshold_mb,
        fingerprint: FingerprintMode = StoreOptions.fingerprint,
        compression: str = StoreOptions.compression,
        time_column: str | None = StoreOptions.time_column,
        hit_flush_seconds: float = StoreOptions.hit_flush_seconds,
        auto_gc: float | None = StoreOptions.auto_gc,
        auto_gc_limit: int = StoreOptions.auto_gc_limit,
        catalog_refresh_seconds: float = StoreOptions.catalog_refresh_seconds,
        log_compute_seconds: float = StoreOptions.log_compute_seconds,
        read_only: bool = StoreOptions.read_only,
        catalog: str | None = StoreOptions.catalog,
        catalog_schema: str | None = StoreOptions.catalog_schema,
        max_size: int | str | None = StoreOptions.max_size,
    ):
        require_unforked()
        options = StoreOptions(
            lock_timeout=lock_timeout,
            strict=strict,
            tick_data_threshold_mb=tick_data_threshold_mb,
            fingerprint=fingerprint,
            compression=compression,
            time_column=time_column,
            hit_flush_seconds=hit_flush_seconds,
            auto_gc=auto_gc,
            auto_gc_limit=auto_gc_limit,
            catalog_refresh_seconds=catalog_refresh_seconds,
            log_compute_seconds=log_compute_seconds,
            read_only=read_only,
            catalog=catalog,
            catalog_schema=catalog_schema,
            max_size=max_size,
        )
        self.options = options
        self.read_only = options.read_only
        self.log_compute_seconds = float(options.log_compute_seconds)
        self.lock_timeout = float(options.lock_timeout)
        self.strict = options.strict
        self.tick_data_threshold_bytes = int(options.tick_data_threshold_mb * 1024 * 1024)
        self.fingerprint_mode: FingerprintMode = options.fingerprint
        self.compression = options.compression
        self.time_column = options.time_column
        self.hit_flush_seconds = float(options.hit_flush_seconds)
        self.catalog_refresh_seconds = float(options.catalog_refresh_seconds)
        self.auto_gc = options.auto_gc
        self.auto_gc_limit = options.auto_gc_limit
        # The size cap, enforced after each publish by GC's over-budget plan (see _cap_size).
        self.max_size = None
        if options.max_size is not None:
            from jules_cache.maintenance.gc import parse_size

            self.max_size = parse_size(options.max_size)
        self._next_auto_gc = 0.0
        self._pending = PendingCounts(self.hit_flush_seconds)
        self._flush_failing = False  # warned about this failure episode already
        self._backend = self._open_backend(resolve_root(root))
        self.root = self._backend.root
        _live_stores.add(self)

    @classmethod
    def from_options(
        cls, root: str | os.PathLike[str] | None, options: StoreOptions
    ) -> FeatureStore:
        """A store on ``root`` with ``options`` (as ``compute_many`` workers open theirs)."""
        return cls(root, **options.to_dict())

    def _open_backend(self, root: Root) -> Backend:
        """A local directory by default; ``s3://bucket/prefix`` or a directory with a
        PostgreSQL catalog is one cache shared by many hosts."""
        catalog, catalog_schema = self.options.catalog, self.options.catalog_schema
        claimed = None if root.shared else claimed_catalog(root.path())
        if root.shared or catalog is not None or claimed is not None:  # rows in PostgreSQL
            try:
                from jules_cache.engine.shared import open_shared
            except ImportError as exc:
                raise InvalidInput(
                    f"a root with a PostgreSQL catalog ({root.location}) needs the shared "
                    f'extra: pip install "jules-cache[shared]" ({exc})'
                ) from exc
            return open_shared(
                root.location if root.shared else root.path(),
                catalog=catalog,
                catalog_schema=catalog_schema,
                lock_timeout=self.lock_timeout,
                pending=self._pending,
                read_only=self.read_only,
            )
        _require(
            catalog_schema is None,
            "catalog_schema= names the schema of a PostgreSQL catalog= (pass both); a local "
            f"root ({root.location}) without catalog= keeps its catalog in manifest.duckdb",
        )
        from jules_cache.engine.local import LocalBackend  # its maintenance code: on open

        return LocalBackend(
            root.path(),
            lock_timeout=self.lock_timeout,
            pending=self._pending,
            catalog_refresh_seconds=self.catalog_refresh_seconds,
            read_only=self.read_only,
        )

    def __repr__(self) -> str:
        if self.read_only:
            return f"FeatureStore({self._backend.location!r}, read_only=True)"
        return f"FeatureStore({self._backend.location!r})"

    def _writable(self, what: str) -> None:
        """Raise ``InvalidInput`` if this store was opened ``read_only`` (``what`` would write)."""
        if self.read_only:
            raise InvalidInput(
                f"{what} changes the cache, but this store of {self._backend.location} is "
                "read-only: open FeatureStore(root) without read_only=True (in a process "
                "allowed to write) for that"
            )

    # -- the decorator -------------------------------------------------------------------------

    @overload
    def feature(self, compute_func: ComputeFunc, /) -> Feature: ...

    @overload
    def feature(
        self,
        compute_func: None = None,
        /,
        *,
        name: str | None = None,
        version: str | None = None,
        ignore: Iterable[str] | None = None,
        expire: float | str | timedelta | None = None,
    ) -> Callable[[ComputeFunc], Feature]: ...

    def feature(
        self,
        compute_func: ComputeFunc | None = None,
        /,
        *,
        name: str | None = None,
        version: str | None = None,
        ignore: Iterable[str] | None = None,
        expire: float | str | timedelta | None = None,
    ) -> Feature | Callable[[ComputeFunc], Feature]:
        """Decorate ``compute_func(lazy_frame, config)`` into ``f(symbol, data, config, *,
        lazy=False)`` served by this store, as ``get_or_compute`` would (see
        ``jules_cache.decorator``). Use bare (``@store.feature``) or with ``name=`` /
        ``version=`` / ``ignore=`` / ``expire=``.
        """
        from jules_cache.decorator import decorate

        return decorate(
            self, compute_func, name=name, version=version, ignore=ignore, expire=expire
        )

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
        ignore: Iterable[str] | None = None,
        expire: float | str | timedelta | None = None,
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
        ignore: Iterable[str] | None = None,
        expire: float | str | timedelta | None = None,
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
        ignore: Iterable[str] | None = None,
        expire: float | str | timedelta | None = None,
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
        ignore: Iterable[str] | None = None,
        expire: float | str | timedelta | None = None,
        lazy: bool = False,
    ) -> pl.DataFrame | pl.LazyFrame:
        """Return ``compute_func(data, config)`` for ``symbol``, from the cache when possible.

        ``data`` is a Polars DataFrame/LazyFrame, pyarrow Table, pandas DataFrame, or Parquet
        path(s). ``name`` overrides the feature name (default: the function's qualified name);
        ``version`` replaces the code fingerprint. ``ignore`` names top-level config keys left
        out of the key (``compute_func`` still receives them: e.g. ``verbose``). ``expire``
        (seconds or '7d'; diskcache's TTL) makes a result written by this call a miss once
        that long has passed since it was written; a hit of an entry written with an expiry
        respects it whatever ``expire`` it passes. With ``lazy=True`` a LazyFrame over the
        cached file is returned. Use ``fetch`` to also learn whether it was a hit.
        """
        value: pl.DataFrame | pl.LazyFrame = self.fetch(
            symbol,
            data,
            config,
            compute_func,
            name=name,
            version=version,
            ignore=ignore,
            expire=expire,
            lazy=lazy,
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
        ignore: Iterable[str] | None = None,
        expire: float | str | timedelta | None = None,
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
        ignore: Iterable[str] | None = None,
        expire: float | str | timedelta | None = None,
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
        ignore: Iterable[str] | None = None,
        expire: float | str | timedelta | None = None,
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
        ignore: Iterable[str] | None = None,
        expire: float | str | timedelta | None = None,
        lazy: bool = False,
    ) -> CacheResult[Any]:
        """Like ``get_or_compute``, but return a ``CacheResult``: value, hit/miss, key, path."""
        request = self._request(symbol, data, config, compute_func, name, version, lazy, ignore)
        request = dataclasses.replace(request, expire=arguments.expiry("expire", expire))
        value = self._backend.read(request.key, lazy)
        if value is not None:
            self._record_hit(request)
            return request.result(value, hit=True)
        log_event("miss", request, time.perf_counter() - request.started)
        if self.read_only:
            return self._compute_unstored(request)
        result = self._miss(request)
        if result.stored and not result.hit:
            self._cap_size()  # after the key's lock is released: GC may take key locks
        return result

    def _compute_unstored(self, request: Request) -> CacheResult[Any]:
        """A read-only store's miss: compute and return the value, store nothing."""
        started = time.perf_counter()
        output = request.compute_func(request.frame, request.config)
        value = as_result_frame(output, request.parts.feature)
        if isinstance(value, pl.LazyFrame):
            value = value.collect()
        self._computed(request, time.perf_counter() - started)
        return request.result(value.lazy() if request.lazy else value, stored=False)

    def _computed(self, request: Request, seconds: float) -> None:
        """Log a compute: DEBUG always, INFO when it took longer than ``log_compute_seconds``."""
        log_event("compute", request, seconds)
        if seconds >= self.log_compute_seconds and log.isEnabledFor(logging.INFO):
            log.info(
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
        ignore: Iterable[str] | None = None,
    ) -> Request:
        """Fingerprint every input, cheapest (and likeliest to be wrong) first."""
        require_unforked()
        started = time.perf_counter()
        symbol = validate_symbol(symbol)
        if not callable(compute_func):
            raise InvalidInput(
                f"compute_func must be callable, not {type(compute_func).__name__}; pass a "
                "function (lazy_frame, config) -> frame"
            )
        name = arguments.optional_text("feature name", name, one_line=True)
        version = arguments.optional_text("version", version)
        arguments.flag("lazy", lazy)
        feature = name or feature_name(compute_func)
        config_fp = canonical_config(_keyed_config(config, arguments.config_keys("ignore", ignore)))
        code_fp = code_fingerprint(compute_func, version)
        prepared = prepare_data(
            data,
            mode=self.fingerprint_mode,
            threads=None if _frame_bytes(data) > self.tick_data_threshold_bytes else 1,
            memo=self._backend.digest_memo(),
        )
        parts = KeyParts(feature, symbol, prepared.fingerprint, config_fp.digest, code_fp.digest)
        key = parts.key()
        return Request(
            parts=parts,
            key=key,
            location=self._backend.result_location(key),
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

    def _record_hit(self, request: Request) -> None:
        """Count the hit in memory; write the counts when due, never waiting on the catalog:
        off this thread (``flush_later``), or, with ``hit_flush_seconds=0``, at once unless
        the lock is busy."""
        self._pending.hit(request.key, request.parts, utc_now())
        self._report_background_error()
        if self.read_only or not self._pending.due():
            return
        try:
            if self.hit_flush_seconds > 0:
                self._backend.flush_later()
                return
            self._backend.write_counts(wait=False)
        except LockTimeout:
            pass  # busy: the next write or hit flushes them
        except JulesCacheError as exc:
            # Missing, damaged, unwritable or held by another program: the hit is still
            # correct, so it is served; the counts stay in memory for the next try, one
            # flush interval later, not on every hit.
            self._pending.postpone()
            self._warn_flush_failed(exc)
        else:
            self._flush_failing = False

    def _report_background_error(self) -> None:
        """Warn (once per failure episode) about a background flush that failed."""
        error = self._backend.take_error()
        if error is not None:
            self._pending.postpone()
            self._warn_flush_failed(error)

    def _write_rows(self) -> None:
        """Write the rows of results this store published but did not list yet (and counts
        closed stores left), so that what it reads of the catalog next includes them."""
        if not self.read_only:
            self._backend.write_counts(rows_only=True)

    def _warn_flush_failed(self, exc: BaseException) -> None:
        """One ``CacheWriteWarning`` per failure episode (until a flush succeeds again)."""
        if self._flush_failing:
            return
        self._flush_failing = True
        warnings.warn(
            f"jules_cache: could not record hits and new results in the manifest of "
            f"{self._backend.location}: {exc}. Hits are still served; the counts and rows are "
            "kept in memory and written once it works again",
            CacheWriteWarning,
            stacklevel=4,
        )

    def flush(self) -> None:
        """Write the hits and misses counted in memory now, and, if this store changed the
        cache since, bring what plain SQL clients read (``catalog.duckdb``) up to date."""
        self._backend.flush()
        self._flush_failing = False

    # -- misses --------------------------------------------------------------------------------

    def _miss(self, request: Request) -> CacheResult[Any]:
        """Compute holding the key (single flight), write a temp file, publish it.

        The opportunistic GC step runs first, so it can never delete the result this call
        is about to return (a lazy result is a scan of that file).
        """
        self._report_background_error()
        self._maybe_auto_gc()
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self._backend.key_lock(request.key))
                value = self._backend.read_locked(request)  # published while we waited?
            except JulesCacheError as exc:
                # e.g. locks/ not writable, a lock timeout, the catalog unreachable: computed,
                # but never stored.
                compute_started = time.perf_counter()
                output = request.compute_func(request.frame, request.config)
                result = as_result_frame(output, request.parts.feature)
                self._computed(request, time.perf_counter() - compute_started)
                return request.result(self._unstored(result, request, exc), stored=False)
            if value is not None:
                self._record_hit(request)
                return request.result(value, hit=True)
            return self._compute_and_publish(request)

    def _compute_and_publish(self, request: Request) -> CacheResult[Any]:
        """The miss itself, holding the key: compute, write, publish; the value returned is
        what every later hit returns (schema, dtypes, order)."""
        backend = self._backend
        compute_started = time.perf_counter()
        crash_point("compute")
        output = request.compute_func(request.frame, request.config)
        result = as_result_frame(output, request.parts.feature)
        request = request.written()  # an expiry counts from the write, not from the call
        temp: Path | None = None
        try:
            temp, in_hand = backend.write_temp(request, result, self.compression)
            # A LazyFrame was computed while it was sunk: its time includes the write.
            compute_seconds = time.perf_counter() - compute_started
            self._computed(request, compute_seconds)
            frame, info = backend.describe_temp(request, temp, in_hand, self.time_column)
            publish_started = time.perf_counter()
            backend.publish(request, temp, info, compute_seconds)
            log_event("publish", request, time.perf_counter() - publish_started)
            value = backend.open_published(request) if frame is None else frame
        except JulesCacheError as exc:  # the backend's own, or a storage error it translated
            if temp is not None:
                backend.discard_temp(temp)
            return request.result(self._unstored(result, request, exc), stored=False)
        return request.result(value)

    def _unstored(
        self, result: pl.DataFrame | pl.LazyFrame, request: Request, exc: BaseException
    ) -> pl.DataFrame | pl.LazyFrame:
        """The computed value when storing it failed: raise (strict) or warn and return it."""
        if isinstance(result, pl.LazyFrame):
            # Sinking failed: collect in memory. A broken plan raises here, as a compute error.
            result = result.collect()
        # A file system error (translated at the storage seam) has a fix the user can make.
        translated = isinstance(exc, StoreError) and isinstance(exc.__cause__, OSError)
        advice = ". Free disk space or fix permissions" if translated else ""
        message = (
            f"could not store {request.parts.feature} for {request.parts.symbol!r} in "
            f"{self._backend.location}: {exc}{advice}"
        )
        if self.strict:
            raise StoreError(message) from exc
        warnings.warn(
            message + "; returning the computed result uncached", CacheWriteWarning, stacklevel=4
        )
        self._backend.count_store_failure()
        return result.lazy() if request.lazy else result

    # -- inspection ----------------------------------------------------------------------------

    def entry(self, key: str) -> Entry | None:
        """The entry for ``key`` or a unique prefix of 6+ characters (as ``ls`` prints and
        ``rm --key`` takes), or None; an ambiguous prefix raises ``InvalidInput``."""
        key = arguments.key_prefix(key)
        require_unforked()
        self._write_rows()
        filters = {"key": key, "feature": None, "symbol": None}
        entries = self._backend.query_entries("match_entries", filters)
        if len(entries) > 1:
            raise InvalidInput(
                f"key prefix {key!r} matches {len(entries)} entries; give more characters"
            )
        return entries[0] if entries else None

    def entries(
        self, *, feature: str | None = None, symbol: str | None = None, since: Any = None
    ) -> list[Entry]:
        """Entries, newest first, optionally filtered (``since``: created at or after)."""
        feature = arguments.optional_text("feature", feature)
        symbol = arguments.optional_text("symbol", symbol)
        since = arguments.moment("since", since)
        require_unforked()
        self._write_rows()
        params = {"feature": feature, "symbol": symbol, "since": since}
        return self._backend.query_entries("list_entries", params)

    def explain(
        self,
        symbol: str,
        data: Any,
        config: Any,
        compute_func: ComputeFunc,
        *,
        name: str | None = None,
        version: str | None = None,
        ignore: Iterable[str] | None = None,
    ) -> Explanation:
        """Say whether this call would hit and, if not, what differs from the closest entry.

        Nothing is computed: the call is fingerprinted and compared, component by component
        (data, config key by key, code function by function, symbol, key scheme), with the
        cached entries of the same feature.
        """
        request = self._request(symbol, data, config, compute_func, name, version, False, ignore)
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
        self._write_rows()
        candidates = self.entries(feature=parts.feature)
        with_files = [entry.key for entry in candidates if entry.data_method != "frame"]
        inputs = self._backend.entry_inputs(with_files)
        return explain(call, self._backend.exists(request.key), candidates, inputs)

    def contains(
        self,
        symbol: str,
        data: Any,
        config: Any,
        compute_func: ComputeFunc,
        *,
        name: str | None = None,
        version: str | None = None,
        ignore: Iterable[str] | None = None,
    ) -> bool:
        """Whether this call would hit (joblib's ``check_call_in_cache``): nothing computed,
        read or counted.

        The call is keyed as ``fetch`` keys it, then the result's presence is checked (a stat,
        or an S3 HEAD), so a row whose file is gone says False; when it is there, its row's
        expiry (``expire=``) is read from the catalog, so an expired entry says False. A
        Parquet path input reuses its digest memoised by stat (no re-hash while the file is
        unchanged); a frame has no such identity and is hashed every time (~13 GB/s per core).
        """
        request = self._request(symbol, data, config, compute_func, name, version, False, ignore)
        if not self._backend.exists(request.key):
            return False
        entry = self.entry(request.key)
        return entry is None or entry.expires_at is None or entry.expires_at > utc_now()

    def stats(self, *, symbol_limit: int = DEFAULT_SYMBOL_LIMIT) -> Stats:
        """Entries and bytes stored now; hits, misses and compute time saved since the cache
        was created (never going down), in total, per feature and per symbol.

        ``symbol_limit`` caps the per-symbol list (and so the Prometheus label set): the first
        ``symbol_limit`` symbols ever counted are listed by name, all later ones summed as
        ``__other__``. Counts this process holds in memory are flushed first; other
        processes' may lag by up to their ``hit_flush_seconds``.
        """
        arguments.count("symbol_limit", symbol_limit)
        require_unforked()
        self.flush()
        by_feature, by_symbol, counters = self._backend.stats_parts(symbol_limit)
        features = tuple(by_feature)
        return Stats(
            root=self._backend.location,
            entries=sum(f.entries for f in features),
            bytes=sum(f.bytes for f in features),
            hits=sum(f.hits for f in features),
            misses=counters.get("misses", 0),
            store_failures=counters.get("store_failures", 0),
            seconds_saved=sum(f.seconds_saved for f in features),
            features=features,
            symbols=tuple(by_symbol),
        )

    def overview(self) -> Overview:
        """Entries and bytes in total and by feature and symbol, the oldest and newest
        entries, and the last GC run (``jules-cache overview``)."""
        require_unforked()
        self.flush()
        totals, groups, last_gc = self._backend.overview_rows()
        return Overview.from_rows(self._backend.location, totals, groups, last_gc)

    # -- changes and upkeep --------------------------------------------------------------------

    def check(
        self,
        *,
        fix: bool = False,
        deep: bool = False,
        rebuild: bool = False,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        progress: Callable[[int, int], None] | None = None,
    ) -> CheckReport:
        """Compare the catalog with the results stored; report problems by kind.

        ``fix`` repairs them (drops rows whose file is gone, registers valid orphan files,
        quarantines damaged files, deletes temp and lock files older than ``grace_seconds``);
        ``deep`` also re-reads every page with its checksum verified; ``rebuild`` moves the
        manifest aside and rebuilds it from the files' own metadata (implies ``fix``).
        """
        for setting, value in (("fix", fix), ("deep", deep), ("rebuild", rebuild)):
            arguments.flag(setting, value)
        grace_seconds = arguments.seconds("grace_seconds", grace_seconds)
        require_unforked()
        if fix or rebuild:
            self._writable("check(fix=True)")
        self._write_rows()
        return self._backend.check(
            fix=fix, deep=deep, rebuild=rebuild, grace_seconds=grace_seconds, progress=progress
        )

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

        Rows are deleted and committed first, results deleted after, so a crash in between
        leaves orphans (which GC removes), never rows pointing at nothing. Returns the
        entries removed (or that would be, with ``dry_run``).
        """
        key = None if key is None else arguments.key_prefix(key)
        feature = arguments.optional_text("feature", feature)
        symbol = arguments.optional_text("symbol", symbol)
        arguments.flag("dry_run", dry_run)
        arguments.flag("all", all)
        require_unforked()
        unfiltered = key is None and feature is None and symbol is None
        if all and not unfiltered:
            raise InvalidInput("all=True removes every entry: pass no key, feature or symbol")
        if unfiltered and not all:
            raise InvalidInput(
                "name a key, feature or symbol to remove (or all=True); nothing was removed"
            )
        self._write_rows()
        filters = {"key": key, "feature": feature, "symbol": symbol}
        if dry_run:
            return self._backend.query_entries("match_entries", filters)
        self._writable("remove")
        return self._backend.remove(filters)

    def clear(self, *, feature: str) -> list[Entry]:
        """Remove every entry of ``feature`` (joblib's ``clear``; ``jules-cache rm --feature``),
        the one way ``remove`` removes them; return the entries removed.

        ``feature`` is the stored name: ``name=`` if given, else the function's
        module-qualified name (``feature.clear()`` of a decorated feature passes its own).
        """
        return self.remove(feature=arguments.text("feature", feature, one_line=True))

    def verify(self, *, fix: bool = False) -> VerifyReport:
        """Find footer-keyed entries whose input file was rewritten under an identical footer.

        With ``fix=True`` those entries are removed (as by ``remove``: rows, views, then
        files), so the next call recomputes them.
        """
        arguments.flag("fix", fix)
        require_unforked()
        if fix:
            self._writable("verify(fix=True)")
        self._write_rows()
        report = self._backend.verify()
        if not fix:
            return report
        removed = sum(len(self.remove(key=key)) for key in report.stale)
        return dataclasses.replace(report, removed=removed)

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

        The query sees the catalog tables (``entries``, ``counters``, ...), ``feature_views``
        and one view per feature (see ``jules_cache.query.views``). ``params`` are bound (``?``
        / ``$name``). ``symbols``, ``versions`` (code version or fingerprint), ``since`` and
        ``until`` restrict every feature view to the files that can match. Raises
        ``QueryError`` for a write statement, an SQL error (listing the available views) or a
        failed query.
        """
        table = self.sql_arrow(
            query, params, symbols=symbols, versions=versions, since=since, until=until
        )
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)  # a table always converts to a DataFrame
        return frame

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
        require_unforked()
        from jules_cache.query.sql import Filters

        if not isinstance(query, str):
            raise InvalidInput(f"query must be a str of SQL, not {type(query).__name__}")
        symbols = arguments.strings("symbols", symbols)
        versions = arguments.strings("versions", versions)
        self._write_rows()
        filters = Filters.build(symbols, versions, since, until)
        return self._backend.sql_arrow(query, params, filters)

    def refresh_views(self) -> dict[str, str]:
        """Relink every feature's folder and rebuild ``catalog.duckdb`` now.

        For a moved root (the stored views hold absolute paths) or to see the latest results
        from a plain DuckDB session at once. Returns ``{feature: view name}``.
        """
        require_unforked()
        self._writable("refresh_views")
        self._write_rows()
        return self._backend.refresh_views()

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
        require_unforked()
        self._writable("gc")
        from jules_cache.maintenance.gc import GCOptions

        options = GCOptions.build(retention_weeks, max_size, grace, dry_run, limit)
        report = self._backend.gc(options, progress)
        _log_gc(report)
        return report

    def _maybe_auto_gc(self) -> None:
        """The opportunistic mode: a bounded GC step, at most once per ``auto_gc`` seconds."""
        if self.auto_gc is None or time.monotonic() < self._next_auto_gc:
            return
        self._next_auto_gc = time.monotonic() + self.auto_gc
        try:
            report = self._backend.auto_gc(self.auto_gc_limit, self.auto_gc)
            if report is not None:
                _log_gc(report)
        except LockTimeout:
            pass  # another GC is running: nothing to do
        except JulesCacheError as exc:
            warnings.warn(
                f"automatic GC of {self._backend.location} failed: {exc}",
                CacheWriteWarning,
                stacklevel=4,
            )

    def _cap_size(self) -> None:
        """With ``max_size``: once the recorded size exceeds it, evict the least recently used
        entries down to 90% of it (GC's over-budget plan; at most ``auto_gc_limit``
        deletions).

        Runs after a miss published, never on a hit. The size check is one catalog read; a
        GC run (listing the results) happens only when the cache is over the cap. Entries not
        accessed for ages are not this step's business (``jules-cache gc``'s retention is).
        """
        from jules_cache.maintenance.gc import GCOptions

        if self.max_size is None:
            return
        try:
            self._write_rows()  # rows of results this store published: counted, not orphans
            # Not overview(): its flush would rebuild catalog.duckdb after every miss.
            recorded = Overview.from_rows(self._backend.location, *self._backend.overview_rows())
            if recorded.bytes <= self.max_size:
                return
            options = GCOptions.build(
                retention_weeks=_NO_RETENTION_WEEKS,
                max_size=max(1, int(self.max_size * _EVICT_TO)),
                limit=self.auto_gc_limit,
            )
            _log_gc(self._backend.gc(options, None))
        except LockTimeout:
            pass  # another GC is running: it, or the next publish, evicts
        except JulesCacheError as exc:
            warnings.warn(
                f"evicting down to max_size in {self._backend.location} failed: {exc}",
                CacheWriteWarning,
                stacklevel=4,
            )

    def close(self) -> None:
        """Write what this store recorded (in a process that only hit, its counts go to a small
        file the next write of the cache folds in: no DuckDB just for them). The store stays
        usable; closing again is harmless."""
        self._backend.flush(closing=True)
        self._flush_failing = False
        self._backend.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _log_gc(report: GCReport) -> None:
    """One INFO line per GC run: what it deleted, per reason, and how long it took."""
    if not log.isEnabledFor(logging.INFO):
        return
    reasons = ", ".join(f"{t.reason} {t.count}" for t in report.totals if t.count) or "none"
    log.info(
        "gc %s%s: deleted %d files and rows (%s), %d bytes, %s in %.1f s",
        report.root,
        " (dry run: would have)" if report.dry_run else "",
        report.files,
        reasons,
        report.bytes,
        report.status,
        report.duration_seconds,
    )


def _keyed_config(config: Any, ignore: frozenset[str]) -> Any:
    """The config the key is made of: without the top-level keys named by ``ignore``.

    Top-level keys only: a dotted name is a key like any other, never a path, so what is
    left out of the key is always visible at a glance in the call.
    """
    if not ignore:
        return config
    if not isinstance(config, Mapping):
        raise InvalidInput(
            f"ignore={sorted(ignore)!r} names config keys, but the config is a "
            f"{type(config).__name__}, not a dict; pass a dict config or drop ignore="
        )
    return {key: value for key, value in config.items() if key not in ignore}


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


@atexit.register
def _flush_live_stores() -> None:
    """Write pending hits of every open store at interpreter exit (never GC: only counters)."""
    for store in list(_live_stores):
        try:
            require_unforked()  # a forked child's exit must not hang on the parent's threads
            store._backend.flush(closing=True)  # no DuckDB for a store that only hit
        except ForkedProcess:
            return
        except Exception as exc:  # exiting: report, never raise
            warnings.warn(f"jules_cache: could not flush hits of {store}: {exc}", stacklevel=1)
