"""What the joblib / diskcache habits cost: expire= on the hit path, contains(), max_size=.

    python benchmarks/bench_parity.py [--rounds 31]

Measured on a 200k-tick input and a small bars result, medians after a warm-up:

- a hit without expire=, and a hit of an entry written with expire= (the footer, read anyway
  for the key check, also carries the expiry: the goal is no measurable difference);
- contains() with a frame input (hashes the frame) and with a Parquet path input (reuses the
  stat-memoised digest), beside fetch() hits of the same;
- a miss on a store without max_size, and on a store held at a max_size of 20 results (each
  miss checks the size; a GC run evicts down to 90% of the cap every ~2 misses): median and
  mean.

Writes benchmarks/results/parity.json.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, summary_ms, timed, write_json

from jules_cache import FeatureStore
from jules_cache.synthetic import make_ticks, ticks_for


def bars(ticks: pl.LazyFrame, config: dict[str, Any]) -> pl.LazyFrame:
    return (
        ticks.sort("ts")
        .group_by_dynamic("ts", every=config["freq"])
        .agg(pl.col("price").last().alias("close"), pl.col("size").sum().alias("volume"))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args()
    ticks = ticks_for(make_ticks(["AAPL"], 200_000, seed=5), "AAPL")
    rows: list[list[Any]] = []
    document: dict[str, Any] = {"rounds": args.rounds, "ticks": ticks.height}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ticks.parquet"
        ticks.write_parquet(path)
        with FeatureStore(Path(folder) / "cache", hit_flush_seconds=60) as store:
            plain = {"freq": "1m"}
            ttl = {"freq": "5m"}
            store.fetch("AAPL", ticks, plain, bars)
            store.fetch("AAPL", ticks, ttl, bars, expire="7d")
            store.fetch("AAPL", path, plain, bars)
            cases = {
                "hit, no expire": lambda: store.fetch("AAPL", ticks, plain, bars),
                "hit, written with expire=7d": lambda: store.fetch("AAPL", ticks, ttl, bars),
                "contains, frame input": lambda: store.contains("AAPL", ticks, plain, bars),
                "hit, Parquet path input": lambda: store.fetch("AAPL", path, plain, bars),
                "contains, Parquet path input": lambda: store.contains("AAPL", path, plain, bars),
            }
            for name, call in cases.items():
                samples = timed(call, args.rounds, warmup=3)
                document[name] = summary_ms(samples)
                rows.append([name, document[name]["p50_ms"], ""])
        counter = itertools.count()
        small = ticks.head(20_000)

        def miss(store: FeatureStore) -> None:
            store.fetch("AAPL", small, {"freq": "1m", "n": next(counter)}, bars)

        with FeatureStore(Path(folder) / "probe") as probe:  # the size of one result
            one = probe.fetch("AAPL", small, {"freq": "1m", "n": -1}, bars).path
            size = Path(one).stat().st_size
        cases_miss = {"miss, no max_size": None, "miss at max_size (20 results)": size * 20}
        for label, cap in cases_miss.items():
            with FeatureStore(Path(folder) / f"miss-{cap}", max_size=cap) as capped:
                samples = timed(lambda capped=capped: miss(capped), args.rounds, warmup=5)
                mean = sum(samples) / len(samples) * 1000  # evictions are every few misses
                document[label] = summary_ms(samples) | {
                    "mean_ms": mean,
                    "entries_after": len(capped.entries()),
                }
                rows.append([label, document[label]["p50_ms"], mean])
    print_table("parity features", ["case", "p50 ms", "mean ms"], rows)
    write_json("parity", document)


if __name__ == "__main__":
    main()
