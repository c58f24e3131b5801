"""Benchmark the fingerprint layer on a 50M-row x 4-column tick table (~1.2 GB).

Run: ``python benchmarks/bench_fingerprint.py [--rows N]``. Prints GB/s per case and writes
``benchmarks/results/fingerprint.json``. Targets: >= 4 GB/s end to end with both
cores, >= 10 GB/s for the numeric columns alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from jules_cache.fingerprints.data import fingerprint_table
from jules_cache.fingerprints.files import hash_file_bytes

SYMBOLS = ["AAPL", "AMZN", "GOOG", "META", "MSFT", "NFLX", "NVDA", "TSLA"]


def tick_table(rows: int, seed: int = 0) -> pa.Table:
    """Build a seeded tick table: timestamp[ns], symbol (dictionary), price, size."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2024-01-02T09:30:00", "ns").astype(np.int64)
    ts = start + np.cumsum(rng.integers(1, 1_000_000, rows))
    symbol = pa.DictionaryArray.from_arrays(
        pa.array(rng.integers(0, len(SYMBOLS), rows).astype(np.uint32)), pa.array(SYMBOLS)
    )
    return pa.table(
        {
            "ts": pa.array(ts.astype("datetime64[ns]")),
            "symbol": symbol,
            "price": 100 + rng.standard_normal(rows).cumsum() * 0.01,
            "size": rng.integers(1, 1000, rows),
        }
    )


def median_seconds(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    table = tick_table(args.rows)
    numeric = table.select(["ts", "price", "size"])
    cases = {
        "full table, default threads": (table, None),
        "full table, threads=1": (table, 1),
        "numeric columns, default threads": (numeric, None),
        "numeric columns, threads=1": (numeric, 1),
    }
    results = []
    for name, (tbl, threads) in cases.items():
        secs = median_seconds(lambda t=tbl, n=threads: fingerprint_table(t, threads=n), args.runs)
        results.append({"case": name, "bytes": tbl.nbytes, "seconds": secs})

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "blob.bin"
        size = 1 << 30
        with open(path, "wb") as f:
            block = np.random.default_rng(1).bytes(64 << 20)
            for _ in range(size // len(block)):
                f.write(block)
        secs = median_seconds(lambda: hash_file_bytes(path), args.runs)
        results.append(
            {"case": "hash_file_bytes 1 GiB (page cache)", "bytes": size, "seconds": secs}
        )

    print(f"{'case':<40} {'MB':>8} {'ms':>8} {'GB/s':>7}")
    for r in results:
        r["gb_per_s"] = r["bytes"] / r["seconds"] / 1e9
        print(
            f"{r['case']:<40} {r['bytes'] / 1e6:>8.0f} {r['seconds'] * 1e3:>8.1f} "
            f"{r['gb_per_s']:>7.2f}"
        )
    out = Path(__file__).parent / "results" / "fingerprint.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"rows": args.rows, "runs": args.runs, "cpus": len(os.sched_getaffinity(0))}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
