"""Write, describe and read result Parquet files.

A result is written to a unique temp file (a LazyFrame is sunk with Polars' streaming engine,
so it need not fit in memory), fsynced, and only then renamed into ``objects/`` by the store.
Each file carries its manifest entry in the Parquet key-value metadata (``jules_cache.entry``)
so a lost manifest can be rebuilt from the files alone.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

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
) -> None:
    """Write ``result`` to ``path`` with the entry metadata, then fsync it."""
    kv = {METADATA_KEY: json.dumps(metadata, ensure_ascii=False, default=str)}
    if isinstance(result, pl.LazyFrame):
        result.sink_parquet(path, compression=compression, metadata=kv, engine="streaming")
    else:
        result.write_parquet(path, compression=compression, metadata=kv)
    fsync_file(path)


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


def describe_result(path: Path, time_column: str | None) -> ResultInfo:
    """Rows, size, schema and time range of a written file (reads only the time column)."""
    scan = pl.scan_parquet(path)
    schema = scan.collect_schema()
    column = time_column if time_column is not None else guess_time_column(schema)
    if column is not None and column not in schema:
        column = None
    aggregates = [pl.len().alias("rows")]
    if column is not None:
        aggregates += [pl.col(column).min().alias("lo"), pl.col(column).max().alias("hi")]
    summary = scan.select(aggregates).collect().row(0, named=True)
    return ResultInfo(
        rows=int(summary["rows"]),
        bytes=path.stat().st_size,
        schema_json=json.dumps({name: str(dtype) for name, dtype in schema.items()}),
        time_column=column,
        min_time=_as_utc_naive(summary.get("lo")),
        max_time=_as_utc_naive(summary.get("hi")),
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


def read_result(path: Path) -> pl.DataFrame:
    """Read a cached result whole. Raises OSError / polars errors if missing or unreadable."""
    return pl.read_parquet(path)


def scan_result(path: Path) -> pl.LazyFrame:
    """A LazyFrame over a cached result; reading the schema checks the footer is intact."""
    scan = pl.scan_parquet(path)
    scan.collect_schema()
    return scan
