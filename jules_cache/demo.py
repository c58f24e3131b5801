"""The demo: compute bars for synthetic ticks through the cache twice, and show the difference."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from jules_cache._formatting import human_bytes, table
from jules_cache.store import FeatureStore
from jules_cache.synthetic import make_bars, make_ticks, symbol_names, ticks_for

DEMO_CONFIG = {"freq": "1s", "vwap_window": 20}
# A name of its own: under the function's name the demo's bars would take the view
# `make_bars` for good, the one the docs' queries mean for the user's own feature.
DEMO_FEATURE = "demo_bars"


@dataclass(frozen=True)
class DemoRow:
    symbol: str
    ticks: int
    bars: int
    first_ms: float
    first_hit: bool
    second_ms: float
    second_hit: bool


def run_demo(
    store: FeatureStore, *, symbols: int, rows: int, echo: Callable[[str], None]
) -> list[DemoRow]:
    """Fetch bars for every symbol twice; the second pass must be all hits."""
    names = symbol_names(symbols)
    echo(f"Generating {rows:,} synthetic ticks for {len(names)} symbols ...")
    ticks = make_ticks(names, rows)
    echo(f"Cache root: {store.root}\n")
    results = []
    for symbol in names:
        data = ticks_for(ticks, symbol)
        first = store.fetch(symbol, data, DEMO_CONFIG, make_bars, name=DEMO_FEATURE)
        second = store.fetch(symbol, data, DEMO_CONFIG, make_bars, name=DEMO_FEATURE)
        assert second.hit and second.value.equals(first.value), "the cache returned other data"
        results.append(
            DemoRow(
                symbol,
                data.height,
                first.value.height,
                first.seconds * 1000,
                first.hit,
                second.seconds * 1000,
                second.hit,
            )
        )
    echo(
        table(
            ["symbol", "ticks", "bars", "1st call ms", "1st", "2nd call ms", "2nd"],
            [
                [
                    r.symbol,
                    r.ticks,
                    r.bars,
                    r.first_ms,
                    _label(r.first_hit),
                    r.second_ms,
                    _label(r.second_hit),
                ]
                for r in results
            ],
        )
    )
    misses = [r.first_ms for r in results if not r.first_hit]
    hits = [r.second_ms for r in results]
    echo("")
    if misses:
        echo(
            f"median miss {statistics.median(misses):.1f} ms -> median hit "
            f"{statistics.median(hits):.1f} ms "
            f"({statistics.median(misses) / statistics.median(hits):.1f}x faster)"
        )
    else:
        echo(
            f"all first calls were hits (cached by an earlier run): median hit "
            f"{statistics.median(hits):.1f} ms"
        )
    stats = store.stats()
    echo(
        f"cache: {stats.entries} entries, {human_bytes(stats.bytes)}, {stats.hits} hits, "
        f"{stats.misses} misses, {stats.seconds_saved:.2f} s of compute saved"
    )
    return results


def _label(hit: bool) -> str:
    return "hit" if hit else "miss"
