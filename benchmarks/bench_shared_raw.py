"""Raw costs under a shared cache: S3 GET of result objects and the PostgreSQL catalog's calls.

    python benchmarks/bench_shared_raw.py [--quick]

Uses the services the environment names (``eval "$(scripts/services.sh start)"``), else starts
throwaway ones (PostgreSQL + SeaweedFS on 127.0.0.1) and stops them at the end.

Measures, interleaving the variants round by round so load from other processes hits them alike:
- GET of a 10k x 8 and a 1M-row result object (lz4 Parquet, as the store writes them): boto3
  (with and without its CRC32 check), pyarrow's S3FileSystem, and each decoded to Polars; this
  decides how ``S3ObjectStore.get`` reads (the issue's target: a shared hit <= 2x the raw GET);
- the conditional PUT of the 10k x 8 object;
- the catalog: publish transaction p50/p99 (target <= 25 ms p50), key lookup, advisory lock
  acquire + release, a 100-key counter flush, and the GC's rows snapshot at 100k entries.
Writes benchmarks/results/shared_raw.json.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "shared"))
import shared_services  # noqa: E402
from common import percentile, print_table, summary_ms, timed, write_json  # noqa: E402

from jules_cache.storage.catalog import entries, entries_snapshot  # noqa: E402
from jules_cache.storage.postgres_catalog import PostgresCatalog  # noqa: E402
from jules_cache.storage.s3_objects import S3ObjectStore  # noqa: E402


def result_frame(rows: int, seed: int = 1) -> pl.DataFrame:
    """The shape of bench_store.py's 10k x 8 result (ts, price, size, f1..f5) at ``rows``."""
    rng = np.random.default_rng(seed)
    price = rng.normal(100, 1, rows)
    return pl.DataFrame(
        {
            "ts": pl.datetime_range(
                pl.datetime(2024, 3, 1),
                pl.datetime(2024, 3, 1) + pl.duration(milliseconds=rows - 1),
                "1ms",
                eager=True,
            ),
            "price": price,
            "size": rng.integers(1, 1000, rows),
            **{f"f{k}": price * k for k in range(1, 6)},
        }
    )


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="lz4")
    return buffer.getvalue()


def interleaved(variants: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Wall seconds per call of each variant, one call of each per round (after a warm-up)."""
    for func in variants.values():
        func()
        func()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, func in variants.items():
            started = time.perf_counter()
            func()
            samples[name].append(time.perf_counter() - started)
    return samples


def bench_gets(store: S3ObjectStore, rounds: dict[str, int]) -> dict[str, Any]:
    import boto3
    import pyarrow.parquet as pq
    from botocore.config import Config

    unchecked = boto3.client(
        "s3",
        endpoint_url=store.endpoint_url,
        region_name=store.region,
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )
    fs = store.arrow_filesystem()
    results: dict[str, Any] = {}
    for label, rows in (("10k x 8", 10_000), ("1M x 8", 1_000_000)):
        data = parquet_bytes(result_frame(rows))
        name = f"objects/{rows}/{uuid.uuid4().hex}.parquet"
        store.put_if_absent(name, data)
        key, path = store.key_of(name), store.arrow_path(name)

        def boto3_get(key: str = key) -> bytes:
            return store.client.get_object(Bucket=store.bucket, Key=key)["Body"].read()

        def boto3_get_unchecked(key: str = key) -> bytes:
            return unchecked.get_object(Bucket=store.bucket, Key=key)["Body"].read()

        def pyarrow_get(path: str = path) -> bytes:
            with fs.open_input_file(path) as handle:
                return handle.readall()

        variants = {
            "boto3 get_object (CRC32 checked)": boto3_get,
            "boto3 get_object (no CRC32 check)": boto3_get_unchecked,
            "pyarrow S3FileSystem read": pyarrow_get,
            "S3ObjectStore.get": lambda name=name: store.get(name),
            "S3ObjectStore.get + pl.read_parquet": lambda name=name: pl.read_parquet(
                io.BytesIO(store.get(name) or b"")
            ),
            "pq.read_table on S3FileSystem -> Polars": lambda path=path: pl.from_arrow(
                pq.read_table(path, filesystem=fs)
            ),
        }
        samples = interleaved(variants, rounds[label])
        results[label] = {
            "object_bytes": len(data),
            **{variant: summary_ms(values) for variant, values in samples.items()},
        }
    return results


def bench_put(store: S3ObjectStore, repeat: int) -> dict[str, float]:
    data = parquet_bytes(result_frame(10_000))
    return summary_ms(timed(lambda: store.put_if_absent(f"puts/{uuid.uuid4().hex}", data), repeat))


def entry_row(key: str) -> dict[str, Any]:
    now = datetime.now(UTC).replace(tzinfo=None)
    return {
        "key": key,
        "feature": "bench",
        "symbol": f"S{int(key[:4], 16) % 16}",
        "path": f"objects/{key[:2]}/{key}.parquet",
        "key_schema": 3,
        "data_fingerprint": "d" * 32,
        "data_method": "frame",
        "config_fingerprint": "c" * 32,
        "config_json": "{}",
        "code_fingerprint": "f" * 32,
        "code_version": None,
        "result_schema": "{}",
        "rows": 10_000,
        "bytes": 600_000,
        "time_column": "ts",
        "min_time": now,
        "max_time": now,
        "compute_seconds": 2.0,
        "created_at": now,
        "last_accessed_at": now,
        "library_versions": "{}",
        "code_functions": "{}",
    }


def bench_catalog(dsn: str, publishes: int, repeat: int) -> dict[str, Any]:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    started = time.perf_counter()
    catalog = PostgresCatalog(dsn, schema=schema, root=f"s3://bench/{schema}")
    catalog.migrate()
    first_use = time.perf_counter() - started
    try:
        keys = [uuid.uuid4().hex for _ in range(publishes + 5)]
        rows = iter([entry_row(key) for key in keys])
        publish = timed(lambda: catalog.publish(next(rows)), publishes, warmup=5)
        lookup = timed(lambda: entries(catalog, "get_entry", {"key": keys[7]}), repeat)
        lock_key = iter(keys * 3)

        def lock_cycle() -> None:
            with catalog.key_lock(next(lock_key), timeout=5):
                pass

        lock = timed(lock_cycle, repeat)
        hits = {key: (1, datetime.now(UTC).replace(tzinfo=None)) for key in keys[:100]}
        calls = {key: ("bench", f"S{i % 16}", 1, 0) for i, key in enumerate(keys[:100])}
        flush = timed(lambda: catalog.flush_counts(hits=hits, misses=1, calls=calls), repeat // 4)
        fill = (
            "INSERT INTO entries SELECT md5(i::text), 'bench', 'S' || (i % 16), 'x', 3, 'd', "
            "'frame', 'c', '{}', 'f', NULL, '{}', 10, 1000, 'ts', now(), now(), 1.0, now(), "
            "now(), 0, '{}', '{}' FROM generate_series(1, 100000) AS i ON CONFLICT DO NOTHING"
        )
        catalog._run("fill", lambda connection: connection.execute(fill))
        snapshot = timed(lambda: entries_snapshot(catalog), 5, warmup=1)
        snapshot_rows = len(entries_snapshot(catalog))
    finally:
        catalog.close()
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")
    return {
        "first_use_connect_and_migrate_ms": first_use * 1000,
        "publish_transaction": {
            **summary_ms(publish),
            "p90_ms": percentile(publish, 90) * 1000,
            "mean_ms": statistics.fmean(publish) * 1000,
        },
        "key_lookup": summary_ms(lookup),
        "key_lock_acquire_release": summary_ms(lock),
        "flush_100_keys": summary_ms(flush),
        "entries_snapshot": {**summary_ms(snapshot), "rows": snapshot_rows},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    rounds = {"10k x 8": 15, "1M x 8": 5} if args.quick else {"10k x 8": 60, "1M x 8": 15}
    publishes, repeat = (100, 100) if args.quick else (500, 400)

    started_here = None
    dsn = os.environ.get(shared_services.PG_DSN_VAR)
    endpoint = os.environ.get(shared_services.S3_ENDPOINT_VAR)
    if not dsn or not endpoint:
        started_here = shared_services.start()
        os.environ.update(started_here.env())
        dsn, endpoint = started_here.pg_dsn, started_here.s3_endpoint
    bucket = os.environ.get(shared_services.S3_BUCKET_VAR, shared_services.BUCKET)
    store = S3ObjectStore(f"s3://{bucket}/bench-{uuid.uuid4().hex[:12]}", endpoint_url=endpoint)
    try:
        gets = bench_gets(store, rounds)
        put = bench_put(store, repeat // 4)
        catalog = bench_catalog(dsn, publishes, repeat)
    finally:
        store.delete(name for name, _, _ in store.list())
        if started_here is not None:
            shared_services.stop(started_here.state_dir)

    for label, figures in gets.items():
        print_table(
            f"S3 GET of a {label} result ({figures['object_bytes'] / 1e6:.2f} MB, lz4 Parquet)",
            ["variant", "p50 ms", "p99 ms", "n"],
            [
                [variant, v["p50_ms"], v["p99_ms"], v["n"]]
                for variant, v in figures.items()
                if isinstance(v, dict)
            ],
        )
    print_table(
        "S3 conditional PUT (If-None-Match: *) of the 10k x 8 object",
        ["p50 ms", "p99 ms", "n"],
        [[put["p50_ms"], put["p99_ms"], put["n"]]],
    )
    print_table(
        "PostgreSQL catalog (127.0.0.1, default fsync and synchronous_commit)",
        ["operation", "p50 ms", "p99 ms", "n"],
        [
            [name, v["p50_ms"], v["p99_ms"], v["n"]]
            for name, v in catalog.items()
            if isinstance(v, dict)
        ],
    )
    first_use = catalog["first_use_connect_and_migrate_ms"]
    print(f"\nfirst use of a catalog (connect + migrate a new schema): {first_use:.1f} ms")
    write_json("shared_raw", {"s3_get": gets, "s3_put_10k": put, "catalog": catalog})


if __name__ == "__main__":
    main()
