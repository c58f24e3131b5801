"""Realistic synthetic tick data and a standard bar pipeline, for the demo, tests and benchmarks.

Ticks follow one regular trading day (09:30–16:00 America/New_York, stored as UTC). Symbols get
Zipf-like activity (a few very liquid names, a long tail), trade sizes are Zipf-like too, and
prices follow a random walk in cents.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import numpy as np
import polars as pl

SESSION_SECONDS = int(6.5 * 3600)


def make_ticks(
    symbols: list[str], total_rows: int, *, seed: int = 7, day: date = date(2024, 3, 1)
) -> pl.DataFrame:
    """One trading day of ticks for ``symbols``: columns ts (UTC), symbol, price, size."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(symbols) + 1)  # Zipf-like: symbol i trades ~1/i as often
    counts = rng.multinomial(total_rows, weights / weights.sum())
    frames = []
    open_utc = datetime(day.year, day.month, day.day, 14, 30)  # 09:30 New York (EST)
    for symbol, count in zip(symbols, counts):
        count = max(int(count), 1)
        offsets = np.sort(rng.integers(0, SESSION_SECONDS * 1_000_000, count))
        start = 20 + 480 * rng.random()
        steps = rng.choice([-1, 0, 0, 0, 1], size=count) * 0.01
        prices = np.round(np.maximum(start + np.cumsum(steps), 0.01), 2)
        sizes = np.minimum(rng.zipf(1.8, count), 100_000).astype(np.int64)
        frames.append(
            pl.DataFrame(
                {
                    "ts": pl.Series(offsets, dtype=pl.Int64).cast(pl.Duration("us")) + open_utc,
                    "symbol": [symbol] * count,
                    "price": prices,
                    "size": sizes,
                }
            )
        )
    ticks = pl.concat(frames).with_columns(
        pl.col("ts").dt.replace_time_zone("UTC"), pl.col("symbol").cast(pl.Categorical)
    )
    return ticks.sort("ts", "symbol")


def make_bars(ticks: pl.LazyFrame, config: dict[str, Any]) -> pl.LazyFrame:
    """Time bars with OHLC, volume, VWAP, rolling VWAP, returns and realised volatility."""
    window = int(config.get("vwap_window", 20))
    bars = (
        ticks.sort("ts")
        .group_by_dynamic("ts", every=config.get("freq", "1m"))
        .agg(
            pl.col("price").first().alias("open"),
            pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"),
            pl.col("price").last().alias("close"),
            pl.col("size").sum().alias("volume"),
            ((pl.col("price") * pl.col("size")).sum() / pl.col("size").sum()).alias("vwap"),
            pl.len().alias("trades"),
        )
    )
    notional = (pl.col("vwap") * pl.col("volume")).rolling_sum(window, min_samples=1)
    log_return = (pl.col("close") / pl.col("close").shift(1)).log()
    return bars.with_columns(
        (notional / pl.col("volume").rolling_sum(window, min_samples=1)).alias("rolling_vwap"),
        pl.col("close").pct_change().alias("ret"),
        log_return.rolling_std(window, min_samples=2).alias("realised_vol"),
    )


def symbol_names(count: int) -> list[str]:
    """Plausible ticker names: a few real-looking ones, then generated ones."""
    base = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "BRK/B", "JPM", "XOM"]
    names = base[:count]
    names += [f"SYM{i:04d}" for i in range(len(names), count)]
    return names


def ticks_for(ticks: pl.DataFrame, symbol: str) -> pl.DataFrame:
    """The ticks of one symbol."""
    return ticks.filter(pl.col("symbol") == symbol)
