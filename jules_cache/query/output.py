"""Render an SQL result for ``jules-cache sql``: a table, CSV, one JSON document, or Parquet.

A file given with ``--output`` is written to a temp name in the same folder and renamed into
place, so a failed or interrupted write never leaves a half-written file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from jules_cache._atomic_write import write_atomically
from jules_cache._formatting import table
from jules_cache.errors import InvalidInput


def render_text(result: pa.Table, output_format: str) -> str:
    """The result as text in ``table``, ``csv`` or ``json`` format."""
    if output_format == "table":
        rows = [list(row.values()) for row in result.to_pylist()]
        return table(result.column_names, rows)
    if output_format == "csv":
        return pl.from_arrow(result).write_csv()  # type: ignore[union-attr]
    if output_format == "json":
        return json.dumps(result.to_pylist(), indent=2, default=str) + "\n"
    raise InvalidInput(f"unknown output format {output_format!r}")


def render_result(
    result: pa.Table, output_format: str, output: Path | None, echo: Callable[..., None]
) -> None:
    """Print ``result`` (or write it to ``output``), with the row count on stderr."""
    if output is None:
        text = render_text(result, output_format)
        echo(text, nl=output_format == "table")
    else:
        write_atomically(output, lambda temp: _write(result, output_format, temp))
    echo(f"{result.num_rows} row{'' if result.num_rows == 1 else 's'}", err=True)


def _write(result: pa.Table, output_format: str, path: Path) -> None:
    if output_format == "parquet":
        pq.write_table(result, path)
    else:
        path.write_text(render_text(result, output_format), encoding="utf-8")
