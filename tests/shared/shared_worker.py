"""A "host" of the shared-backend tests: a process with its own temp dir and working folder,
sharing nothing with the others but the s3:// root and the PostgreSQL catalog.

    python shared_worker.py <spec.json>

spec: root, catalog, schema (or manifest_rows: the engine over a DuckDB manifest), markers
(a folder where each compute appends its key), jobs ([[symbol, seed], ...]), sleep (seconds
each compute takes), started (a file touched when a compute starts), out (a JSON file of
results). Keys are pinned with ``version=`` so that every
host, and the test process, compute the same keys.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from jules_cache import FeatureStore

SPEC: dict = {}


def ticks(seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({"ts": np.arange(2000, dtype=np.int64), "price": rng.random(2000)})


def expected(seed: int) -> pl.DataFrame:
    """What the feature computes, the same way (lazily: eager float sums may differ in bits)."""
    return with_average(ticks(seed).lazy(), {"window": 5}).collect()


def with_average(frame: pl.LazyFrame, config: dict) -> pl.LazyFrame:
    return frame.with_columns(pl.col("price").rolling_mean(config["window"]).alias("ma"))


def moving_average(frame: pl.LazyFrame, config: dict) -> pl.LazyFrame:
    if SPEC.get("markers"):  # in a worker process: record the compute
        Path(SPEC["markers"], f"{os.getpid()}-{time.monotonic_ns()}").write_text(SPEC["current"])
    if SPEC.get("started"):
        Path(SPEC["started"]).touch()
    time.sleep(SPEC.get("sleep", 0.0))
    return with_average(frame, config)


def main() -> None:
    SPEC.update(json.loads(Path(sys.argv[1]).read_text()))
    if SPEC.get("manifest_rows"):  # the contract's engine-over-manifest pairing
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from helpers import engine_over_manifest

        with engine_over_manifest(Path(SPEC["manifest_rows"])):
            run()
    else:
        run()


def run() -> None:
    store = FeatureStore(
        SPEC["root"],
        catalog=SPEC["catalog"],
        catalog_schema=SPEC["schema"],
        lock_timeout=SPEC.get("lock_timeout", 60.0),
        strict=True,
    )
    results, wrong = [], 0
    for symbol, seed in SPEC["jobs"]:
        SPEC["current"] = f"{symbol}:{seed}"
        got = store.fetch(symbol, ticks(seed), {"window": 5}, moving_average, version="1")
        if not got.value.equals(expected(seed)):
            wrong += 1
        results.append({"symbol": symbol, "seed": seed, "hit": got.hit, "key": got.key})
    store.close()
    Path(SPEC["out"]).write_text(json.dumps({"results": results, "wrong": wrong}))


if __name__ == "__main__":
    main()
