"""Typed usage of the public API, checked by ``mypy --strict`` in tests/api/test_public_api.py.

Not a test module (pytest does not collect it): every line here must type-check as written.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from jules_cache import CacheResult, FeatureStore


def make_bars(ticks: pl.LazyFrame, config: dict[str, Any]) -> pl.LazyFrame:
    return ticks.select(pl.len().alias("n"))


def usage(store: FeatureStore, ticks: pl.DataFrame) -> int:
    eager = store.get_or_compute("AAPL", ticks, {"freq": "1m"}, make_bars)
    rows: int = eager.height
    lazy = store.get_or_compute("AAPL", ticks, {"freq": "1m"}, make_bars, lazy=True)
    collected: pl.DataFrame = lazy.collect()

    result: CacheResult[pl.DataFrame] = store.fetch("AAPL", ticks, {}, make_bars)
    rows += result.value.height
    lazy_result = store.fetch("AAPL", ticks, {}, make_bars, lazy=True)
    schema = lazy_result.value.collect_schema()

    @store.feature(name="bars", version="1")
    def bars(ticks: pl.LazyFrame, config: dict[str, Any]) -> pl.LazyFrame:
        return ticks.select(pl.len().alias("n"))

    rows += bars("AAPL", ticks, {}).height
    rows += bars("AAPL", ticks, {}, lazy=True).collect().height
    rows += bars.fetch("AAPL", ticks, {}).value.height
    hit: bool = bars.fetch("AAPL", ticks, {}, lazy=True).hit

    @store.feature
    def plain(ticks: pl.LazyFrame, config: dict[str, Any]) -> pl.LazyFrame:
        return ticks

    rows += plain("AAPL", ticks, {}).width
    return rows + collected.height + len(schema) + int(hit)
