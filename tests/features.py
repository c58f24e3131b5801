"""Compute functions used by the tests. In a module of its own so spawned processes import it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import polars as pl


def bar_count(ticks: pl.LazyFrame, config: dict[str, Any]) -> pl.LazyFrame:
    """Ticks per time bucket: cheap, deterministic, a LazyFrame result."""
    return (
        ticks.sort("ts")
        .group_by_dynamic("ts", every=config.get("freq", "1m"))
        .agg(pl.len().alias("n"), pl.col("price").mean().alias("mean_price"))
    )


def logged_feature(ticks: pl.LazyFrame, config: dict[str, Any]) -> pl.DataFrame:
    """Record each real computation as a marker file in config['log_dir'], then compute."""
    log_dir = Path(config["log_dir"])
    marker = f"{config['tag']}.{os.getpid()}.{uuid.uuid4().hex}"
    (log_dir / marker).write_text("computed")
    return ticks.select(pl.col("price").sum().alias("total"), pl.len().alias("rows")).collect()


def flip_bit(path: Path, column: int = 0, mask: int = 0x10) -> None:
    """Flip one bit inside a column's first data page (the file keeps its size)."""
    import pyarrow.parquet as pq

    chunk = pq.read_metadata(path).row_group(0).column(column)
    offset = chunk.data_page_offset + chunk.total_compressed_size // 2
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def computations(log_dir: Path, tag: str) -> int:
    """How many times ``logged_feature`` really ran for ``tag``."""
    return len(list(log_dir.glob(f"{tag}.*")))


PRICE_SCALE = 2  # read at call time: a client that changes it runs other code than its workers


def scaled_price(ticks: pl.LazyFrame, config: dict[str, Any]) -> pl.LazyFrame:
    """Prices times the module constant PRICE_SCALE (tests/api/test_fanout.py changes it)."""
    return ticks.select("ts", (pl.col("price") * PRICE_SCALE).alias("scaled"))


def fails_on_negative_price(ticks: pl.LazyFrame, config: dict[str, Any]) -> pl.DataFrame:
    """Bar counts, but a frame with a negative price is refused (a job that fails for real)."""
    frame = ticks.collect()
    low = frame["price"].min()
    if low is not None and low < 0:
        raise ValueError(f"negative price {low} in the ticks")
    return bar_count(frame.lazy(), config).collect()
