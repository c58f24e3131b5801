"""GC benchmark: plan time and memory on a large cache; a real run under live trainers.

    python benchmarks/bench_gc.py [--entries 100000] [--plan-only]

Builds a cache of N entries / N small result files fast (one tiny Parquet file written N times,
a bulk INSERT of the manifest rows, one view refresh), half of them last accessed 60 days ago.
Then:

- plan: a dry run in a fresh spawned process; wall time and peak RSS of that process;
- real run: GC with the default 4-week retention (deletes N/2 entries and files) while 4 spawned
  trainer processes keep hitting and writing; their errors, warnings and slowest call, and the
  longest manifest lock hold of the GC.

Targets (at 100k): plan <= 10 s with bounded memory; longest lock hold <= 250 ms;
zero trainer errors.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import sys
import tempfile
import time
import uuid
import warnings
from datetime import timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_mb, percentile, print_table, write_json

from jules_cache import FeatureStore
from jules_cache.storage.manifest import utc_now

TRAINERS = 4
ONE_CONFIG = "xxh3_128:v2:" + "c0" * 16  # every entry's config fingerprint


def tiny_parquet() -> bytes:
    buffer = io.BytesIO()
    pl.DataFrame({"x": [1, 2, 3], "y": [0.5, 1.5, 2.5]}).write_parquet(buffer)
    return buffer.getvalue()


def build_cache(root: Path, entries: int) -> float:
    """N result files + N manifest rows, half last accessed 60 days ago. Returns seconds."""
    started = time.perf_counter()
    store = FeatureStore(root)
    payload = tiny_parquet()
    keys = [uuid.uuid4().hex for _ in range(entries)]
    for prefix in {key[:2] for key in keys}:
        (store._backend.layout.objects / prefix).mkdir(exist_ok=True)
    for key in keys:
        with open(store._backend.layout.result_path(key), "wb") as handle:
            handle.write(payload)
    now = utc_now()
    old = now - timedelta(days=60)
    rows = pa.table(
        {
            "key": keys,
            "path": [store._backend.layout.relative_result_path(k) for k in keys],
            "symbol": [f"SYM{i % 500}" for i in range(entries)],
            "accessed": [old if i % 2 == 0 else now for i in range(entries)],
        }
    )
    # One feature of one config over 500 symbols, as a real cache holds (a config per row would
    # make a SQL view per row: catalog.duckdb's build is per config).
    with store._backend.manifest.write() as con:
        con.register("bench_rows", rows)
        con.execute(
            f"""
            INSERT INTO entries (key, feature, symbol, path, key_schema, data_fingerprint,
                data_method, config_fingerprint, config_json, code_fingerprint, code_version,
                result_schema, rows, bytes, time_column, min_time, max_time, compute_seconds,
                created_at, last_accessed_at, hit_count, library_versions)
            SELECT key, 'bench.feature', symbol, path, 1, key, 'frame', '{ONE_CONFIG}', '{{}}',
                key, NULL,
                '{{"x": "Int64", "y": "Float64"}}', 3, {len(payload)}, NULL, NULL, NULL, 0.01,
                accessed, accessed, 0, '{{}}'
            FROM bench_rows
            """
        )
        con.unregister("bench_rows")
    store.refresh_views()  # the stored SQL view links every file, as publishes would have
    return time.perf_counter() - started


def _dry_run(root: str, queue) -> None:
    store = FeatureStore(root)
    started = time.perf_counter()
    report = store.gc(dry_run=True)
    seconds = time.perf_counter() - started
    peak_mb = peak_rss_mb()  # of this process since exec (not inherited like ru_maxrss)
    queue.put((seconds, report.plan_seconds, report.files, peak_mb, report.max_lock_hold_ms))


def _frame(i: int) -> pl.DataFrame:
    return pl.DataFrame({"price": [float(i + j) for j in range(300)], "size": list(range(300))})


def _feature(ticks: pl.LazyFrame, config: dict) -> pl.LazyFrame:
    return ticks.select(pl.col("price").sum().alias("total"), pl.len().alias("n"))


def _trainer(root: str, worker: int, ready, stop, queue) -> None:
    store = FeatureStore(root, hit_flush_seconds=1.0)
    calls, errors, slowest, latencies = 0, [], 0.0, []
    ready.set()
    with warnings.catch_warnings(record=True) as caught:  # list of WarningMessage
        warnings.simplefilter("always")
        while not stop.is_set():
            # Mostly hits on a few shared keys, every 4th call a new key (a publish).
            i = calls % 10 if calls % 4 else 1000 * (worker + 1) + calls
            started = time.perf_counter()
            try:
                frame = store.get_or_compute("AAPL", _frame(i), {"i": i}, _feature)
                assert frame["n"][0] == 300
            except Exception as exc:
                errors.append(repr(exc))
            elapsed = time.perf_counter() - started
            latencies.append(elapsed)
            slowest = max(slowest, elapsed)
            calls += 1
    store.close()
    queue.put((worker, calls, errors, [str(w.message) for w in caught], latencies))


def real_run(root: Path) -> dict:
    context = multiprocessing.get_context("spawn")
    stop, queue = context.Event(), context.Queue()
    readies = [context.Event() for _ in range(TRAINERS)]
    trainers = [
        context.Process(target=_trainer, args=(str(root), w, readies[w], stop, queue))
        for w in range(TRAINERS)
    ]
    for process in trainers:
        process.start()
    for ready in readies:
        ready.wait(60)
    time.sleep(1.0)  # let them warm up: their keys exist, hits flow
    store = FeatureStore(root)
    started = time.perf_counter()
    report = store.gc()
    seconds = time.perf_counter() - started
    time.sleep(0.5)
    stop.set()
    results = [queue.get(timeout=120) for _ in trainers]
    for process in trainers:
        process.join(60)
    latencies = [x for r in results for x in r[4]]
    return {
        "gc_seconds": seconds,
        "plan_seconds": report.plan_seconds,
        "deleted_files": report.files,
        "expired": report.total("expired").count,
        "skipped": report.skipped,
        "lock_holds": report.lock_holds,
        "max_lock_hold_ms": report.max_lock_hold_ms,
        "status": report.status,
        "trainer_calls": sum(r[1] for r in results),
        "trainer_errors": sum(len(r[2]) for r in results),
        "trainer_error_samples": [e for r in results for e in r[2]][:5],
        "trainer_warnings": sum(len(r[3]) for r in results),
        "trainer_warning_samples": [w for r in results for w in r[3]][:5],
        "trainer_call_p99_ms": percentile(latencies, 99) * 1000 if latencies else 0.0,
        "trainer_call_max_ms": max(latencies, default=0.0) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000, help="cache size (entries)")
    parser.add_argument(
        "--plan-only", action="store_true", help="the dry run alone (results/gc-plan.json)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gc-") as tmp:
        root = Path(tmp) / "cache"
        build_seconds = build_cache(root, args.entries)
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        process = context.Process(target=_dry_run, args=(str(root), queue))
        process.start()
        dry_seconds, plan_seconds, planned, peak_mb, dry_hold = queue.get(timeout=600)
        process.join()
        real = None if args.plan_only else real_run(root)
        remaining = len(list(root.glob("objects/*/*.parquet")))
    plan = {
        "entries": args.entries,
        "build_seconds": build_seconds,
        "dry_run_seconds": dry_seconds,
        "plan_seconds": plan_seconds,
        "planned_deletions": planned,
        "peak_rss_mb": peak_mb,
        "dry_run_max_lock_hold_ms": dry_hold,
    }
    print_table(
        f"GC plan on {args.entries:,} entries / files (target <= 10 s)",
        ["build s", "dry run s", "plan s", "planned", "peak RSS MB", "longest hold ms"],
        [[build_seconds, dry_seconds, plan_seconds, planned, peak_mb, dry_hold]],
    )
    if real is None:
        write_json("gc-plan", {"targets": {"plan_seconds": 10}, "plan": plan})
        return
    print_table(
        f"Real GC run under {TRAINERS} live trainers (targets: hold <= 250 ms, 0 errors)",
        ["gc s", "deleted", "holds", "longest hold ms", "calls", "errors", "warnings",
         "call p99 ms", "call max ms"],
        [[real["gc_seconds"], real["deleted_files"], real["lock_holds"],
          real["max_lock_hold_ms"], real["trainer_calls"], real["trainer_errors"],
          real["trainer_warnings"], real["trainer_call_p99_ms"], real["trainer_call_max_ms"]]],
    )  # fmt: skip
    if real["trainer_error_samples"] or real["trainer_warning_samples"]:
        print("samples:", real["trainer_error_samples"], real["trainer_warning_samples"])
    print(f"result files left: {remaining:,}")
    write_json(
        "gc",
        {
            "targets": {"plan_seconds": 10, "max_lock_hold_ms": 250, "trainer_errors": 0},
            "plan": plan,
            "real_run": real,
            "files_left": remaining,
        },
    )


if __name__ == "__main__":
    main()
