"""Where a hit on a 10M-row Polars input spends its time, beside the physical floor.

    python benchmarks/bench_big_hit.py [--rows 10000000] [--rounds 11]

The input is ``make_ticks`` (ts, symbol, price, size) twice: with ``symbol`` Categorical and
with ``symbol`` a String column (as most Parquet tick files hold it; Polars keeps it as 16-byte
views). The feature is a cheap per-symbol summary, so a hit is all keying: the exact content
digest of the input (``jules_cache.fingerprints.data``) plus reading a tiny result. Measured,
interleaved, medians, per input:

- the floor: xxh3_128 over the frame's Arrow buffers, exactly as exported (what any exact content
  hash must read), on one thread and on all threads (16 MB pieces in a thread pool);
- the digest per column on one thread, and of the whole frame on all threads;
- the stages of a hit: the request (data + config + code fingerprints, key), and the hit end to
  end; and recomputing the feature (no cache).

Goals: for the String input, a hit <= 0.4x recomputing and <= 1.5x the all-threads
floor; for the Categorical input <= 1.2x that floor. Writes benchmarks/results/big_hit.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_peers as peers
from common import print_table, write_json

from jules_cache import FeatureStore
from jules_cache.fingerprints import data
from jules_cache.synthetic import make_ticks, symbol_names

PIECE = 16 << 20


def exported_buffers(frame: pl.DataFrame) -> list[memoryview]:
    """Every Arrow buffer of the zero-copy export, cut to 16 MB pieces."""
    table = data.as_arrow(frame)
    pieces = []
    for column in table.columns:
        for chunk in column.chunks:
            for buffer in chunk.buffers():
                if buffer is None:
                    continue
                view = memoryview(buffer)
                pieces += [view[i : i + PIECE] for i in range(0, len(view), PIECE)]
    return pieces


def rank_remap(table: Any, column: str) -> Callable[[], None]:
    """The per-row rank lookup of a dictionary column, per leaf, as the digest does it."""
    ranks = np.arange(64, dtype="<u1")[::-1].copy()
    leaves = [
        data._values_np(piece.indices)
        for pieces in data._leaves(table.column(column))
        for piece in pieces
    ]

    def run() -> None:
        for raw in leaves:
            data._lookup(ranks, raw)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    categorical = make_ticks(symbol_names(64), args.rows)
    inputs = {
        "categorical": categorical,
        "string": categorical.with_columns(pl.col("symbol").cast(pl.String)),
    }
    pool = ThreadPoolExecutor(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        peers.write_features(Path(tmp) / "features")
        features = peers.import_features(Path(tmp) / "features")
        store = FeatureStore(Path(tmp) / "cache")
        config = {"window": 0}
        cases: dict[str, Callable[[], Any]] = {}
        sizes = {}
        for label, ticks in inputs.items():
            store.get_or_compute("all", ticks, config, features.symbol_summary)
            buffers = exported_buffers(ticks)
            sizes[label] = sum(len(b) for b in buffers) / 1e6
            cases[f"{label}: floor, xxh3 of the buffers, 1 thread"] = lambda b=buffers: [
                xxhash.xxh3_128(piece).digest() for piece in b
            ]
            cases[f"{label}: floor, xxh3 of the buffers, all threads"] = lambda b=buffers: list(
                pool.map(lambda piece: xxhash.xxh3_128(piece).digest(), b)
            )
            table = data.as_arrow(ticks)
            for name in ticks.columns:
                one = table.select([name])
                cases[f"{label}: digest of {name}, 1 thread"] = lambda one=one: (
                    data.fingerprint_table(one, threads=1)
                )
            cases[f"{label}: as_arrow (zero-copy export)"] = lambda t=ticks: data.as_arrow(t)
            cases[f"{label}: digest of the frame, all threads"] = lambda t=ticks: (
                data.fingerprint_table(data.as_arrow(t))
            )
            cases[f"{label}: request (data+config+code fingerprints)"] = lambda t=ticks: (
                store._request("all", t, config, features.symbol_summary, None, None, False)
            )
            cases[f"{label}: hit (get_or_compute)"] = lambda t=ticks: store.get_or_compute(
                "all", t, config, features.symbol_summary
            )
            cases[f"{label}: no cache (recompute)"] = lambda t=ticks: features.symbol_summary(
                t, config
            )
        cases["categorical: rank lookup of symbol alone (per leaf)"] = rank_remap(
            data.as_arrow(categorical), "symbol"
        )
        samples: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        for func in cases.values():
            func()
        for _ in range(args.rounds):
            for name, func in cases.items():
                started, started_cpu = time.perf_counter(), time.process_time()
                func()
                samples[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - started_cpu)
        store.close()
    medians = {name: statistics.median(values) * 1000 for name, values in samples.items()}
    cpu_medians = {name: statistics.median(values) * 1000 for name, values in cpu.items()}
    print_table(
        f"Hit on a {args.rows:,}-row Polars input, medians of {args.rounds} interleaved rounds "
        "(CPU: all threads of this process; steadier than wall time on a shared machine)",
        ["measure", "wall ms", "CPU ms"],
        [[name, round(value, 2), round(cpu_medians[name], 2)] for name, value in medians.items()],
    )
    ratios = {}
    for label in inputs:
        hit = medians[f"{label}: hit (get_or_compute)"]
        floor = f"{label}: floor, xxh3 of the buffers, all threads"
        ratios[label] = {
            "buffers_mb": sizes[label],
            "hit_vs_recompute": hit / medians[f"{label}: no cache (recompute)"],
            "hit_vs_floor_all_threads": hit / medians[floor],
            "hit_vs_floor_cpu": cpu_medians[f"{label}: hit (get_or_compute)"] / cpu_medians[floor],
        }
        print(
            f"{label}: {sizes[label]:.0f} MB of buffers; hit {hit:.1f} ms = "
            f"{ratios[label]['hit_vs_recompute']:.2f}x recomputing, "
            f"{ratios[label]['hit_vs_floor_all_threads']:.2f}x the all-threads xxh3 floor "
            f"(CPU time: {ratios[label]['hit_vs_floor_cpu']:.2f}x)"
        )
    print(f"load average {os.getloadavg()[0]:.1f}")
    write_json(
        "big_hit",
        {
            "rows": args.rows,
            "rounds": args.rounds,
            "medians_ms": medians,
            "cpu_medians_ms": cpu_medians,
            "ratios": ratios,
            "load_average": os.getloadavg(),
        },
    )


if __name__ == "__main__":
    main()
