"""The earlier system's published fingerprint table, side by side with ours, in one run.

    python benchmarks/bench_vs_legacy.py [--file-gb 10]

The earlier system claimed: full hash 1.2 s (100 MB) / 15 s (1 GB) / 180 s (10 GB), "footer
hash" (last 1000 rows + shape) 0.1 s, memory 100 MB -> 1 MB. Its footer hash served stale
features: a change in row 0 kept the same key. Each case here runs in a fresh subprocess so its
peak RSS is its own; times are medians of 3 after a warm-up (file cases: first call = memo miss,
hashing every byte; repeat call = a new process finding the digest in the manifest memo).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_mb, print_table, reset_peak_rss, timed, write_json

LEGACY_CLAIMS = {"100 MB": 1.2, "1 GB": 15.0, "10 GB file": 180.0}


def frame_of(megabytes: int) -> pl.DataFrame:
    """A tick-like frame of about ``megabytes`` MB: ts, price, size (8 bytes each)."""
    rows = megabytes * 1024 * 1024 // 24
    rng = np.random.default_rng(0)
    return pl.DataFrame(
        {
            "ts": np.arange(rows, dtype=np.int64),
            "price": rng.normal(100, 1, rows),
            "size": rng.integers(1, 1000, rows),
        }
    )


def legacy_footer_hash(frame: pl.DataFrame) -> str:
    """What the earlier system did above its threshold: last 1000 rows + shape."""
    tail = frame.tail(1000)
    return hashlib.md5(f"{frame.shape}{tail.rows()}".encode()).hexdigest()


def _median(func) -> float:
    return statistics.median(timed(func, repeat=3, warmup=1))


def case_frame(megabytes: int) -> dict:
    from jules_cache.fingerprints.data import fingerprint_table

    frame = frame_of(megabytes)
    table = frame.to_arrow()
    baseline = reset_peak_rss()
    ours = _median(lambda: fingerprint_table(table))
    peak = peak_rss_mb() - baseline
    legacy = _median(lambda: legacy_footer_hash(frame))
    changed = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(-1.0).otherwise(pl.col("price")).alias("price")
    )
    return {
        "ours_s": ours,
        "legacy_footer_s": legacy,
        "ours_extra_peak_mb": peak,
        "ours_detects_row0_change": fingerprint_table(changed.to_arrow())
        != fingerprint_table(table),
        "legacy_detects_row0_change": legacy_footer_hash(changed) != legacy_footer_hash(frame),
    }


def case_file(path: str, root: str) -> dict:
    from jules_cache import FeatureStore
    from jules_cache.fingerprints.inputs import prepare_data

    store = FeatureStore(root)
    baseline = reset_peak_rss()
    started = time.perf_counter()
    prepare_data(path, mode="content", threads=None, memo=store._backend.digest_memo())
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "extra_peak_mb": peak_rss_mb() - baseline}


def write_big_parquet(path: Path, gigabytes: float) -> None:
    """Incompressible float64 row groups until the file reaches ``gigabytes``."""
    rng = np.random.default_rng(1)
    rows = 8 * 1024 * 1024
    schema = pa.schema([("price", pa.float64()), ("size", pa.int64())])
    with pq.ParquetWriter(path, schema, compression="none") as writer:
        while path.stat().st_size < gigabytes * 1024**3:
            writer.write_table(
                pa.table(
                    {"price": rng.random(rows), "size": rng.integers(0, 2**62, rows)}, schema=schema
                )
            )


def run_case(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--case", *args], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file-gb", type=float, default=10.0)
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        kind, *rest = args.case
        result = case_frame(int(rest[0])) if kind == "frame" else case_file(*rest)
        print(json.dumps(result))
        return
    rows, document = [], {}
    for label, megabytes in (("100 MB", 100), ("1 GB", 1024)):
        result = run_case("frame", str(megabytes))
        document[label] = result
        rows.append(
            [
                label,
                LEGACY_CLAIMS[label] * 1000,
                result["legacy_footer_s"] * 1000,
                result["legacy_detects_row0_change"],
                result["ours_s"] * 1000,
                "-",
                result["ours_extra_peak_mb"],
                result["ours_detects_row0_change"],
            ]
        )
    with tempfile.TemporaryDirectory(prefix="jules-legacy-", dir="/var/tmp") as tmp:
        big = Path(tmp) / "ticks.parquet"
        write_big_parquet(big, args.file_gb)
        size_gb = big.stat().st_size / 1024**3
        root = str(Path(tmp) / "cache")
        first = run_case("file", str(big), root)
        repeat = run_case("file", str(big), root)
        label = f"{size_gb:.1f} GB file"
        document["file"] = {"size_gb": size_gb, "first": first, "repeat": repeat}
        rows.append(
            [
                label,
                LEGACY_CLAIMS["10 GB file"] * 1000,
                "-",
                False,
                first["seconds"] * 1000,
                repeat["seconds"] * 1000,
                max(first["extra_peak_mb"], repeat["extra_peak_mb"]),
                True,
            ]
        )
    print_table(
        "Fingerprint: the earlier system's claims vs jules_cache, measured in one run (ms)",
        [
            "input",
            "legacy full (claimed)",
            "legacy footer",
            "legacy sees row-0 edit",
            "ours first",
            "ours repeat",
            "ours extra peak MB",
            "ours sees row-0 edit",
        ],
        rows,
    )
    write_json("vs_legacy", document)


if __name__ == "__main__":
    main()
