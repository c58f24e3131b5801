"""What keying a Parquet path by its decoded content costs: first time, peak memory, repeat.

    python benchmarks/bench_file_keys.py [--rows 200000 10000000] [--runs 5]

A path is keyed exactly as the same table passed as a frame: the file is
decoded by Polars in streaming batches and hashed leaf by leaf (``hash_parquet_content``), then
the digest is memoised by the file's stat. For a tick file of each size (ts, symbol as String,
price, size; written by Polars, zstd, in page cache), each measure runs in fresh processes
(medians over ``--runs``):

- first-time keying: ``prepare_data(path)`` with an empty memo: wall time, and the peak RSS it
  adds over the process after imports (``VmHWM`` reset through ``/proc/self/clear_refs``);
- for scale, in the same kind of process: ``pl.read_parquet(path)`` alone (the whole table in
  memory) and the digest of that frame; the raw-bytes hash the previous scheme used;
- repeat: the same call again in the process (in-memory memo), and in a new process whose only
  memo is the manifest of a store that keyed the file before (after the store's first manifest
  read, which any operation of a new process pays once; shown apart).

Writes benchmarks/results/file_keys.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_json

from jules_cache.synthetic import make_ticks, symbol_names

# Runs in a fresh interpreter: prints one JSON object of seconds and MB.
CHILD = r"""
import json, sys, time
sys.path.insert(0, {bench!r})
import polars as pl
from common import peak_rss_mb, reset_peak_rss
from jules_cache import FeatureStore
from jules_cache.fingerprints.data import as_arrow, fingerprint_table
from jules_cache.fingerprints.files import hash_file_bytes
from jules_cache.fingerprints.inputs import prepare_data
from jules_cache.storage.file_digests import FileDigestMemo

path, case, root = {path!r}, {case!r}, {root!r}
out = {{}}
if case == "first":
    memo = FileDigestMemo(None)
    base = reset_peak_rss()
    started = time.perf_counter()
    key = prepare_data(path, mode="content", threads=None, memo=memo).fingerprint
    out["seconds"] = time.perf_counter() - started
    out["peak_extra_mb"] = peak_rss_mb() - base
    repeats = []
    for _ in range(20):
        started = time.perf_counter()
        assert prepare_data(path, mode="content", threads=None, memo=memo).fingerprint == key
        repeats.append(time.perf_counter() - started)
    out["repeat_in_process_seconds"] = sorted(repeats)[len(repeats) // 2]
elif case == "read":
    base = reset_peak_rss()
    started = time.perf_counter()
    frame = pl.read_parquet(path)
    out["seconds"] = time.perf_counter() - started
    out["peak_extra_mb"] = peak_rss_mb() - base
    started = time.perf_counter()
    fingerprint_table(as_arrow(frame))
    out["digest_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    hash_file_bytes(path)
    out["file_bytes_seconds"] = time.perf_counter() - started
elif case == "manifest":
    started = time.perf_counter()
    with FeatureStore(root) as store:
        store.entries()  # the process's first manifest read (DuckDB start-up), paid once
        out["first_manifest_read_seconds"] = time.perf_counter() - started
        memo = store._backend.digest_memo()
        started = time.perf_counter()
        prepare_data(path, mode="content", threads=None, memo=memo)
        out["seconds"] = time.perf_counter() - started
print(json.dumps(out))
"""


def child(path: Path, case: str, root: Path) -> dict[str, float]:
    code = CHILD.format(
        bench=str(Path(__file__).resolve().parent), path=str(path), case=case, root=str(root)
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def median(runs: list[dict[str, float]], field: str) -> float:
    return statistics.median(run[field] for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 10_000_000])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results = {}
    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            path = Path(tmp) / f"ticks_{rows}.parquet"
            ticks = make_ticks(symbol_names(64), rows).with_columns(
                pl.col("symbol").cast(pl.String)
            )
            ticks.write_parquet(path)
            in_memory_mb = ticks.estimated_size() / 1e6
            del ticks
            root = Path(tmp) / f"cache_{rows}"
            child(path, "manifest", root)  # keys the file once: the manifest memo is filled
            first = [child(path, "first", root) for _ in range(args.runs)]
            read = [child(path, "read", root) for _ in range(args.runs)]
            manifest = [child(path, "manifest", root) for _ in range(args.runs)]
            result = {
                "file_mb": path.stat().st_size / 1e6,
                "decoded_mb": in_memory_mb,
                "first_key_ms": median(first, "seconds") * 1000,
                "first_key_peak_extra_mb": median(first, "peak_extra_mb"),
                "read_parquet_ms": median(read, "seconds") * 1000,
                "read_parquet_peak_extra_mb": median(read, "peak_extra_mb"),
                "digest_of_read_frame_ms": median(read, "digest_seconds") * 1000,
                "raw_bytes_hash_ms": median(read, "file_bytes_seconds") * 1000,
                "repeat_in_process_ms": median(first, "repeat_in_process_seconds") * 1000,
                "repeat_new_process_manifest_ms": median(manifest, "seconds") * 1000,
                "(new process: store open + first manifest read)": median(
                    manifest, "first_manifest_read_seconds"
                )
                * 1000,
            }
            results[str(rows)] = result
            rows_out += [
                [f"{rows:,} ticks: {name}", round(value, 2)] for name, value in result.items()
            ]
    print_table(
        f"Keying a Parquet path by decoded content, medians of {args.runs} fresh processes",
        ["measure", "value"],
        rows_out,
    )
    print(f"load average {os.getloadavg()[0]:.1f}")
    write_json("file_keys", {"runs": args.runs, "results": results, "load": os.getloadavg()})


if __name__ == "__main__":
    main()
