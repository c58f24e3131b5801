"""Core store benchmark: hit latency, publish overhead, and 8 processes sharing one root.

    python benchmarks/bench_store.py [--quick]

Targets: hit p50 <= 5 ms for a 10k x 8 result including the fingerprint of a 100k-row
input; publish overhead (describe + lock + attach + rename + insert + commit + detach) p50 <= 20
ms; 8 processes x 50 keys with zero errors.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, summary_ms, timed, write_json

from jules_cache import FeatureStore

INPUT_ROWS = 100_000
RESULT_ROWS = 10_000


def input_frame(seed: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "ts": pl.datetime_range(
                pl.datetime(2024, 3, 1),
                pl.datetime(2024, 3, 1) + pl.duration(milliseconds=INPUT_ROWS - 1),
                "1ms",
                eager=True,
            ),
            "price": rng.normal(100, 1, INPUT_ROWS),
            "size": rng.integers(1, 1000, INPUT_ROWS),
        }
    )


def ten_k_by_eight(ticks: pl.LazyFrame, config: dict) -> pl.LazyFrame:
    """A 10k-row x 8-column result."""
    return ticks.head(RESULT_ROWS).with_columns(
        (pl.col("price") * k).alias(f"f{k}") for k in range(1, 6)
    )


def bench_hits(root: Path, repeat: int) -> dict:
    store = FeatureStore(root)
    data = input_frame()
    store.get_or_compute("AAPL", data, {"k": 1}, ten_k_by_eight)
    samples = timed(lambda: store.fetch("AAPL", data, {"k": 1}, ten_k_by_eight), repeat)
    lazy = timed(lambda: store.fetch("AAPL", data, {"k": 1}, ten_k_by_eight, lazy=True), repeat)
    read_only = timed(
        lambda: pl.read_parquet(store.fetch("AAPL", data, {"k": 1}, ten_k_by_eight).path), repeat
    )
    store.close()
    return {
        "hit": summary_ms(samples),
        "hit_lazy": summary_ms(lazy),
        "fetch_plus_plain_read": summary_ms(read_only),
    }


def bench_publish(root: Path, puts: int) -> dict:
    store = FeatureStore(root)
    data = input_frame()
    publish_times: list[float] = []
    original = store._backend.publish

    def timed_publish(*args, **kwargs):
        started = time.perf_counter()
        original(*args, **kwargs)
        publish_times.append(time.perf_counter() - started)

    store._backend.publish = timed_publish  # type: ignore[method-assign]
    put_times = []
    for i in range(puts):
        started = time.perf_counter()
        store.fetch("AAPL", data, {"k": i}, ten_k_by_eight)
        put_times.append(time.perf_counter() - started)
    store.close()
    return {"publish": summary_ms(publish_times[3:]), "whole_put": summary_ms(put_times[3:])}


def _worker(root: str, worker: int, keys: int) -> tuple[int, int, list[float]]:
    store = FeatureStore(root)
    data = input_frame()
    errors, hits, latencies = 0, 0, []
    for i in range(keys):
        key = (i + worker * 7) % keys  # overlapping keys, different order per process
        started = time.perf_counter()
        try:
            result = store.fetch(f"S{key % 10}", data, {"k": key}, ten_k_by_eight)
            hits += result.hit
        except Exception:
            errors += 1
        latencies.append(time.perf_counter() - started)
    store.close()
    return errors, hits, latencies


def bench_processes(root: Path, processes: int, keys: int) -> dict:
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        pool.starmap(_worker, [(str(root / "warm"), w, 2) for w in range(processes)])  # warm up
        started = time.perf_counter()
        results = pool.starmap(_worker, [(str(root / "run"), w, keys) for w in range(processes)])
        wall = time.perf_counter() - started
    errors = sum(r[0] for r in results)
    hits = sum(r[1] for r in results)
    latencies = [x for r in results for x in r[2]]
    entries = FeatureStore(root / "run").stats().entries
    return {
        "processes": processes,
        "keys": keys,
        "calls": processes * keys,
        "errors": errors,
        "hits": hits,
        "entries": entries,
        "wall_s": wall,
        "calls_per_s": processes * keys / wall,
        "latency": summary_ms(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeat = 50 if args.quick else 300
    with tempfile.TemporaryDirectory(prefix="jules-bench-") as tmp:
        base = Path(tmp)
        hits = bench_hits(base / "hits", repeat)
        publish = bench_publish(base / "publish", 30 if args.quick else 100)
        procs = bench_processes(base / "procs", 8, 50)
    print_table(
        "Hit latency (10k x 8 result, 100k-row input fingerprinted each call)",
        ["call", "p50 ms", "p99 ms", "n"],
        [[name, s["p50_ms"], s["p99_ms"], s["n"]] for name, s in hits.items()],
    )
    print_table(
        "Put (miss) costs",
        ["stage", "p50 ms", "p99 ms", "n"],
        [[name, s["p50_ms"], s["p99_ms"], s["n"]] for name, s in publish.items()],
    )
    print_table(
        "8 spawned processes x 50 overlapping keys",
        ["calls", "errors", "entries", "wall s", "calls/s", "p50 ms", "p99 ms"],
        [
            [
                procs["calls"],
                procs["errors"],
                procs["entries"],
                procs["wall_s"],
                procs["calls_per_s"],
                procs["latency"]["p50_ms"],
                procs["latency"]["p99_ms"],
            ]
        ],
    )
    write_json("store", {"hits": hits, "publish": publish, "processes": procs})


if __name__ == "__main__":
    main()
