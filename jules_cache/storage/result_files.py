"""Write, describe and read result Parquet files.

A result is written to a unique temp file (a LazyFrame is streamed batch by batch, so it need
not fit in memory), fsynced, and only then renamed into ``objects/`` by the store. Each file
carries its manifest entry in the Parquet key-value metadata (``jules_cache.entry``) so a lost
manifest can be rebuilt from the files alone.

Files are written by pyarrow with a CRC32 in every data page header and read back with the
checksums verified: Polars neither writes nor checks page checksums, and a flipped bit in an
lz4 page decodes without error to WRONG values (measured: 34 of 40 single-bit flips). A read
that fails verification raises, and the store quarantines the file and recomputes it.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

# The reader under ``pyarrow.parquet.ParquetFile``, imported alone: ``pyarrow.parquet`` also
# imports ``pyarrow.fs`` and with it ``ssl`` (~20 ms), which a process serving hits never needs.
# Writers, which do, import ``pyarrow.parquet`` when they first write (``_pq``).
from pyarrow._parquet import FileMetaData, ParquetReader

from jules_cache.errors import StoreError
from jules_cache.fingerprints.data import holds_python_objects

if TYPE_CHECKING:
    import pyarrow.parquet as pq

METADATA_KEY = "jules_cache.entry"
TIME_COLUMN_NAMES = ("ts", "timestamp", "time", "datetime", "bar_time", "date")


@dataclass(frozen=True)
class ResultInfo:
    """What the manifest records about a written result file."""

    rows: int
    bytes: int
    schema_json: str
    time_column: str | None
    min_time: datetime | None
    max_time: datetime | None


def write_result(
    result: pl.DataFrame | pl.LazyFrame,
    path: Path,
    metadata: dict[str, Any],
    compression: str,
    on_partial: Callable[[], None] | None = None,
) -> pl.DataFrame | None:
    """Write ``result`` to ``path`` with the entry metadata and page checksums, then fsync it.

    Returns the frame a hit will read: the Arrow table the writer wrote, converted as
    ``read_result`` converts what it reads (every dtype was checked to round-trip by
    ``unstorable_columns``, and Parquet keeps values bit for bit), so a miss need not read
    its file back. A LazyFrame's batches are held until a row group is full anyway, so a
    result of one row group is in hand whole too; a larger one (streamed in several row
    groups, never whole) returns None.

    Raises ``StoreError`` before anything is written if a column would not read back with
    the same dtype (see ``unstorable_columns``), and for a write Parquet refuses.
    ``on_partial`` is called once data is written but before the footer (a fault-injection
    point for the crash tests).
    """
    schema = result.schema if isinstance(result, pl.DataFrame) else result.collect_schema()
    problems = unstorable_columns(schema)
    if problems:
        shown = "; ".join(f"column {name!r} ({why})" for name, why in problems.items())
        raise StoreError(
            f"the result cannot be stored: {shown}. Cast such columns to a type Parquet "
            "holds exactly (e.g. Int128 to Int64 or Decimal, Object to a plain type) to cache it"
        )
    kv = {METADATA_KEY: json.dumps(metadata, ensure_ascii=False, default=str)}
    codec = "none" if compression == "uncompressed" else compression
    # Polars gathers a row group's rows itself: a small result comes as one batch, not as a
    # few tiny ones (each a hop from Polars' thread and a chunk in every column after).
    frames = (
        [result]
        if isinstance(result, pl.DataFrame)
        else result.collect_batches(chunk_size=_ROW_GROUP_ROWS)
    )
    try:
        # One descriptor for the write and the fsync: handing the writer a path costs a
        # filesystem lookup (~0.14 ms of a ~0.75 ms small write), and the fsync a reopen.
        with pa.OSFile(str(path), "wb") as sink:
            written = _write_frames(frames, result, sink, kv, codec, on_partial)
            os.fsync(sink.fileno())  # complete on disk before any rename can publish it
    except pa.ArrowException as exc:
        if isinstance(exc, OSError):  # disk full, permissions: already a store failure
            raise
        raise StoreError(f"Parquet refused the result: {exc}") from exc
    return _as_frame(written[0]) if len(written) == 1 else None


# dtype -> why it does not round-trip (None: it does). Dtypes are few per process.
_ROUND_TRIPS: dict[pl.DataType, str | None] = {}


def unstorable_columns(schema: pl.Schema) -> dict[str, str]:
    """Return ``{column: why}`` for the columns a result file would not give back unchanged.

    The rule is the real round trip, not a list of bad types: an empty column of each dtype
    is written and read back in memory by the same code as a result file, and must come back
    with the same dtype (``pl.Object`` comes back as Binary, ``Int128`` does not export to
    Arrow). Values never change a dtype, so the schema decides; each dtype is tried once.
    """
    problems = {}
    for name, dtype in schema.items():
        if dtype not in _ROUND_TRIPS:
            if len(_ROUND_TRIPS) > 1024:
                _ROUND_TRIPS.clear()
            _ROUND_TRIPS[dtype] = _round_trip_problem(dtype)
        why = _ROUND_TRIPS[dtype]
        if why is not None:
            problems[name] = why
    return problems


def _round_trip_problem(dtype: pl.DataType) -> str | None:
    if holds_python_objects(dtype, pl):
        return f"{dtype} holds Python objects, which Parquet cannot store"
    buffer = io.BytesIO()
    try:
        empty = pl.DataFrame(schema={"c": dtype})
        _write_frames([empty], empty, buffer, {}, "none", None)
        back = read_result(io.BytesIO(buffer.getvalue())).schema["c"]
    except (pl.exceptions.PolarsError, pa.ArrowException, ValueError, TypeError) as exc:
        return f"{dtype} cannot be written as Parquet: {type(exc).__name__}: {exc}"
    except pl.exceptions.PanicException as exc:  # a Rust panic: not an Exception subclass
        return f"{dtype} cannot be written as Parquet: {exc}"
    if back != dtype:
        return f"{dtype} would read back as {back}"
    return None


def _with_metadata(table: pa.Table, kv: dict[str, str]) -> pa.Table:
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **kv})


def _write_frames(
    frames: Iterable[pl.DataFrame],
    result: pl.DataFrame | pl.LazyFrame,
    sink: pa.NativeFile | io.BytesIO,
    kv: dict[str, str],
    codec: str,
    on_partial: Callable[[], None] | None,
) -> list[pa.Table]:
    """Stream frames (a LazyFrame's batches) into one file, in row groups of at least
    ``_ROW_GROUP_ROWS`` rows: a result larger than memory is never collected whole.

    Returns the table written when there was one (one row group), else an empty list."""
    writer: pq.ParquetWriter | None = None
    tables: list[pa.Table] = []
    pending: list[pl.DataFrame] = []
    pending_rows = 0
    try:
        for batch in frames:
            pending.append(batch)
            pending_rows += batch.height
            if pending_rows >= _ROW_GROUP_ROWS:
                writer = _write_pending(writer, pending, sink, kv, codec, tables)
                pending, pending_rows = [], 0
        if pending or writer is None:
            if not pending:
                pending = [pl.DataFrame(schema=result.collect_schema())]
            writer = _write_pending(writer, pending, sink, kv, codec, tables)
        if on_partial is not None:
            on_partial()
    finally:
        if writer is not None:
            writer.close()
    return tables if len(tables) == 1 else []


def _write_pending(
    writer: pq.ParquetWriter | None,
    frames: list[pl.DataFrame],
    sink: pa.NativeFile | io.BytesIO,
    kv: dict[str, str],
    codec: str,
    tables: list[pa.Table],
) -> pq.ParquetWriter:
    table = _with_metadata(pl.concat(frames, rechunk=False).to_arrow(), kv)
    if writer is None:
        writer = _pq().ParquetWriter(
            sink,
            table.schema,
            compression=codec,
            write_page_checksum=True,
            use_dictionary=_dictionary_columns(table.schema),
        )
    if not table.schema.equals(writer.schema):  # a later batch's types: the file's
        table = table.cast(writer.schema)
    writer.write_table(table)
    if len(tables) < 2:  # only a single-table write is returned: keep no more than that
        tables.append(table)
    return writer


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Dictionary-encode only text-like columns: trying it on float columns (which rarely
    repeat) made pyarrow's writes 4-5x slower than Polars' (measured on 210k x 7 results)."""
    text_like = (
        pa.types.is_string,
        pa.types.is_large_string,
        pa.types.is_dictionary,
        pa.types.is_binary,
        pa.types.is_large_binary,
    )
    return [field.name for field in schema if any(test(field.type) for test in text_like)]


_ROW_GROUP_ROWS = 1_000_000


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: some filesystems refuse)."""
    with contextlib.suppress(OSError):
        fsync_file(path)


def entry_row(
    identity: dict[str, Any],
    relative_path: str,
    info: ResultInfo,
    *,
    compute_seconds: float,
    created_at: datetime,
    last_accessed_at: datetime,
) -> dict[str, Any]:
    """The manifest row of a result file: its identity (the file's own metadata, see
    ``METADATA_KEY``) plus what ``describe_result`` found. Used by publish and by rebuild."""
    return {
        "key": identity["key"],
        "feature": identity["feature"],
        "symbol": identity["symbol"],
        "path": relative_path,
        "key_schema": int(identity["key_schema"]),
        "data_fingerprint": identity["data_fingerprint"],
        "data_method": identity["data_method"],
        "config_fingerprint": identity["config_fingerprint"],
        "config_json": identity["config_json"],
        "code_fingerprint": identity["code_fingerprint"],
        "code_version": identity.get("code_version"),
        "code_functions": json.dumps(identity.get("code_functions") or {}, sort_keys=True),
        "library_versions": json.dumps(identity.get("library_versions") or {}),
        "result_schema": info.schema_json,
        "rows": info.rows,
        "bytes": info.bytes,
        "time_column": info.time_column,
        "min_time": info.min_time,
        "max_time": info.max_time,
        "compute_seconds": compute_seconds,
        "created_at": created_at,
        "last_accessed_at": last_accessed_at,
        "expires_at": _utc(identity.get("expires_at")),
    }


def _utc(epoch: Any) -> datetime | None:
    """Epoch seconds as the naive UTC time the catalogs store (None stays None)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(float(epoch), UTC).replace(tzinfo=None)


def describe_result(path: Path, time_column: str | None) -> ResultInfo:
    """Rows, size, schema and time range of a written file (reads only the time column)."""
    return _describe(pl.scan_parquet(path), path, time_column)


def describe_frame(frame: pl.DataFrame, path: Path, time_column: str | None) -> ResultInfo:
    """``describe_result`` of the file at ``path`` from a frame equal to its content (no read):
    the frame ``write_result`` or ``read_result`` returned for it. Eager: a lazy query over a
    small frame costs ~0.7 ms of planning, the three aggregates here ~0.05 ms."""
    column = _time_column(frame.schema, time_column)
    low = high = None
    if column is not None:
        values = frame.get_column(column)
        low, high = values.min(), values.max()
    return _info(frame.height, path, frame.schema, column, low, high)


def _describe(scan: pl.LazyFrame, path: Path, time_column: str | None) -> ResultInfo:
    schema = scan.collect_schema()
    column = _time_column(schema, time_column)
    aggregates = [pl.len().alias("rows")]
    if column is not None:
        aggregates += [pl.col(column).min().alias("lo"), pl.col(column).max().alias("hi")]
    summary = scan.select(aggregates).collect().row(0, named=True)
    return _info(summary["rows"], path, schema, column, summary.get("lo"), summary.get("hi"))


def _time_column(schema: pl.Schema, time_column: str | None) -> str | None:
    column = time_column if time_column is not None else guess_time_column(schema)
    return column if column is not None and column in schema else None


def _info(
    rows: int, path: Path, schema: pl.Schema, column: str | None, low: Any, high: Any
) -> ResultInfo:
    return ResultInfo(
        rows=int(rows),
        bytes=path.stat().st_size,
        schema_json=json.dumps({name: str(dtype) for name, dtype in schema.items()}),
        time_column=column,
        min_time=_as_utc_naive(low),
        max_time=_as_utc_naive(high),
    )


def guess_time_column(schema: pl.Schema) -> str | None:
    """The column that orders the rows in time: a well-known name first, else the first Datetime."""
    temporal = [name for name, dtype in schema.items() if isinstance(dtype, (pl.Datetime, pl.Date))]
    for name in TIME_COLUMN_NAMES:
        if name in temporal:
            return name
    datetimes = [name for name in temporal if isinstance(schema[name], pl.Datetime)]
    return datetimes[0] if datetimes else (temporal[0] if temporal else None)


def _as_utc_naive(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    return None


# Exceptions a damaged result file raises when read: a bad footer or magic (ArrowInvalid, a
# ValueError), a failed page checksum or decompression (OSError without errno), Polars errors.
READ_ERRORS = (OSError, ValueError, pa.ArrowException, pl.exceptions.PolarsError)


class WrongKey(ValueError):
    """A result file carries another key in its metadata than the one its name says: a file
    copied or renamed over another key's. Treated like damage: quarantined and recomputed."""


class Undecodable(ValueError):
    """A result file whose pages pass their checksums but that Polars cannot decode: a page
    header is under no checksum, and a garbled one can pass pyarrow's read yet make Polars
    panic or fail. Treated like damage: quarantined and recomputed."""


class Expired(ValueError):
    """A result file read past the expiry its entry was written with (``expire=``): a miss.
    The locked re-read removes it (not as damage) and the miss replaces it."""


def _pq() -> ModuleType:
    """``pyarrow.parquet``, imported when first needed (writing): see the imports above."""
    return importlib.import_module("pyarrow.parquet")


def _open_verified(source: Any) -> ParquetReader:
    """A reader of ``source`` that verifies every page checksum it reads, set up as
    ``pyarrow.parquet.ParquetFile(source, page_checksum_verification=True)`` sets it up."""
    reader = ParquetReader()
    reader.open(
        source, pre_buffer=True, page_checksum_verification=True, arrow_extensions_enabled=True
    )
    return reader


def require_key(
    metadata: FileMetaData, path: Path | io.BytesIO, key: str | None, *, fresh: bool = False
) -> float | None:
    """Raise ``WrongKey`` unless the file's own entry metadata names ``key`` (None: no check);
    with ``fresh``, raise ``Expired`` if its expiry has passed. Return the expiry (epoch
    seconds, None: never)."""
    raw = (metadata.metadata or {}).get(METADATA_KEY.encode())
    try:
        identity = json.loads(raw) if raw is not None else {}
        found, expires_at = identity.get("key"), identity.get("expires_at")
        expires_at = None if expires_at is None else float(expires_at)
    except (ValueError, TypeError, AttributeError):
        found, expires_at = None, None
    if key is not None and found != key:
        raise WrongKey(f"{path} holds the result of key {found!r}, not {key!r}")
    if fresh:
        require_fresh(expires_at, path)
    return expires_at


def require_fresh(expires_at: float | None, path: Path | io.BytesIO) -> None:
    """Raise ``Expired`` if ``expires_at`` (epoch seconds; None: never) has passed."""
    if expires_at is not None and time.time() >= expires_at:
        raise Expired(f"{path} expired at {_utc(expires_at)} UTC")


def read_result(
    path: Path | io.BytesIO, key: str | None = None, *, fresh: bool = True
) -> pl.DataFrame:
    """Read a cached result whole, verifying every page checksum and, given ``key``, that
    the file is that key's (its footer metadata is read anyway). A file past its expiry is
    refused (``Expired``) unless ``fresh=False`` (integrity checks, a miss's own read-back).

    Raises FileNotFoundError if missing, one of ``READ_ERRORS`` if damaged, another key's or
    expired.
    """
    # One open file for the key check and the data. Pre-buffering fetches each row group's
    # column chunks in parallel (measured 0.86-0.93x the time without, on a 1M-row result).
    # Not pq.read_table: it imports pyarrow.dataset, which imports pandas (~300 ms) on a
    # process's first hit.
    source = path if isinstance(path, io.BytesIO) else pa.OSFile(str(path))
    try:
        reader = _open_verified(source)
        require_key(reader.metadata, path, key, fresh=fresh)
        table = reader.read_all(use_threads=True)
    finally:
        if not isinstance(source, io.BytesIO):
            source.close()
    try:
        return _as_frame(table)
    except pl.exceptions.PanicException as exc:  # a Rust panic is no Exception: translate it
        raise Undecodable(f"{path}: Polars cannot convert its pages ({exc})") from exc


def _as_frame(table: pa.Table) -> pl.DataFrame:
    """The one conversion of result tables to Polars (hits, and misses via ``write_result``)."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def read_every_page(path: Path, key: str | None = None) -> int:
    """Read every page of ``path`` with checksums verified, in bounded memory; return the rows.

    The whole-file integrity test (``check --deep``, a lazy hit's first scan): it decodes
    every page but keeps none of them.

    Raises FileNotFoundError if missing, one of ``READ_ERRORS`` if damaged or another key's.
    """
    return _read_pages(path, key)[0]


def _read_pages(path: Path, key: str | None) -> tuple[int, float | None]:
    """``read_every_page``, also returning the file's expiry (epoch seconds; None: never).

    pyarrow checks every page's checksum; then Polars, the reader of every scan after, decodes
    every value once (hashed, streaming: bounded memory), so that a garbled page header, which
    no checksum covers, fails here as damage and not in a caller's ``collect``.
    """
    rows = 0
    with _pq().ParquetFile(path, page_checksum_verification=True) as parquet:
        expires_at = require_key(parquet.metadata, path, key)
        for batch in parquet.iter_batches(batch_size=262_144):
            rows += batch.num_rows
    try:
        pl.scan_parquet(path).select(pl.all().hash().sum()).collect(engine="streaming")
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException) as exc:
        raise Undecodable(f"{path}: Polars cannot decode its pages ({exc})") from exc
    return rows, expires_at


# Files verified by this process, with their expiry (epoch seconds; None: never).
_verified: dict[tuple[str, str | None, int, int, int], float | None] = {}
_VERIFIED_MAX = 4096


def scan_result(path: Path, key: str | None = None, *, fresh: bool = True) -> pl.LazyFrame:
    """A LazyFrame over a cached result, whose pages (and key) this process has verified once.

    Polars scans do not check page checksums, so the first scan of a file (identified by
    path, inode, size and mtime) in a process reads it through pyarrow first. Its expiry is
    remembered with it: every scan refuses an expired file (``Expired``) without a read,
    unless ``fresh=False`` (a miss opening what it just published).
    """
    stat = os.stat(path)
    identity = (str(path), key, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if identity not in _verified:
        expires_at = _read_pages(path, key)[1]
        if len(_verified) >= _VERIFIED_MAX:
            _verified.clear()
        _verified[identity] = expires_at
    if fresh:
        require_fresh(_verified[identity], path)
    scan = pl.scan_parquet(path)
    scan.collect_schema()
    return scan
