"""Where a hit on a 10M-row Polars input spends its time, beside the physical floor.

    python benchmarks/bench_big_hit.py [--rows 10000000] [--rounds 15]

The input is ``make_ticks`` (ts, symbol as Categorical, price, size: ~280 MB) and the feature
a cheap per-symbol summary, so the hit is all keying: the exact content digest of the input
(``jules_cache.fingerprints.data``) plus reading a tiny result. Measured, interleaved, medians:

- the floor: xxh3_128 over the raw physical buffers of the four columns (what any exact content
  hash must read), per column, on one thread;
- the digest per column on one thread, and of the whole frame on one and on all threads;
- the one piece of per-row work an exact, layout-independent digest of a categorical column
  adds to the floor: the rank of each row's value among the sorted distinct values (NumPy
  ``take`` per 1M-row leaf), alone;
- the hit end to end, and recomputing the feature (no cache).

The target is a hit <= 25 ms. Writes benchmarks/results/big_hit.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_peers as peers
from common import print_table, write_json

from jules_cache import FeatureStore
from jules_cache.fingerprints import data
from jules_cache.synthetic import make_ticks, symbol_names


def rank_remap(table: Any, column: str) -> Callable[[], None]:
    """The per-row rank lookup of a dictionary column, per leaf, as the digest does it."""
    ranks = np.arange(64, dtype="<i4")[::-1].copy()
    leaves = [
        data._values_np(piece.indices)
        for pieces in data._leaves(table.column(column))
        for piece in pieces
    ]

    def run() -> None:
        for raw in leaves:
            np.take(ranks, raw)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    ticks = make_ticks(symbol_names(64), args.rows)
    table = data.as_arrow(ticks)
    physical = {name: ticks[name].to_physical().to_numpy() for name in ticks.columns}
    with tempfile.TemporaryDirectory() as tmp:
        peers.write_features(Path(tmp) / "features")
        features = peers.import_features(Path(tmp) / "features")
        store = FeatureStore(Path(tmp) / "cache")
        config = {"window": 0}
        store.get_or_compute("all", ticks, config, features.symbol_summary)
        cases: dict[str, Callable[[], Any]] = {}
        for name, buffer in physical.items():
            cases[f"floor: xxh3 of {name} ({buffer.nbytes / 1e6:.0f} MB)"] = lambda buffer=buffer: (
                xxhash.xxh3_128(buffer).digest()
            )
            one = table.select([name])
            cases[f"digest of {name}, 1 thread"] = lambda one=one: data.fingerprint_table(
                one, threads=1
            )
        cases["rank lookup of symbol alone (np.take per leaf)"] = rank_remap(table, "symbol")
        cases["as_arrow (zero-copy export)"] = lambda: data.as_arrow(ticks)
        cases["digest of the frame, 1 thread"] = lambda: data.fingerprint_table(
            data.as_arrow(ticks), threads=1
        )
        cases["digest of the frame, all threads"] = lambda: data.fingerprint_table(
            data.as_arrow(ticks)
        )
        cases["hit (get_or_compute)"] = lambda: store.get_or_compute(
            "all", ticks, config, features.symbol_summary
        )
        cases["no cache (recompute)"] = lambda: features.symbol_summary(ticks, config)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for func in cases.values():
            func()
        for _ in range(args.rounds):
            for name, func in cases.items():
                started = time.perf_counter()
                func()
                samples[name].append(time.perf_counter() - started)
        store.close()
    medians = {name: statistics.median(values) * 1000 for name, values in samples.items()}
    floor = sum(v for k, v in medians.items() if k.startswith("floor"))
    remap = medians["rank lookup of symbol alone (np.take per leaf)"]
    print_table(
        f"Hit on a {args.rows:,}-row Polars input ({ticks.estimated_size() / 1e6:.0f} MB), "
        f"medians of {args.rounds} interleaved rounds",
        ["measure", "ms"],
        [[name, round(value, 2)] for name, value in medians.items()],
    )
    print(
        f"floor (xxh3 over every buffer, 1 thread) {floor:.1f} ms + rank lookup {remap:.1f} ms "
        f"= {floor + remap:.1f} ms; digest 1 thread "
        f"{medians['digest of the frame, 1 thread']:.1f} ms; hit "
        f"{medians['hit (get_or_compute)']:.1f} ms (target <= 25 ms); load {os.getloadavg()[0]:.1f}"
    )
    write_json(
        "big_hit",
        {
            "rows": args.rows,
            "input_mb": ticks.estimated_size() / 1e6,
            "rounds": args.rounds,
            "medians_ms": medians,
            "floor_ms": floor,
            "rank_lookup_ms": remap,
            "load_average": os.getloadavg(),
        },
    )


if __name__ == "__main__":
    main()
