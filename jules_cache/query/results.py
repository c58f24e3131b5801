"""Make a query's Arrow result one that Polars takes, exactly, or say which column cannot be.

DuckDB hands results over as Arrow; ``store.sql`` turns them into a Polars frame. Two DuckDB
types arrive in a form Polars refuses or that surprises a user:

- ``INTERVAL`` arrives as Arrow ``month_day_nano_interval``, which Polars cannot import. A
  difference of timestamps (``max(ts) - min(ts)``) is an interval of days and microseconds: it
  becomes a Polars ``Duration`` of the same length. An interval with months has no fixed length
  (a month is 28 to 31 days), so it is refused with a message saying to cast it.
- ``HUGEINT`` (what ``sum()`` of an integer column returns) arrives as ``decimal(38, 0)``: it
  becomes ``Int64`` when every value fits, and stays an exact ``Decimal(38, 0)`` otherwise
  (``UHUGEINT``: ``UInt64``). An explicit ``DECIMAL`` stays a decimal.

Anything else Polars cannot import (a ``UNION``, an interval nested in a list or struct) is a
``QueryError`` naming the column and its type, found from the schema before any data is
converted, so ``store.sql`` never fails with a foreign error on an ordinary query.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from jules_cache.errors import QueryError

_US_PER_DAY = 86_400_000_000
_INTERVAL = np.dtype([("months", "<i4"), ("days", "<i4"), ("nanos", "<i8")])
_WHOLE = {"HUGEINT": pa.int64(), "UHUGEINT": pa.uint64()}
_ACCEPTED: set[pa.Schema] = set()  # schemas Polars was seen to import (results repeat)


def polars_ready(table: pa.Table, duckdb_types: Sequence[str]) -> pa.Table:
    """Return ``table`` with every column in a type Polars imports (see the module).

    ``duckdb_types`` are the result's DuckDB type names, one per column. Raises
    ``QueryError`` for a column that has no exact Polars type.
    """
    columns = list(table.columns)
    changed = False
    for index, (field, kind) in enumerate(zip(table.schema, duckdb_types, strict=True)):
        column = columns[index]
        if pa.types.is_interval(field.type):
            columns[index] = _duration(column, field.name)
            changed = True
        elif kind in _WHOLE and pa.types.is_decimal(field.type):
            try:
                columns[index] = pc.cast(column, _WHOLE[kind])  # safe: raises on overflow
                changed = True
            except pa.ArrowInvalid:
                pass  # beyond 64 bits: the exact decimal
    if changed:
        table = pa.table(columns, names=table.column_names)
    _require_importable(table.schema, duckdb_types)
    return table


def _duration(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    """A Duration column of the same lengths as an interval column of days and time."""
    chunks = []
    for chunk in column.chunks:
        values = np.frombuffer(chunk.buffers()[1], _INTERVAL, len(chunk), chunk.offset * 16)
        valid = ~np.asarray(chunk.is_null(), dtype=bool)
        if np.any(values["months"][valid] != 0):
            raise QueryError(
                f"column {name!r} is an INTERVAL with months, which have no fixed length "
                "(28 to 31 days): CAST it, e.g. to_days(...) or epoch(...) for seconds, or "
                "date_diff('day', a, b) instead of a - b"
            )
        micros = values["days"].astype(np.int64) * _US_PER_DAY + values["nanos"] // 1000
        mask = pa.array(~valid) if chunk.null_count else None
        chunks.append(pa.array(micros, pa.duration("us"), mask=mask))
    return pa.chunked_array(chunks, pa.duration("us"))


def _require_importable(schema: pa.Schema, duckdb_types: Sequence[str]) -> None:
    if schema in _ACCEPTED:
        return
    for field, kind in zip(schema, duckdb_types, strict=True):
        # A nested interval makes Polars panic rather than raise: name it before trying.
        cause = "it holds an INTERVAL or a UNION" if _unimportable(field.type) else None
        if cause is None:
            try:
                pl.from_arrow(pa.schema([field]).empty_table())
            except (Exception, pl.exceptions.PanicException) as exc:  # several kinds; none
                cause = type(exc).__name__  # may escape
        if cause is not None:
            quoted = '"' + field.name.replace('"', '""') + '"'
            raise QueryError(
                f"column {field.name!r} has DuckDB type {kind}, which has no Polars type "
                f"({cause}): CAST it in the query, e.g. {quoted}::VARCHAR, or select its parts"
            )
    _ACCEPTED.add(schema)


def _unimportable(kind: pa.DataType) -> bool:
    """Whether an interval or a union is in ``kind``, at any depth."""
    if pa.types.is_interval(kind) or pa.types.is_union(kind):
        return True
    if isinstance(kind, pa.ExtensionType):
        return _unimportable(kind.storage_type)
    return any(_unimportable(kind.field(i).type) for i in range(kind.num_fields))
