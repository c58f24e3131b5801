"""What a large config costs on a hit, and how fast configs are hashed.

    python benchmarks/bench_config.py [--repeat 15] [--warmup 3] [--name config]

A config holding a 1M-element list made a *hit* take 8.7 s and grew the
manifest by ~11 MB per entry. Measured here, medians after warm-up:

- a hit (``store.fetch`` of a cached result, end to end) with a tiny config, with a 1M-element
  list of floats and with an 8 MB float64 NumPy array (goal: < 50 ms each);
- ``canonical_config`` alone on the same configs, and the hashing throughput (MB/s of the
  values' 8-byte payload) of a 1M-float list, a 1M-int list and 8 MB / 80 MB arrays;
- the ``config_json`` bytes the manifest stores for each entry.

Writes benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, summary_ms, timed, write_json

from jules_cache import FeatureStore
from jules_cache.fingerprints.config import canonical_config

ITEMS = 1_000_000


def feature(ticks: pl.LazyFrame, config: Any) -> pl.LazyFrame:
    return ticks.head(100)


def configs() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    return {
        "tiny": {"freq": "1m", "window": 20},
        "1M-float list": {"freq": "1m", "weights": rng.random(ITEMS).tolist()},
        "8 MB ndarray": {"freq": "1m", "weights": rng.random(ITEMS)},
    }


def throughput(repeat: int, warmup: int) -> list[list[Any]]:
    rng = np.random.default_rng(8)
    cases = {
        "list of 1M floats": rng.random(ITEMS).tolist(),
        "list of 1M ints": rng.integers(0, 2**40, ITEMS).tolist(),
        "ndarray 8 MB": rng.random(ITEMS),
        "ndarray 80 MB": rng.random(10 * ITEMS),
    }
    rows = []
    for label, value in cases.items():
        payload = (value.nbytes if isinstance(value, np.ndarray) else 8 * len(value)) / 1e6
        samples = timed(lambda v=value: canonical_config(v), repeat, warmup)
        median = statistics.median(samples)
        rows.append([label, round(payload, 1), median * 1000, payload / median])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--name", default="config")
    args = parser.parse_args()

    ticks = pl.DataFrame({"ts": range(10_000), "price": [1.0] * 10_000})
    hits: list[list[Any]] = []
    document: dict[str, Any] = {"hit": {}, "canonical_config": {}, "config_json_bytes": {}}
    with tempfile.TemporaryDirectory() as tmp, FeatureStore(Path(tmp) / "cache") as store:
        for label, config in configs().items():
            first = store.fetch("AAPL", ticks, config, feature)
            assert not first.hit
            assert store.fetch("AAPL", ticks, config, feature).hit

            def hit(c: Any = config) -> None:
                assert store.fetch("AAPL", ticks, c, feature).hit

            hit_ms = summary_ms(timed(hit, args.repeat, args.warmup))
            canon = summary_ms(timed(lambda c=config: canonical_config(c), args.repeat, 1))
            entry = store.entry(first.key)
            assert entry is not None
            stored = len(entry.config_json.encode())
            document["hit"][label] = hit_ms
            document["canonical_config"][label] = canon
            document["config_json_bytes"][label] = stored
            hits.append([label, hit_ms["p50_ms"], hit_ms["p99_ms"], canon["p50_ms"], stored])
    print_table(
        f"hit with a large config (medians of {args.repeat} after {args.warmup} warm-up)",
        ["config", "hit p50 ms", "hit p99 ms", "canonical_config p50 ms", "config_json bytes"],
        hits,
    )
    rates = throughput(args.repeat, args.warmup)
    print_table(
        "config hashing throughput (canonical_config, medians)",
        ["value", "payload MB", "p50 ms", "MB/s"],
        rates,
    )
    document["throughput"] = {
        label: {"payload_mb": mb, "p50_ms": ms, "mb_per_s": rate} for label, mb, ms, rate in rates
    }
    document["args"] = vars(args)
    # The machine is shared: the load says how much of a median is waiting for a core.
    document["load_average_1m_5m_15m"] = os.getloadavg()
    print(f"\nload average (1, 5, 15 min): {os.getloadavg()}")
    write_json(args.name, document)


if __name__ == "__main__":
    main()
