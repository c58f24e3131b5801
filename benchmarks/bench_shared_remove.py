"""What final removal and non-waiting count flushes cost on a shared root.

    eval "$(scripts/services.sh start)" && python benchmarks/bench_shared_remove.py [--quick]

Needs the services the environment names (JULES_CACHE_TEST_PG_DSN, AWS_ENDPOINT_URL, ...).
Measures, on one store:
- ``remove(key=...)`` of one entry (its object deleted inside the transaction deleting its
  row, under the key's advisory lock);
- a hit whose count flush is due on every call (``hit_flush_seconds=0``: the flush that gives
  up at once when the catalog is busy) against a hit that never flushes.
Writes benchmarks/results/shared_remove.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import print_table, summary_ms, write_json  # noqa: E402

import jules_cache  # noqa: E402
from jules_cache import FeatureStore  # noqa: E402


def ticks(seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({"ts": np.arange(2000, dtype=np.int64), "price": rng.random(2000)})


def moving_average(frame: pl.LazyFrame, config: dict) -> pl.LazyFrame:
    return frame.with_columns(pl.col("price").rolling_mean(config["window"]).alias("ma"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    dsn = os.environ.get("JULES_CACHE_TEST_PG_DSN")
    bucket = os.environ.get("JULES_CACHE_TEST_S3_BUCKET")
    if not dsn or not bucket:
        sys.exit('start the services first: eval "$(scripts/services.sh start)"')
    entries = 30 if args.quick else 120
    hits = 100 if args.quick else 400
    tag = uuid.uuid4().hex[:12]
    root, schema = f"s3://{bucket}/bench-remove-{tag}", f"bench_remove_{tag}"
    options = {"catalog": dsn, "catalog_schema": schema}

    with FeatureStore(root, hit_flush_seconds=3600, **options) as store:
        keys = [
            store.fetch("A", ticks(seed), {"window": 5}, moving_average, version="1").key
            for seed in range(entries + 3)
        ]
        for key in keys[:3]:  # warm-up
            store.remove(key=key)
        removals = []
        for key in keys[3:]:
            started = time.perf_counter()
            store.remove(key=key)
            removals.append(time.perf_counter() - started)

    samples: dict[str, list[float]] = {"hit, flush due every call": [], "hit, no flush": []}
    with (
        FeatureStore(root, hit_flush_seconds=0, **options) as flushing,
        FeatureStore(root, hit_flush_seconds=3600, **options) as quiet,
    ):
        flushing.fetch("A", ticks(0), {"window": 5}, moving_average, version="1")
        variants = {"hit, flush due every call": flushing, "hit, no flush": quiet}
        for store in variants.values():  # warm-up
            for _ in range(5):
                store.fetch("A", ticks(0), {"window": 5}, moving_average, version="1")
        for _ in range(hits):  # interleaved, so load from other processes hits both alike
            for name, store in variants.items():
                started = time.perf_counter()
                assert store.fetch("A", ticks(0), {"window": 5}, moving_average, version="1").hit
                samples[name].append(time.perf_counter() - started)
        flushing.remove(all=True)

    _drop_schema(dsn, schema)
    rows = [["remove(key=...), one entry", len(removals), *_cells(removals)]]
    rows += [[name, len(values), *_cells(values)] for name, values in samples.items()]
    print(f"jules_cache from {Path(jules_cache.__file__).parent}")
    print_table("shared root (ms)", ["operation", "n", "p50", "p90", "max"], rows)
    write_json(
        "shared_remove",
        {
            "remove_one_ms": summary_ms(removals),
            **{name: summary_ms(values) for name, values in samples.items()},
        },
    )


def _cells(values: list[float]) -> list[float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return [
        round(statistics.median(values) * 1000, 2),
        round(p90 * 1000, 2),
        round(max(values) * 1000, 2),
    ]


def _drop_schema(dsn: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


if __name__ == "__main__":
    main()
